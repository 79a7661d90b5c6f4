"""The blocks the lab can start and lift on a running lab, by name (the DESIGN's censorship table).

Each scenario's `apply` adds its own nft table, middlebox and resolver policy fragments, a throttle,
or stops the server; `Lab.lift` undoes all of those generically (delete the table, drop the policy
fragments, remove the throttle, clear the penalty box) and then runs the scenario's own `lift`.
Only the censored region is touched; control clients cross the router on an interface no rule names.

`expect` says, per kind of route from the censored region, what the censor does to it and so which
diagnosis class a client should reach: it is the lab's claim, which tests/test_lab.py checks with
plain sockets and the diagnosis tests can reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dari.lab import censor as nft
from dari.lab.topology import CENSORED_IF, SERVICE_NAMES

if TYPE_CHECKING:
    from dari.lab.lab import Lab

# The service's ports in the lab: plain HTTP (ws, long-poll, REST), the plain frame stream, TLS
# stream and HTTPS on the server's TLS front.
HTTP_PORT, STREAM_PORT, TLS_PORT, HTTPS_PORT = 80, 7000, 443, 8443
FEATURE_HOSTS = ["friends.dari.test", "story.dari.test", "pc.dari.test"]
FEATURE_PATHS = ["/api/v1/friend.add", "/api/v1/friend.request", "/api/v1/account.signup", "/api/v1/story."]


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    apply: Callable[[Lab, dict[str, Any]], None]
    lift: Callable[[Lab], None] | None = None
    expect: dict[str, str] = field(default_factory=dict)   # route kind -> diagnosis class
    params: dict[str, Any] = field(default_factory=dict)   # defaults, overridable in Lab.apply(**params)


def _line_2014(lab: Lab, p: dict[str, Any]) -> None:
    names = list(SERVICE_NAMES)
    # The ISP resolver lies about every service name, and HTTP requests naming them are reset
    # wherever they go (Citizen Lab's LINE findings: DNS tampering plus HTTP request filtering).
    lab.set_policy("line-2014", resolver={"poison": {"names": names, "sources": [lab.addresses.censored_net],
                                                      "action": "answer", "answer": lab.addresses.bogus}},
                   middlebox={"http": {"hosts": names, "paths": [], "action": p["http_action"]}})
    lab.censor.add_table("line-2014", nft.intercept_rules(None, [HTTP_PORT]))


def _kakao_2014(lab: Lab, p: dict[str, Any]) -> None:
    # Chat is spared; feature endpoints are cut by Host (their own domains) and by REST path, over
    # plain HTTP and, by SNI, over TLS. No penalty box: the chat host must stay reachable.
    lab.set_policy("kakao-2014", middlebox={
        "http": {"hosts": FEATURE_HOSTS, "paths": FEATURE_PATHS, "action": p["http_action"]},
        "sni": {"names": FEATURE_HOSTS, "penalty_s": 0}})
    lab.censor.add_table("kakao-2014", nft.intercept_rules(None, [HTTP_PORT, TLS_PORT, HTTPS_PORT]))


def _dns_poison(lab: Lab, p: dict[str, Any]) -> None:
    # On-path injection: queries to any resolver get a forged answer first, the real one after.
    lab.set_policy("dns-poison",
                   middlebox={"dns_inject": {"names": list(SERVICE_NAMES), "answer": lab.addresses.bogus}})
    lab.censor.add_table("dns-poison", nft.dns_intercept_rules())


def _sni_filter(lab: Lab, p: dict[str, Any]) -> None:
    lab.set_policy("sni-filter", middlebox={"sni": {"names": ["dari.test"], "penalty_s": p["penalty_s"]}})
    lab.censor.add_table("sni-filter", nft.intercept_rules(None, [TLS_PORT, HTTPS_PORT]))


def _ip_blackhole(lab: Lab, p: dict[str, Any]) -> None:
    ips = nft.ip_set(lab.addresses.server_ips)
    lab.censor.add_table("ip-blackhole", nft.raw_rules(f'iifname "{CENSORED_IF}" ip daddr {ips} drop'))


def _ip_reset(lab: Lab, p: dict[str, Any]) -> None:
    ips = nft.ip_set(lab.addresses.server_ips)
    lab.censor.add_table("ip-reset", nft.raw_rules(
        f'iifname "{CENSORED_IF}" ip daddr {ips} meta l4proto tcp reject with tcp reset',
        f'iifname "{CENSORED_IF}" ip daddr {ips} drop'))


def _fingerprint(lab: Lab, p: dict[str, Any]) -> None:
    # DPI looks at every TCP flow from the region, whatever its address or port.
    lab.set_policy("fingerprint", middlebox={"fingerprint": {"delay_s": p["delay_s"]}})
    lab.censor.add_table("fingerprint", nft.intercept_rules(None, None))


def _throttle(lab: Lab, p: dict[str, Any]) -> None:
    lab.censor.throttle(p["rate"])


def _server_down(lab: Lab, p: dict[str, Any]) -> None:
    lab.stop_server()


def _server_up(lab: Lab) -> None:
    lab.start_server()


def _shutdown(lab: Lab, p: dict[str, Any]) -> None:
    lab.censor.add_table("shutdown", nft.raw_rules(f'iifname "{CENSORED_IF}" drop') + f"""
  chain forward {{ type filter hook forward priority filter; policy accept;
    oifname "{CENSORED_IF}" drop
  }}""")


def _udp_block(lab: Lab, p: dict[str, Any]) -> None:
    # Networks that pass only TCP (many offices, some censors; QUIC and WebRTC die with it). DNS to
    # the lab's resolver still works, as it does on such networks.
    lab.censor.add_table("udp-block", nft.raw_rules(f'iifname "{CENSORED_IF}" udp dport != 53 drop') + f"""
  chain forward {{ type filter hook forward priority filter; policy accept;
    oifname "{CENSORED_IF}" udp sport != 53 drop
  }}""")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("line-2014", "DNS tampering and HTTP request filtering of all the service's names",
             _line_2014, expect={"dns": "dns-poison", "http": "http-filter", "pinned-tls": "ok", "relay": "ok"},
             params={"http_action": "reset"}),
    Scenario("kakao-2014", "chat spared; friend-adding, sign-up, story and PC-client endpoints filtered",
             _kakao_2014, expect={"chat": "ok", "rest:friend.add": "feature-block", "feature-hosts": "feature-block"},
             params={"http_action": "page"}),
    Scenario("dns-poison", "forged DNS answers for the service's names, injected ahead of the real ones",
             _dns_poison, expect={"dns": "dns-poison", "pinned-tls": "ok", "relay": "ok"}),
    Scenario("sni-filter", "TLS reset after a ClientHello naming the service, then a penalty box",
             _sni_filter, expect={"tls-with-name": "sni-filter", "relay": "ok", "http": "ok"},
             params={"penalty_s": 5.0}),
    Scenario("ip-blackhole", "every packet to the server's addresses dropped",
             _ip_blackhole, expect={"direct": "ip-blackhole", "relay": "ok"}),
    Scenario("ip-reset", "every TCP connection to the server's addresses reset",
             _ip_reset, expect={"direct": "tcp-reset", "relay": "ok"}),
    Scenario("fingerprint", "streams that look like dari's frames reset shortly after they start",
             _fingerprint, expect={"plain-stream": "dpi-reset", "tls-stream": "ok", "relay": "ok"},
             params={"delay_s": 0.3}),
    Scenario("throttle", "bandwidth between the region and the server cut to a trickle",
             _throttle, expect={"direct": "throttled", "relay": "ok"}, params={"rate": "20kbit"}),
    Scenario("server-down", "the server process stopped: failing for everyone, not a block",
             _server_down, _server_up, expect={"direct": "server-down", "relay": "server-down"}),
    Scenario("shutdown", "everything from the censored region dropped",
             _shutdown, expect={"direct": "shutdown", "relay": "shutdown"}),
    Scenario("udp-block", "every UDP packet but DNS dropped: calls must reach TURN over TCP or TLS",
             _udp_block, expect={"direct": "ok", "call-media-udp": "blocked", "call-turn-tcp": "ok"}),
]}
