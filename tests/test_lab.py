"""The censorship lab does what each scenario claims, to the censored region and not to the control
region, and a dari client keeps chatting through a fallback route when a block starts. Needs root;
skips with the reason where the kernel lacks something (fails instead under CI=true)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest

from dari.lab import netns, probes
from dari.lab.agent import RemoteClient, RemoteError
from dari.lab.fixtures import lab_fixture, lab_session_fixture, require_lab  # noqa: F401 (fixtures by name)
from dari.lab.lab import Lab, cleanup_stale
from dari.lab.topology import BOGUS_IP, SERVER_IP
from tests.conftest import PASSWORD


def test_topology_builds_and_tears_down() -> None:
    require_lab()
    before = set(netns.list_netns())
    lab = Lab(censored_clients=2, control_clients=1)
    try:
        lab.start()
        names = set(lab.topology.namespaces.values())
        assert names <= set(netns.list_netns())
        assert all(n.startswith(f"dl-{lab.lab_id}-") for n in names)
        for role in ("censored", "censored-2", "control", "relay"):
            srv = lab.socket("server")
            srv.bind(("0.0.0.0", 9100))
            srv.listen()
            try:
                assert probes.tcp(lab.ns(role), SERVER_IP, 9100).ok, role
                conn, _ = srv.accept()
                conn.close()
            finally:
                srv.close()
        # the peers see real addresses (no NAT anywhere), so the server can tell regions apart
        assert lab.addresses.censored == ["10.77.1.2", "10.77.1.3"]
        assert probes.dns(lab.ns("control"), "chat.dari.test").data["first"] == [SERVER_IP]
        resolved = lab.python("censored", "import socket; print(socket.gethostbyname('relay1.example.net'))")
        assert resolved.stdout.strip() == lab.addresses.relay, resolved.stderr
        procs = [p.proc for p in lab.processes.values()]
        assert procs and all(p.poll() is None for p in procs)
    finally:
        lab.close()
    assert set(netns.list_netns()) == before
    assert not any(name.startswith(f"dl-{lab.lab_id}") for name in os.listdir(netns.ETC_NETNS)) \
        if os.path.isdir(netns.ETC_NETNS) else True
    assert all(p.poll() is not None for p in procs)
    assert not lab.workdir.exists()


def _both(lab: Lab) -> tuple[str, str]:
    return lab.ns("censored"), lab.ns("control")


def test_dns_poison_injects_a_forged_first_answer(lab: Lab) -> None:
    cen, ctl = _both(lab)
    assert probes.dns(cen, "chat.dari.test").data["first"] == [SERVER_IP]
    lab.apply("dns-poison")
    out = probes.dns(cen, "chat.dari.test")
    assert out.data["first"] == [BOGUS_IP]
    assert out.data["answers"][1:] == [[SERVER_IP]], "the real answer follows the forged one"
    assert probes.dns(ctl, "chat.dari.test").data["answers"] == [[SERVER_IP]]
    # the system resolver (glibc, through /etc/netns resolv.conf) takes the forged one
    got = lab.python("censored", "import socket; print(socket.gethostbyname('chat.dari.test'))")
    assert got.stdout.strip() == BOGUS_IP
    assert probes.dns(cen, "relay1.example.net").data["answers"] == [[lab.addresses.relay]]
    lab.lift("dns-poison")
    assert probes.dns(cen, "chat.dari.test").data["answers"] == [[SERVER_IP]]


def test_line_2014_dns_tampering_and_http_filtering(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("line-2014")
    assert probes.dns(cen, "api.dari.test").data["answers"] == [[BOGUS_IP]]     # the resolver itself lies
    assert probes.dns(ctl, "api.dari.test").data["answers"] == [[SERVER_IP]]
    assert probes.http(cen, SERVER_IP, 80, "/healthz", "chat.dari.test").kind == "reset"
    assert probes.http(ctl, SERVER_IP, 80, "/healthz", "chat.dari.test").data["status"] == 200
    # a request naming the address instead, and TLS to a pinned address, are not what it filters
    assert probes.http(cen, SERVER_IP, 80, "/healthz", SERVER_IP).data["status"] == 200
    assert probes.dari_stream(cen, SERVER_IP, 443, count=2, interval=0, use_tls=True).ok
    assert [e["action"] for e in lab.censor_events()][-1] == "http-filter"
    lab.lift("line-2014")
    assert probes.http(cen, SERVER_IP, 80, "/healthz", "chat.dari.test").data["status"] == 200


def test_kakao_2014_spares_chat_and_cuts_features(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("kakao-2014")
    blocked = probes.http(cen, SERVER_IP, 80, "/api/v1/friend.add", "chat.dari.test", "POST", b"{}")
    assert blocked.data["status"] == 403 and "Access denied" in blocked.data["body"]
    assert probes.http(ctl, SERVER_IP, 80, "/api/v1/friend.add", "chat.dari.test", "POST", b"{}").data["status"] == 401
    assert probes.http(cen, SERVER_IP, 80, "/api/v1/server.info", "chat.dari.test", "POST", b"{}").data["status"] == 200
    assert probes.http(cen, SERVER_IP, 80, "/healthz", "story.dari.test").data["status"] == 403
    assert probes.tls(cen, SERVER_IP, 8443, "pc.dari.test").kind in ("reset", "eof")
    assert probes.tls(cen, SERVER_IP, 8443, "chat.dari.test").ok                   # no penalty box here
    assert probes.dari_stream(cen, SERVER_IP, 7000, count=3, interval=0).ok       # the chat stream is spared


async def test_kakao_2014_chat_call_passes_while_rest_friend_add_is_blocked(lab: Lab) -> None:
    lab.apply("kakao-2014")
    minji = await lab.client("censored", ["ws"], name="kakao-minji")
    hyun = await lab.client("control", ["ws"], name="kakao-hyun")
    try:
        await minji.signup(f"minji_{uuid.uuid4().hex[:6]}", "Minji", PASSWORD)
        await hyun.signup(f"hyun_{uuid.uuid4().hex[:6]}", "Hyun", PASSWORD)
        with pytest.raises(RemoteError):
            await minji.rest("friend.add", handle=hyun.user["handle"])      # REST path: the block page
        added = await minji.call("friend.add", handle=hyun.user["handle"])  # same call over the chat link
        assert added is not None
        chat = await minji.call("chat.open_direct", user_id=hyun.user["user_id"])
        await minji.send_message(chat["chat_id"], "안녕, still here")
        ev = await hyun.next_event("message.new", timeout=15)
        assert ev["payload"]["text"] == "안녕, still here"
    finally:
        await minji.close()
        await hyun.close()


def test_sni_filter_resets_and_penalty_box_blocks_the_pair(lab: Lab) -> None:
    cen, ctl = _both(lab)
    penalty = 3.0
    lab.apply("sni-filter", penalty_s=penalty)
    assert probes.tls(cen, SERVER_IP, 443, "cdn.example.org").ok, "a neutral name passes before any penalty"
    assert probes.tls(cen, SERVER_IP, 443, "chat.dari.test").kind in ("reset", "eof")
    hit = time.monotonic()
    assert probes.tls(cen, SERVER_IP, 443, "cdn.example.org").kind == "refused", "the penalty box resets the pair"
    assert probes.tls(cen, lab.addresses.relay, 443, "relay1.example.net").ok, "other servers are not penalised"
    assert probes.tls(ctl, SERVER_IP, 443, "chat.dari.test").ok
    assert (lab.addresses.censored[0], SERVER_IP) in lab.censor.penalties()
    time.sleep(max(0.0, penalty + 1.2 - (time.monotonic() - hit)))
    assert probes.tls(cen, SERVER_IP, 443, "cdn.example.org").ok, "the penalty expires"
    assert [e["action"] for e in lab.censor_events()].count("sni-reset") >= 1


def test_ip_blackhole_drops_and_ip_reset_resets(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("ip-blackhole")
    assert probes.tcp(cen, SERVER_IP, 80, timeout=1.5).kind == "timeout"
    assert probes.tcp(cen, lab.addresses.server_alt, 443, timeout=1.5).kind == "timeout"
    assert probes.tcp(ctl, SERVER_IP, 80).ok
    assert probes.dari_stream(cen, lab.addresses.relay, 443, count=2, interval=0, use_tls=True,
                              tls_sni="relay1.example.net").ok, "the relay still reaches the server"
    lab.lift("ip-blackhole")
    lab.apply("ip-reset")
    assert probes.tcp(cen, SERVER_IP, 80).kind == "refused"
    assert probes.tcp(ctl, SERVER_IP, 80).ok
    lab.lift("ip-reset")
    assert probes.tcp(cen, SERVER_IP, 80).ok


def test_fingerprint_resets_dari_streams_but_not_tls(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("fingerprint", delay_s=0.3)
    out = probes.dari_stream(cen, SERVER_IP, 7000, count=6, interval=0.15)
    assert out.kind in ("reset", "eof"), out
    assert 1 <= out.data["answered"] < 6, "reset part-way, after the stream started"
    assert probes.dari_stream(cen, SERVER_IP, 443, count=6, interval=0.15, use_tls=True).ok
    assert probes.http(cen, SERVER_IP, 80, "/healthz", "chat.dari.test").data["status"] == 200
    assert probes.dari_stream(ctl, SERVER_IP, 7000, count=6, interval=0.15).ok
    assert any(e["action"] == "dpi-reset" for e in lab.censor_events())


def test_throttle_cuts_bandwidth_to_the_server_only(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("throttle", rate="200kbit")
    slow = probes.throughput(cen, SERVER_IP, 7019, seconds=1.5)
    fast = probes.throughput(ctl, SERVER_IP, 7019, seconds=0.5)
    assert slow.data["bytes_per_s"] * 8 < 400_000, slow          # about the configured 200 kbit/s
    assert fast.data["bytes_per_s"] > 50 * slow.data["bytes_per_s"], (slow, fast)
    lab.lift("throttle")
    assert probes.throughput(cen, SERVER_IP, 7019, seconds=0.5).data["bytes_per_s"] > 20 * slow.data["bytes_per_s"]


def test_server_down_fails_for_everyone(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("server-down")
    assert probes.tcp(cen, SERVER_IP, 80).kind == "refused"
    assert probes.tcp(ctl, SERVER_IP, 80).kind == "refused"
    assert probes.dns(cen, "chat.dari.test").data["first"] == [SERVER_IP], "nothing else is touched"
    lab.lift("server-down")
    assert lab.server_running
    assert probes.http(cen, SERVER_IP, 80, "/healthz", "chat.dari.test").data["status"] == 200


def test_shutdown_cuts_the_region_off(lab: Lab) -> None:
    cen, ctl = _both(lab)
    lab.apply("shutdown")
    assert probes.dns(cen, "chat.dari.test", timeout=1.0).kind == "timeout"
    assert probes.tcp(cen, SERVER_IP, 80, timeout=1.0).kind == "timeout"
    assert probes.tcp(cen, lab.addresses.relay, 443, timeout=1.0).kind == "timeout"
    assert probes.tcp(ctl, SERVER_IP, 80).ok
    lab.lift("shutdown")
    assert probes.tcp(cen, SERVER_IP, 80).ok


async def test_chat_survives_line_2014_through_a_pinned_tls_route(lab: Lab) -> None:
    """A censored client on the WebSocket by name keeps chatting with a control client when LINE 2014
    starts: its session moves to the pinned TLS stream; every message in both directions arrives once,
    in order; after the block is lifted it is back on the WebSocket."""
    minji = await lab.client("censored", ["ws", "pinned-tls"], name="e2e-minji", upgrade_interval=1.0)
    hyun = await lab.client("control", ["ws"], name="e2e-hyun")
    try:
        await minji.signup(f"minji_{uuid.uuid4().hex[:6]}", "Minji", PASSWORD)
        await hyun.signup(f"hyun_{uuid.uuid4().hex[:6]}", "Hyun", PASSWORD)
        assert (await minji.status())["route"] == "direct-ws"
        await minji.call("friend.add", handle=hyun.user["handle"])
        chat = (await minji.call("chat.open_direct", user_id=hyun.user["user_id"]))["chat_id"]

        async def received(rc: RemoteClient, prefix: str, n: int) -> list[str]:
            texts: list[str] = []
            while len(texts) < n:
                text = (await rc.next_event("message.new", timeout=30))["payload"].get("text", "")
                if text.startswith(prefix):
                    texts.append(text)
            return texts

        n = 12
        hyun_gets = asyncio.create_task(received(hyun, "m-", n))
        minji_gets = asyncio.create_task(received(minji, "h-", n))
        for i in range(n):
            if i == n // 3:
                lab.apply("line-2014")
            await minji.send_message(chat, f"m-{i}")
            await hyun.send_message(chat, f"h-{i}")
            await asyncio.sleep(0.25)
        assert await asyncio.wait_for(hyun_gets, 60) == [f"m-{i}" for i in range(n)]
        assert await asyncio.wait_for(minji_gets, 60) == [f"h-{i}" for i in range(n)]
        await minji.flush_outbox()
        assert (await minji.status())["route"] == "pinned-tls"
        history = await hyun.call("message.history", chat_id=chat, limit=100)
        texts = [m["text"] for m in history["messages"]]
        assert sorted(texts) == sorted([f"m-{i}" for i in range(n)] + [f"h-{i}" for i in range(n)])
        assert len(texts) == len(set(texts)), "nothing stored twice"
        lab.lift("line-2014")
        for _ in range(40):
            if (await minji.status())["route"] == "direct-ws":
                break
            await asyncio.sleep(0.5)
        assert (await minji.status())["route"] == "direct-ws", "back on the preferred route once lifted"
    finally:
        await minji.close()
        await hyun.close()


def test_a_crashed_lab_is_cleaned_up_by_the_next() -> None:
    """A lab whose owner was SIGKILLed leaves namespaces and processes; the next lab's start (or
    `dari lab cleanup`) removes them, and leaves live labs alone."""
    require_lab()
    code = ("import time; from dari.lab import Lab; lab = Lab(); lab.start(); "
            "print(lab.lab_id, lab.processes['middlebox'].proc.pid, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lab_id, middlebox_pid = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()
    orphaned = [n for n in netns.list_netns() if n.startswith(f"dl-{lab_id}-")]
    assert orphaned and os.path.exists(f"/proc/{middlebox_pid}")
    with Lab() as live:
        assert not any(n.startswith(f"dl-{lab_id}-") for n in netns.list_netns())
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{middlebox_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{middlebox_pid}"), "the dead lab's middlebox was stopped"
        assert cleanup_stale() == [], "a live lab is not a leftover"
        assert live.ns("censor") in netns.list_netns()


def test_dari_lab_run_prints_a_timeline() -> None:
    require_lab()
    out = subprocess.run([sys.executable, "-m", "dari.cli.main", "lab", "run", "dns-poison", "--hold", "0"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for step in ("building the topology", "baseline", "BLOCK STARTS: dns-poison", "BLOCK LIFTED", "teardown"):
        assert step in text, text
    blocked = text.split("BLOCK STARTS")[1].split("BLOCK LIFTED")[0]
    assert "10.77.99.1 ≠ server" in blocked and "<- differs" in blocked
    assert "dns-inject" in blocked
