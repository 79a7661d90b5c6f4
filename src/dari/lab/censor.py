"""The censor's kernel half: nftables tables and tc qdiscs in the router namespace.

One base table (`dari_lab`) is there for the lab's whole life: the penalty-box set and its reset
rule, and the rule that hands the middlebox's own connections their return packets. Every applied
scenario gets a table of its own (`dari_sc_<name>`), so lifting a block is deleting that table and
two blocks never edit each other's rules. A drop or reject in any table is final; an accept only
ends that table's chain, so tables compose as "blocked if any block says so".
"""

from __future__ import annotations

import json

from dari.lab import netns
from dari.lab.middlebox import BASE_TABLE
from dari.lab.topology import CENSORED_IF, CENSORED_NET, SERVER_IF, SERVER_NET

MIDDLEBOX_TCP_PORT = 15001
MIDDLEBOX_DNS_PORT = 15053


def base_table() -> str:
    return f"""
table ip {BASE_TABLE} {{
  set penalty {{ type ipv4_addr . ipv4_addr; flags timeout; }}
  chain raw {{ type filter hook prerouting priority raw; policy accept;
    iifname "{CENSORED_IF}" meta l4proto tcp ip saddr . ip daddr @penalty reject with tcp reset
  }}
  chain divert {{ type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
  }}
}}
"""


def table_name(scenario: str) -> str:
    return "dari_sc_" + scenario.replace("-", "_")


def ip_set(addrs: list[str]) -> str:
    return "{ " + ", ".join(addrs) + " }"


def intercept_rules(daddrs: list[str] | None = None, ports: list[int] | None = None) -> str:
    """Chain body sending the censored side's TCP (to these addresses and ports; None = all) through
    the middlebox. Priority just after the base table's divert, which must see return packets first."""
    match = f"ip daddr {ip_set(daddrs)} " if daddrs else ""
    match += f"tcp dport {{ {', '.join(map(str, ports))} }}" if ports else "meta l4proto tcp"
    return f"""
  chain intercept {{ type filter hook prerouting priority mangle + 1; policy accept;
    iifname "{CENSORED_IF}" {match} tproxy to :{MIDDLEBOX_TCP_PORT} meta mark set 1 accept
  }}"""


def dns_intercept_rules() -> str:
    return f"""
  chain dns {{ type filter hook prerouting priority mangle + 1; policy accept;
    iifname "{CENSORED_IF}" udp dport 53 tproxy to :{MIDDLEBOX_DNS_PORT} meta mark set 1 accept
  }}"""


def raw_rules(*rules: str) -> str:
    """Rules evaluated before anything else (before the middlebox sees the packet)."""
    body = "\n".join(f"    {r}" for r in rules)
    return f"""
  chain raw {{ type filter hook prerouting priority raw; policy accept;
{body}
  }}"""


class Censor:
    def __init__(self, ns: str, censored_ifs: list[str] | None = None) -> None:
        self.ns = ns
        self.censored_ifs = censored_ifs or []
        self.tables: set[str] = set()
        self.throttled = False

    def install_base(self) -> None:
        netns.nft(self.ns, base_table())

    def add_table(self, scenario: str, chains: str) -> None:
        name = table_name(scenario)
        self.remove_table(scenario)
        netns.nft(self.ns, f"table ip {name} {{{chains}\n}}\n")
        self.tables.add(name)

    def remove_table(self, scenario: str) -> None:
        name = table_name(scenario)
        if name in self.tables:
            netns.nft(self.ns, f"delete table ip {name}\n", check=False)
            self.tables.discard(name)

    def clear_penalties(self) -> None:
        netns.nft(self.ns, f"flush set ip {BASE_TABLE} penalty\n", check=False)

    def penalties(self) -> list[tuple[str, str]]:
        out = netns.sh(["ip", "netns", "exec", self.ns, "nft", "-j", "list", "set", "ip", BASE_TABLE, "penalty"])
        pairs = []
        for item in json.loads(out).get("nftables", []):
            for elem in item.get("set", {}).get("elem", []):
                concat = elem.get("elem", {}).get("val", {}).get("concat") or elem.get("concat")
                if concat:
                    pairs.append((str(concat[0]), str(concat[1])))
        return pairs

    def throttle(self, rate: str) -> None:
        """Cut bandwidth between the censored side and the server's network to `rate`, both ways:
        htb on the router's egress toward the censored clients (downloads, by source = server net)
        and toward the server (uploads, by source = censored net). Everything else is unclassified
        and, with no default class, leaves unshaped."""
        for dev, src in [*((d, SERVER_NET) for d in self.censored_ifs), (SERVER_IF, CENSORED_NET)]:
            netns.tc(self.ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb")
            netns.tc(self.ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                     "rate", rate, "ceil", rate, "quantum", "1514")
            netns.tc(self.ns, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                     "match", "ip", "src", src, "flowid", "1:10")
        self.throttled = True

    def unthrottle(self) -> None:
        for dev in (*self.censored_ifs, SERVER_IF):
            netns.tc(self.ns, "qdisc", "del", "dev", dev, "root", check=False)
        self.throttled = False
