"""Calls in the censorship lab: a caller in the censored region, the person called in the control
region, coturn beside the server, and the `udp-block` scenario dropping every UDP packet of the
censored region but DNS. The clients are not told to relay: like any client they try the direct
UDP path first and find the TURN-over-TCP one, which is what a person on such a network gets.

`run_lab_calls(runs)` builds the lab and returns the figures; `python -m dari.bench.calls_lab ROLE
CONFIG` is one side of the calls, run inside a lab namespace. Each caller line is JSON:
{setup_ms, connected_ms, paths, sent_frames_heard}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any

from dari.protocol.errors import DariError

SECRET = "lab-" + uuid.uuid4().hex
TURN_TCP_PORT, TURN_TLS_PORT = 3478, 5349
PASSWORD = "lab call password"


async def _caller(cfg: dict[str, Any]) -> None:
    from dari.client import Client
    from dari.client.calls import CallAgent, wait_connected

    async with Client(cfg["url"], token=cfg["token"]) as client:
        await client.connect()
        await client.wait_live()
        for _ in range(cfg["runs"]):
            agent = CallAgent(client)
            try:
                t0 = time.monotonic()
                await agent.place(cfg["chat_id"])
                await wait_connected(agent, 60)
                connected = time.monotonic() - t0
                await asyncio.wait_for(agent.first_audio.wait(), 60)
                setup = time.monotonic() - t0
                paths = agent.paths()
                await asyncio.sleep(cfg.get("talk_s", 0.5))
                heard = agent.received["audio"]
                await agent.hangup()
                out: dict[str, Any] = {"setup_ms": round(setup * 1000, 1), "connected_ms": round(connected * 1000, 1),
                                       "paths": paths, "frames": heard}
            except (DariError, TimeoutError) as exc:
                # A failed call is a result too: the bench counts it, the test fails on it.
                with contextlib.suppress(DariError):
                    await agent.hangup()
                out = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                await agent.close()
            print(json.dumps(out), flush=True)
            await asyncio.sleep(0.5)   # the callee makes its next agent


async def _callee(cfg: dict[str, Any]) -> None:
    from dari.client import Client
    from dari.client.calls import CallAgent

    async with Client(cfg["url"], token=cfg["token"]) as client:
        await client.connect()
        await client.wait_live()
        print(json.dumps({"ready": True}), flush=True)
        for _ in range(cfg["runs"]):
            agent = CallAgent(client)
            try:
                await agent.answer(await agent.wait_ringing(timeout=120))
                await asyncio.wait_for(agent.connected.wait(), 120)
                paths = agent.paths()
                await asyncio.wait_for(agent.ended.wait(), 120)
                print(json.dumps({"frames": agent.received["audio"], "paths": paths}), flush=True)
            finally:
                await agent.close()


def _signup_code(url: str) -> str:
    return f"""
import asyncio, json, uuid
from dari.client import Client
async def main():
    out = []
    for name in ("alice", "bob"):
        c = Client({url!r})
        await c.signup(name + "_" + uuid.uuid4().hex[:6], name.title(), {PASSWORD!r})
        out.append(c)
    chat = await out[0].call("chat.open_direct", user_id=out[1].user["user_id"])
    print(json.dumps({{"tokens": [c.token for c in out], "chat_id": chat["chat_id"]}}))
    for c in out:
        await c.close()
