"""Diagnosis and incidents in `dari lab run`: what the censored client finds out, what it reports
through a route that still works, and the incident the server opens and closes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from dari.lab import timeline
from dari.lab.agent import RemoteClient, route_to_dict

ADMIN = "labops"
# The production rules on a demo clock: a 2-minute window, one reporter is enough.
SERVER_ENV = {"DARI_REACH_WINDOW_S": "120", "DARI_REACH_RECENT_S": "8", "DARI_REACH_EVAL_S": "1",
              "DARI_REACH_MIN_REPORTERS": "1", "DARI_ADMIN_HANDLES": ADMIN, "DARI_CONTROL_PROBE_S": "2"}
KINDS = ["ws", "tls", "pinned-tls", "stream", "relay"]


class ReachHook:
    def __init__(self) -> None:
        self.ops: RemoteClient | None = None
        self.blocked_at = 0.0
        self.incident: dict[str, Any] | None = None

    async def diagnose(self, tl: timeline.Timeline, ns: str, region: str) -> dict[str, Any]:
        lab = tl.lab
        cfg = {"routes": [route_to_dict(lab.route(k)) for k in KINDS],
               "addresses": {"chat.dari.test": [lab.addresses.server]}, "region": region,
               "asn": "AS4134" if region == "CN" else "AS4766", "report": True, "timeout": 2.5,
               "queue": str(lab.workdir / f"reach-{ns}.db")}
        done = await asyncio.to_thread(lab.python, ns, module="dari.lab.reach", args=[json.dumps(cfg)], timeout=150)
        return dict(json.loads(done.stdout.strip().splitlines()[-1])) if done.returncode == 0 else {}

    async def __call__(self, tl: timeline.Timeline, phase: str) -> None:
        if self.ops is None:
            self.ops = await tl.lab.client("control", ["ws", "relay"], name="labops")
            await self.ops.signup(ADMIN, "Lab operator", timeline.PASSWORD + uuid.uuid4().hex[:2])
        if phase == "blocked":
            self.blocked_at = time.time()
        d, control = await asyncio.gather(self.diagnose(tl, "censored", "CN"), self.diagnose(tl, "control", "KR"))
        if d:
            tl.say(f"diagnosis (censored, CN): verdict {d['verdict']}; working: "
                   f"{', '.join(d['working_routes']) or 'nothing'}", 1)
            for rd in d["routes"]:
                if not rd["ok"] or rd["cls"] != "ok":
                    failed = next((s for s in rd["stages"] if not s["ok"]), None)
                    where = f" at {failed['name']}" if failed else ""
                    tl.say(f"{rd['route']}: {rd['cls']}{where}", 2)
            how = f"through {d['reported_via']}" if d.get("reported") else f"queued ({d.get('queued', 0)} samples)"
            tl.say(f"report sent {how}", 2)
        if control:
            tl.say(f"diagnosis (control, KR): verdict {control['verdict']}", 1)
        if phase == "blocked":
            await self.wait_open(tl)
        elif phase == "lifted" and self.incident is not None:
            await self.wait_closed(tl)

    async def wait_open(self, tl: timeline.Timeline, timeout: float = 60) -> None:
        assert self.ops is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for inc in await self.ops.call("admin.incidents", open_only=True):
                self.incident = inc
                tl.say(f"INCIDENT OPENED after {time.time() - self.blocked_at:.0f} s: {inc['summary']}", 1)
                return
            await asyncio.sleep(1)
        tl.say("no incident opened (nothing reached the server yet: reports stay queued until a route works)", 1)

    async def wait_closed(self, tl: timeline.Timeline, timeout: float = 60) -> None:
        assert self.ops is not None and self.incident is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = [i for i in await self.ops.call("admin.incidents") if i["id"] == self.incident["id"]]
            if rows and rows[0]["closed_at"]:
                tl.say(f"INCIDENT CLOSED: region {rows[0]['region']} reaches dari again", 1)
                return
            await asyncio.sleep(1)
        tl.say("the incident is still open", 1)


def install() -> None:
    timeline.HOOKS.append(ReachHook())
    timeline.SERVER_ENV.update(SERVER_ENV)
