"""`dari lab run SCENARIO`: a readable timeline of one block, for demos.

build → server, relay, resolver → two clients chatting (censored and control) → direct checks →
block starts → checks and chat again (what fails, what still works, which route carries the chat)
→ block lifted → checks and chat → teardown.

Extension point: `HOOKS`. Each hook is awaited at every phase ("baseline", "blocked", "lifted")
with the `Timeline` (its lab, clients, chat id and `say`), e.g. to print the clients' diagnosis and
the server's incidents:

    from dari.lab import timeline

    async def incidents(tl: timeline.Timeline, phase: str) -> None:
        tl.say(f"incidents: {await tl.clients['control'].call('admin.incidents')}")
    timeline.HOOKS.append(incidents)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dari.lab import probes
from dari.lab.agent import RemoteClient
from dari.lab.lab import CHARGEN_PORT, Lab
from dari.lab.scenarios import SCENARIOS

PHASES = ("baseline", "blocked", "lifted")
PASSWORD = "lab demo password 1"


@dataclass
class Timeline:
    lab: Lab
    scenario: str
    out: TextIO
    clients: dict[str, RemoteClient] = field(default_factory=dict)
    chat_id: int = 0
    t0: float = field(default_factory=time.monotonic)
    sent: int = 0

    def say(self, text: str, indent: int = 0) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f}s]"
        self.out.write(f"{stamp} {'  ' * indent}{text}\n")
        self.out.flush()


Hook = Callable[[Timeline, str], Awaitable[None]]
HOOKS: list[Hook] = []
SERVER_ENV: dict[str, str] = {}   # extra settings for the lab's server (hooks may need some)


def checks(lab: Lab) -> list[tuple[str, Callable[[str], probes.Outcome]]]:
    """Direct checks with plain sockets, each run from the censored and the control client."""
    a = lab.addresses
    server = a.server
    return [
        ("DNS chat.dari.test", lambda ns: _dns(lab, ns)),
        ("TCP connect :80", lambda ns: probes.tcp(ns, server, 80, timeout=2)),
        ("HTTP GET /healthz, Host chat.dari.test",
         lambda ns: probes.http(ns, server, 80, "/healthz", "chat.dari.test")),
        ("REST POST /api/v1/friend.add", lambda ns: probes.http(ns, server, 80, "/api/v1/friend.add",
                                                                "chat.dari.test", "POST", b"{}")),
        ("TLS handshake, SNI chat.dari.test", lambda ns: probes.tls(ns, server, 443, "chat.dari.test", timeout=2)),
        ("dari frames, plain TCP :7000", lambda ns: probes.dari_stream(ns, server, 7000, count=4, interval=0.15,
                                                                        timeout=2)),
        ("dari frames, TLS to the pinned address", lambda ns: probes.dari_stream(ns, server, 443, count=2, interval=0,
                                                                                  use_tls=True, timeout=2)),
        ("relay relay1.example.net (TLS)", lambda ns: probes.dari_stream(ns, a.relay, 443, count=2, interval=0,
                                                                          use_tls=True, tls_sni="relay1.example.net",
                                                                          timeout=2)),
        ("throughput from the server", lambda ns: probes.throughput(ns, server, CHARGEN_PORT, seconds=0.7)),
    ]


def _dns(lab: Lab, ns: str) -> probes.Outcome:
    out = probes.dns(ns, "chat.dari.test", timeout=1.5)
    first = out.data.get("first")
    if first and first != [lab.addresses.server]:
        out.detail = out.detail.replace(first[0], f"{first[0]} ≠ server", 1)
    return out


async def run_checks(tl: Timeline) -> None:
    cen, ctl = tl.lab.ns("censored"), tl.lab.ns("control")
    width = max(len(label) for label, _ in checks(tl.lab))
    tl.say(f"{'direct check':<{width}}  {'censored region':<38}  control region", 1)
    for label, fn in checks(tl.lab):
        a, b = await asyncio.gather(asyncio.to_thread(fn, cen), asyncio.to_thread(fn, ctl))
        tl.say(f"{label:<{width}}  {_short(a):<38}  {_short(b)}{'   <- differs' if _differs(a, b) else ''}", 1)


def _differs(a: probes.Outcome, b: probes.Outcome) -> bool:
    if a.kind != b.kind:
        return True
    if "bytes_per_s" in a.data:
        return bool(a.data["bytes_per_s"] * 10 < b.data["bytes_per_s"])
    return a.data.get("first", a.data.get("status")) != b.data.get("first", b.data.get("status"))


def _short(o: probes.Outcome) -> str:
    text = str(o)
    return text if len(text) <= 38 else text[:35] + "..."


async def chat(tl: Timeline, timeout: float = 15.0) -> None:
    """One message each way; says whether it arrived, how fast and over which route."""
    minji, hyun = tl.clients["censored"], tl.clients["control"]
    for sender, receiver, who in ((minji, hyun, "censored → control"), (hyun, minji, "control → censored")):
        tl.sent += 1
        text = f"message {tl.sent} ({who})"
        start = time.monotonic()
        await sender.send_message(tl.chat_id, text)
        try:
            while True:
                ev = await receiver.next_event("message.new", timeout=timeout)
                if ev["payload"].get("text") == text:
                    break
            st = await minji.status()
            tl.say(f"chat {who}: delivered in {time.monotonic() - start:.1f}s; censored client on route "
                   f"{st['route']}", 1)
        except Exception:
            tl.say(f"chat {who}: not delivered within {timeout:.0f}s (kept in the sender's outbox)", 1)


async def run(scenario: str, out: TextIO, *, hold_s: float = 3.0, params: dict[str, Any] | None = None) -> int:
    if scenario not in SCENARIOS:
        raise KeyError(scenario)
    sc = SCENARIOS[scenario]
    lab = Lab()
    tl = Timeline(lab, scenario, out)
    tl.say(f"scenario {scenario}: {sc.summary}")
    try:
        tl.say("building the topology: censored and control clients, censor router, server, relay, resolver")
        await asyncio.to_thread(lab.start)
        a = lab.addresses
        tl.say(f"censored {', '.join(a.censored)}  control {', '.join(a.control)}  server {a.server} "
               f"(chat.dari.test)  relay {a.relay} (relay1.example.net)  resolver {a.dns}", 1)
        tl.say("starting dari serve (+ TLS front) and the relay")
        await asyncio.to_thread(lab.start_server, None, dict(SERVER_ENV) or None)
        await asyncio.to_thread(lab.start_relay)
        tl.say(f"server key pin {lab.server_pin}", 1)
        tl.say("clients sign up and open a chat: minji (censored; routes websocket, long-poll, pinned TLS, relay), "
               "hyun (control; websocket)")
        minji = await lab.client("censored", ["ws", "longpoll", "pinned-tls", "relay"], name="minji",
                                 upgrade_interval=3.0, call_timeout=20)
        hyun = await lab.client("control", ["ws"], name="hyun")
        tl.clients = {"censored": minji, "control": hyun}
        await minji.signup(f"minji_{uuid.uuid4().hex[:4]}", "Minji", PASSWORD)
        await hyun.signup(f"hyun_{uuid.uuid4().hex[:4]}", "Hyun", PASSWORD)
        await minji.call("friend.add", handle=hyun.user["handle"] if hyun.user else "")
        tl.chat_id = (await minji.call("chat.open_direct", user_id=(hyun.user or {})["user_id"]))["chat_id"]
        for phase in PHASES:
            if phase == "blocked":
                tl.say(f"BLOCK STARTS: {scenario}")
                await asyncio.to_thread(lab.apply, scenario, **(params or {}))
                await asyncio.sleep(1.0)
            elif phase == "lifted":
                tl.say(f"BLOCK LIFTED: {scenario}")
                await asyncio.to_thread(lab.lift, scenario)
                await asyncio.sleep(hold_s)
            else:
                tl.say("baseline: before any block")
            await run_checks(tl)
            await chat(tl)
            if phase == "blocked":
                events = lab.censor_events()
                if events:
                    kinds = sorted({e["action"] for e in events})
                    tl.say(f"censor log: {len(events)} actions ({', '.join(kinds)})", 1)
            for hook in HOOKS:
                await hook(tl, phase)
        for rc in tl.clients.values():
            await rc.close()
        return 0
    finally:
        tl.say("teardown: stopping processes, deleting namespaces, nft tables and qdiscs")
        await asyncio.to_thread(lab.close)
        tl.say("done")