asyncio.run(main())
"""


async def run_lab_calls(runs: int, *, scenarios: tuple[str | None, ...] = (None, "udp-block"),
                        log: Any = None) -> dict[str, Any]:
    """Build a lab, start dari and coturn in its server namespace, and time `runs` calls from the
    censored region to the control region under each scenario in turn (None: no block)."""
    from dari.bench.turn import turn_argv
    from dari.lab.lab import Lab
    from dari.lab.topology import SERVER_IP

    say = log or (lambda _text: None)
    lab = Lab()
    lab.start()
    try:
        argv = turn_argv(lab.workdir / "turn", SECRET, host=SERVER_IP, tcp_port=TURN_TCP_PORT, tls_port=TURN_TLS_PORT,
                         udp=True, verbose=True)
        lab.popen("server", argv, name="turn")
        lab.wait_port("server", SERVER_IP, TURN_TCP_PORT, process="turn")
        # Only the TCP URL: aiortc gathers every candidate before it offers, and a UDP TURN URL the
        # network drops would cost it the whole STUN timeout first (browsers trickle and do not wait).
        lab.start_server(env={"DARI_TURN_URLS": f"turn:{SERVER_IP}:{TURN_TCP_PORT}?transport=tcp",
                              "DARI_TURN_SECRET": SECRET})
        made = lab.python("control", _signup_code(lab.url), timeout=60)
        if made.returncode != 0:
            raise RuntimeError(f"lab sign-up failed: {made.stderr[-2000:]}")
        setup = json.loads(made.stdout.strip().splitlines()[-1])
        report: dict[str, Any] = {"runs": runs, "phases": {}}
        for scenario in scenarios:
            if scenario:
                lab.apply(scenario)
            name = scenario or "no-block"
            results = await _phase(lab, setup, runs, lambda r, i, n=name: say(
                f"lab {n} {i}/{runs}: {r['error']}" if "error" in r else
                f"lab {n} {i}/{runs}: first audio {r['setup_ms']:.0f} ms, caller path {'/'.join(r['paths'])},"
                f" callee path {'/'.join(r['callee_paths'])}"))
            report["phases"][name] = _summary(results)
            if scenario:
                lab.lift(scenario)
        log_path = lab.workdir / "turn.log"
        turn_log = log_path.read_text(errors="replace") if log_path.exists() else ""
        report["turn_allocations"] = turn_log.count("ALLOCATE processed, success")
        return report
    finally:
        lab.close()


async def _phase(lab: Any, setup: dict[str, Any], runs: int, say: Any) -> list[dict[str, Any]]:
    common = {"url": lab.url, "chat_id": setup["chat_id"], "runs": runs}
    callee = await _spawn(lab, "control", "callee", {**common, "token": setup["tokens"][1]})
    results: list[dict[str, Any]] = []
    try:
        line = await asyncio.wait_for(_line(callee), 60)
        assert line.get("ready"), line
        caller = await _spawn(lab, "censored", "caller", {**common, "token": setup["tokens"][0]})
        try:
            for i in range(runs):
                r = await asyncio.wait_for(_line(caller), 180)
                if "error" in r:
                    results.append(r)
                    say(r, i + 1)
                    # The callee reports a call it answered; one that never rang leaves no line.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_line(callee), 5)
                    continue
                heard = await asyncio.wait_for(_line(callee), 60)
                r["callee_frames"], r["callee_paths"] = heard["frames"], heard["paths"]
                results.append(r)
                say(r, i + 1)
        finally:
            if caller.returncode is None:
                caller.kill()
            await caller.wait()
    finally:
        if callee.returncode is None:
            callee.kill()
        await callee.wait()
    return results


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    from dari.bench.track import percentile_ms

    failed = [r["error"] for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    setups = [r["setup_ms"] / 1000 for r in results]
    return {"runs": len(results), "failed": len(failed), "errors": failed[:3],
            "p50_ms": percentile_ms(setups, 50), "p99_ms": percentile_ms(setups, 99),
            "max_ms": round(max(setups) * 1000, 1) if setups else None,
            "caller_paths": sorted({p for r in results for p in r["paths"]}),
            "callee_paths": sorted({p for r in results for p in r["callee_paths"]}),
            "min_frames": min((min(r["frames"], r["callee_frames"]) for r in results), default=0)}


async def _spawn(lab: Any, ns: str, role: str, cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    log_fd = os.open(lab.workdir / f"call-{role}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            *lab._exec_argv(ns, [sys.executable, "-m", "dari.bench.calls_lab", role, json.dumps(cfg)]),
            stdout=asyncio.subprocess.PIPE, stderr=log_fd)
    finally:
        os.close(log_fd)   # the child has its own copy


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    if not raw:
        raise RuntimeError(f"the lab call process exited ({proc.returncode})")
    return dict(json.loads(raw))


def main() -> None:
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run(_caller(cfg) if role == "caller" else _callee(cfg))


if __name__ == "__main__":
    main()
