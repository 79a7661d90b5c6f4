"""Issue 6 end to end in the censorship lab: clients in the censored region diagnose the right
class and report it through whatever route still works; the server opens an incident for that
region (none for the control region) with the class, since, reporters and working fallbacks, and
closes it when the block is lifted. server-down and shutdown, where no report can get through
during the block, are recorded from the reports phones queue and deliver afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dari.lab.agent import RemoteClient, route_to_dict
from dari.lab.fixtures import require_lab
from dari.lab.lab import Lab, LabUnavailable
from tests.conftest import PASSWORD

ENV = {"DARI_REACH_WINDOW_S": "120", "DARI_REACH_RECENT_S": "8", "DARI_REACH_EVAL_S": "1",
       "DARI_REACH_MIN_REPORTERS": "2", "DARI_ADMIN_HANDLES": ",".join(f"ops{i}" for i in range(80)),
       "DARI_CONTROL_PROBE_S": "2"}
_ops_count = iter(range(80))
KINDS = ["ws", "tls", "pinned-tls", "stream", "relay"]
OPEN_WITHIN_S = 120


@pytest.fixture(scope="module")
def reach_lab() -> Iterator[Lab]:
    require_lab()
    lab = Lab(penalty_s=3, censored_clients=2)
    try:
        lab.start()
    except LabUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        lab.start_server(env=ENV)
        lab.start_relay()
        yield lab
    finally:
        lab.close()


def _config(lab: Lab, ns: str, region: str, **extra: Any) -> dict[str, Any]:
    # One queue file per namespace: one device, one reporter id, as on a phone.
    extra.setdefault("queue", str(lab.workdir / f"reach-{ns}.db"))
    return {"routes": [route_to_dict(lab.route(k)) for k in KINDS],
            "addresses": {"chat.dari.test": [lab.addresses.server]}, "region": region,
            "asn": "AS4134" if region == "CN" else "AS4766", "report": True, "timeout": 2.5, **extra}


async def _reach(lab: Lab, ns: str, region: str, **extra: Any) -> dict[str, Any]:
    cfg = json.dumps(_config(lab, ns, region, **extra))
    done = await asyncio.to_thread(lab.python, ns, module="dari.lab.reach", args=[cfg], timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def _ops(lab: Lab) -> RemoteClient:
    n = next(_ops_count)
    ops = await lab.client("control", ["ws", "relay"], name=f"ops{n}")
    await ops.signup(f"ops{n}", "Operator", PASSWORD)
    return ops


async def _wait_incident(ops: RemoteClient, pred: Any, timeout: float = OPEN_WITHIN_S,
                         open_only: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for inc in await ops.call("admin.incidents", open_only=open_only):
            if pred(inc):
                return dict(inc)
        await asyncio.sleep(1)
    raise AssertionError(f"no matching incident within {timeout} s: "
                         f"{await ops.call('admin.incidents', open_only=False)}")


async def _settle(lab: Lab, ops: RemoteClient) -> None:
    """Healthy reports from both regions until no incident is open."""
    for _ in range(20):
        await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "censored-2", "CN"),
                             _reach(lab, "control", "KR"))
        if not await ops.call("admin.incidents", open_only=True):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"incidents stay open: {await ops.call('admin.incidents', open_only=True)}")


# scenario -> (route that must fail, its class, a route that must still work)
LIVE = {
    "line-2014": ("direct-ws", "dns-poison", "relay"),
    "dns-poison": ("direct-ws", "dns-poison", "relay"),
    "sni-filter": ("direct-tls", "sni-filter", "relay"),
    "ip-blackhole": ("direct-ws", "ip-blackhole", "relay"),
    "ip-reset": ("direct-ws", "tcp-reset", "relay"),
    "fingerprint": ("direct-stream", "dpi-reset", "relay"),
    "kakao-2014": ("direct-ws", "feature-block", "relay"),
    "throttle": ("direct-ws", "throttled", "relay"),
}


@pytest.mark.parametrize("scenario", list(LIVE))
async def test_block_is_diagnosed_reported_and_opens_an_incident(reach_lab: Lab, scenario: str) -> None:
    lab = reach_lab
    route, cls, fallback = LIVE[scenario]
    ops = await _ops(lab)
    n = next(_ops_count)
    minji = await lab.client("censored", ["ws", "pinned-tls", "relay"], name=f"minji{n}", upgrade_interval=5.0)
    hyun = await lab.client("control", ["ws"], name=f"hyun{n}")
    try:
        await minji.signup(f"minji{n}_{scenario.replace('-', '')[:8]}", "Minji", PASSWORD)
        await hyun.signup(f"hyun{n}_{scenario.replace('-', '')[:8]}", "Hyun", PASSWORD)
        chat = (await minji.call("chat.open_direct", user_id=(hyun.user or {})["user_id"]))["chat_id"]
        await _settle(lab, ops)
        lab.apply(scenario)
        blocked_at = time.time() * 1000
        # Chat keeps flowing through whatever route still works, nothing lost or doubled.
        texts = [f"{scenario} {i}" for i in range(5)]
        for text in texts:
            await minji.send_message(chat, text)
        got = []
        while len(got) < len(texts):
            ev = await hyun.next_event("message.new", timeout=60)
            if ev["payload"]["sender_id"] == (minji.user or {})["user_id"]:
                got.append(ev["payload"]["text"])
        assert got == texts, (scenario, got)
        if scenario == "kakao-2014":
            # The feature endpoints are filtered, but every feature also rides the chat channel (G6).
            added = await minji.call("friend.add", handle=(hyun.user or {})["handle"])
            assert added["user"]["user_id"] == (hyun.user or {})["user_id"]
        history = await hyun.call("message.history", chat_id=chat)
        stored = [m["text"] for m in history["messages"] if m["kind"] == "text"]
        assert stored == texts, stored
        censored = await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "censored-2", "CN"))
        control = await _reach(lab, "control", "KR")
        for d in censored:
            by = {r["route"]: r for r in d["routes"]}
            assert by[route]["cls"] == cls, (scenario, by[route])
            assert fallback in d["working_routes"], d["working_routes"]
            assert d["reported"] > 0, d.get("report_error")
        assert control["verdict"] == "ok", control
        inc = await _wait_incident(ops, lambda i: i["region"] == "CN")
        opened_after_s = (inc["opened_at"] - blocked_at) / 1000
        assert opened_after_s < OPEN_WITHIN_S
        assert inc["routes"].get(route) == cls and inc["asn"] == "AS4134"
        assert fallback in inc["fallbacks"] and inc["reporters"] >= 2
        assert inc["since"] >= blocked_at - 2000
        assert not [i for i in await ops.call("admin.incidents", open_only=True) if i["region"] != "CN"]
        lab.lift(scenario)
        await _settle(lab, ops)
        closed = [i for i in await ops.call("admin.incidents", open_only=False) if i["id"] == inc["id"]]
        assert closed and closed[0]["closed_at"]
    finally:
        lab.lift_all()
        for rc in (ops, minji, hyun):
            await rc.close()


async def test_server_down_is_recorded_from_queued_reports(reach_lab: Lab, tmp_path: Path) -> None:
    lab = reach_lab
    ops = await _ops(lab)
    try:
        await _settle(lab, ops)
        await ops.close()
        lab.apply("server-down")
        down = await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "control", "KR"))
        assert all(d["verdict"] == "server-down" and d["reported"] == 0 and d["queued"] > 0 for d in down)
        await asyncio.sleep(6)          # longer than the heartbeat gap the server counts as downtime
        lab.lift("server-down")
        ops = await _ops(lab)
        for ns, region in (("censored", "CN"), ("control", "KR")):
            sent = await _reach(lab, ns, region, flush_only=True)
            assert sent["reported"] > 0, sent
        inc = await _wait_incident(ops, lambda i: i["class"] == "server-down", open_only=False, timeout=30)
        assert inc["region"] == "*"
        assert not [i for i in await ops.call("admin.incidents", open_only=False)
                    if i["region"] in ("CN", "KR") and i["opened_at"] >= inc["opened_at"] - 1000]
    finally:
        lab.lift_all()
        if not lab.server_running:
            lab.start_server()
        await ops.close()


async def test_shutdown_is_recorded_when_the_region_comes_back(reach_lab: Lab) -> None:
    lab = reach_lab
    ops = await _ops(lab)
    try:
        await _settle(lab, ops)
        lab.apply("shutdown")
        found = await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "censored-2", "CN"))
        assert all(d["verdict"] == "shutdown" and d["reported"] == 0 and not d["working_routes"] for d in found)
        await _reach(lab, "control", "KR")
        lab.lift("shutdown")
        for ns in ("censored", "censored-2"):
            sent = await _reach(lab, ns, "CN", flush_only=True)
            assert sent["reported"] > 0, sent
        inc = await _wait_incident(ops, lambda i: i["region"] == "CN" and i["class"] == "shutdown",
                                   open_only=False, timeout=30)
        assert inc["fallbacks"] == [] and inc["reporters"] >= 2
    finally:
        lab.lift_all()
        await ops.close()


def test_bench_detect_measures_a_scenario(reach_lab: Lab) -> None:
    """`dari bench detect` builds its own lab: run it only after this module's lab is gone."""
    import subprocess
    import sys

    reach_lab.close()
    done = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "detect", "--lab-scenario", "ip-reset",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    entry = json.loads(done.stdout)["scenarios"]["ip-reset"]
    assert 0 < entry["fallback_p50_s"] < 60 and 0 < entry["incident_p50_s"] < OPEN_WITHIN_S
    assert entry["fallback_route"] == "relay"
