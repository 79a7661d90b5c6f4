"""`dari bench detect` (root): in the censorship lab, for each scenario, the time from the block
starting to (a) the first message delivered through a fallback route and (b) the server opening
an incident for the censored region. Clients diagnose and report right after their route fails,
as the SDK does on its own; the server runs the production rules on a shortened clock (a 2-minute
window, evaluation every second) so a run takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from dari.lab.agent import route_to_dict
from dari.lab.lab import Lab

PASSWORD = "bench detect password"
ENV = {"DARI_REACH_WINDOW_S": "120", "DARI_REACH_RECENT_S": "8", "DARI_REACH_EVAL_S": "1",
       "DARI_REACH_MIN_REPORTERS": "2", "DARI_ADMIN_HANDLES": ",".join(f"detectops{i}" for i in range(50)),
       "DARI_CONTROL_PROBE_S": "2"}
KINDS = ["ws", "tls", "pinned-tls", "stream", "relay"]
SCENARIOS = ["line-2014", "kakao-2014", "dns-poison", "sni-filter", "ip-blackhole", "ip-reset", "fingerprint",
             "throttle"]


async def _reach(lab: Lab, ns: str, region: str) -> dict[str, Any]:
    cfg = {"routes": [route_to_dict(lab.route(k)) for k in KINDS],
           "addresses": {"chat.dari.test": [lab.addresses.server]}, "region": region,
           "asn": "AS4134" if region == "CN" else "AS4766", "report": True, "timeout": 2.5,
           "queue": str(lab.workdir / f"detect-{ns}.db")}
    done = await asyncio.to_thread(lab.python, ns, module="dari.lab.reach", args=[json.dumps(cfg)], timeout=150)
    return dict(json.loads(done.stdout.strip().splitlines()[-1])) if done.returncode == 0 else {}


async def _one(lab: Lab, scenario: str, n: int) -> dict[str, Any]:
    minji = await lab.client("censored", ["ws", "pinned-tls", "relay"], name=f"minji{n}", upgrade_interval=5.0)
    hyun = await lab.client("control", ["ws"], name=f"hyun{n}")
    ops = await lab.client("control", ["ws", "relay"], name=f"ops{n}")
    try:
        await minji.signup(f"minji_{uuid.uuid4().hex[:6]}", "Minji", PASSWORD)
        await hyun.signup(f"hyun_{uuid.uuid4().hex[:6]}", "Hyun", PASSWORD)
        await ops.signup(f"detectops{n}", "Operator", PASSWORD)
        chat = (await minji.call("chat.open_direct", user_id=(hyun.user or {})["user_id"]))["chat_id"]
        # Healthy reports from both regions first, so the server has a baseline.
        await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "censored-2", "CN"),
                             _reach(lab, "control", "KR"))
        await asyncio.to_thread(lab.apply, scenario)
        t0 = time.monotonic()

        async def fallback() -> float:
            text = f"during {scenario}"
            await minji.send_message(chat, text)
            while (await hyun.next_event("message.new", timeout=120))["payload"]["text"] != text:
                pass
            return time.monotonic() - t0

        async def incident() -> float:
            await asyncio.gather(_reach(lab, "censored", "CN"), _reach(lab, "censored-2", "CN"),
                                 _reach(lab, "control", "KR"))
            while time.monotonic() - t0 < 180:
                if any(i["region"] == "CN" for i in await ops.call("admin.incidents", open_only=True)):
                    return time.monotonic() - t0
                await asyncio.sleep(0.5)
            return float("nan")

        fb, inc = await asyncio.gather(fallback(), incident())
        route = (await minji.status()).get("route")
        return {"scenario": scenario, "fallback_s": round(fb, 2), "incident_s": round(inc, 2), "route": route}
    finally:
        await asyncio.to_thread(lab.lift_all)
        for rc in (minji, hyun, ops):
            await rc.close()


async def run_detect(scenarios: list[str] | None = None, runs: int = 1) -> dict[str, Any]:
    lab = Lab(penalty_s=3, censored_clients=2)
    await asyncio.to_thread(lab.start)
    try:
        await asyncio.to_thread(lab.start_server, None, ENV)
        await asyncio.to_thread(lab.start_relay)
        results: dict[str, Any] = {}
        n = 0
        for scenario in scenarios or SCENARIOS:
            rows = []
            for _ in range(runs):
                rows.append(await _one(lab, scenario, n))
                n += 1
                if not lab.server_running:
                    await asyncio.to_thread(lab.start_server)
            fb = [r["fallback_s"] for r in rows]
            inc = [r["incident_s"] for r in rows]
            results[scenario] = {"runs": runs, "fallback_p50_s": statistics.median(fb),
                                 "incident_p50_s": statistics.median(inc), "fallback_route": rows[-1]["route"],
                                 "fallback_s": fb, "incident_s": inc}
        return {"scenarios": results}
    finally:
        await asyncio.to_thread(lab.close)
