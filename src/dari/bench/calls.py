"""`dari bench calls`: call setup time, direct and through TURN over TCP.

Two SDK devices (aiortc) on one local `dari serve` with Debian's coturn beside it (no UDP listener,
TURN over TCP and TLS, dari-signed credentials, as in docs/operations.md). Each run: the caller sends
`call.start`; the callee answers as soon as its `call.ringing` arrives; the setup time is from
`call.start` until the caller receives the callee's first audio frame. That covers the server's
state changes, the signaling round trips over the WebSocket session, ICE (with candidate gathering:
aiortc gathers before it sends an offer or answer), DTLS and SRTP.

Modes: `direct` (host candidates win; TURN is offered but not needed) and `turn-tcp` (both sides
relay-only with only a `turn:…?transport=tcp` server: the path left on a network that drops UDP).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from dari.bench.proc import LocalServer
from dari.bench.track import percentile_ms
from dari.bench.turn import start_turn

SECRET = "bench-" + uuid.uuid4().hex
PASSWORD = "bench password 1"


async def _one(caller: Any, callee: Any, chat_id: int, relay: bool) -> tuple[float, float, list[str]]:
    from dari.client.calls import CallAgent

    a = CallAgent(caller, relay=relay)
    b = CallAgent(callee, relay=relay)
    try:
        t0 = time.monotonic()

        async def answer() -> None:
            await b.answer(await b.wait_ringing(timeout=30))

        answering = asyncio.ensure_future(answer())
        await a.place(chat_id)
        await asyncio.wait_for(a.connected.wait(), 30)
        t_connected = time.monotonic() - t0
        while a.received["audio"] == 0:
            await asyncio.sleep(0.002)
            if time.monotonic() - t0 > 30:
                raise TimeoutError("no audio within 30 s")
        t_audio = time.monotonic() - t0
        paths = a.paths()
        await answering
        await a.hangup()
        await asyncio.wait_for(b.ended.wait(), 10)
        return t_connected, t_audio, paths
    finally:
        await a.close()
        await b.close()


async def run_calls(runs: int, log: Any = None) -> dict[str, Any]:
    from dari.client import Client

    say = log or (lambda _text: None)
    work = Path(tempfile.mkdtemp(prefix="dari-bench-calls-"))
    turn = start_turn(work / "turn", SECRET)
    server = LocalServer({"DARI_TURN_URLS": turn.tcp_url, "DARI_TURN_SECRET": SECRET})
    await asyncio.to_thread(server.start)
    clients: list[Client] = []
    report: dict[str, Any] = {"runs": runs, "modes": {}}
    try:
        for name in ("alice", "bob"):
            c = Client(server.url)
            await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
            await c.wait_live()
            clients.append(c)
        caller, callee = clients
        assert callee.user is not None
        chat_id = int((await caller.call("chat.open_direct", user_id=callee.user["user_id"]))["chat_id"])
        for mode, relay in (("direct", False), ("turn-tcp", True)):
            connected: list[float] = []
            audio: list[float] = []
            paths: set[str] = set()
            await _one(caller, callee, chat_id, relay)   # warm-up: imports, codecs, first allocation
            for i in range(runs):
                conn_s, audio_s, used = await _one(caller, callee, chat_id, relay)
                paths.update(used)
                connected.append(conn_s)
                audio.append(audio_s)
                say(f"{mode} {i + 1}/{runs}: connected {conn_s * 1000:.0f} ms, first audio {audio_s * 1000:.0f} ms,"
                    f" path {'/'.join(used)}")
            report["modes"][mode] = {
                "runs": len(audio), "paths": sorted(paths),
                "p50_ms": percentile_ms(audio, 50), "p99_ms": percentile_ms(audio, 99),
                "max_ms": round(max(audio) * 1000, 1), "mean_ms": round(statistics.fmean(audio) * 1000, 1),
                "connected_p50_ms": percentile_ms(connected, 50), "connected_p99_ms": percentile_ms(connected, 99)}
    finally:
        for c in clients:
            await c.close()
        await asyncio.to_thread(server.stop)
        turn.stop()
    return report


def main(args: argparse.Namespace) -> int:
    """`dari bench calls`, called by bench/cli.py."""
    from dari.bench.machine import machine_info
    from dari.bench.turn import turnserver_path

    if turnserver_path() is None:
        print("dari bench calls needs Debian's coturn: apt-get install coturn", file=sys.stderr)
        return 2
    try:
        import aiortc  # noqa: F401
    except ImportError:
        print("dari bench calls needs aiortc: pip install 'dari[calls]'", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    report = asyncio.run(run_calls(max(1, args.runs if args.runs > 1 else (5 if args.quick else 50)), log))
    report["machine"] = machine_info()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="dari bench calls: call.start -> first audio frame at the caller (aiortc, loopback)")
        for col in ("mode", "path used", "runs", "p50 ms", "p99 ms", "max ms", "ICE+DTLS connected p50 / p99 ms"):
            table.add_column(col, justify="left" if col in ("mode", "path used") else "right")
        for mode, r in report["modes"].items():
            table.add_row(mode, "/".join(r["paths"]), str(r["runs"]), f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                          f"{r['max_ms']:.0f}",
                          f"{r['connected_p50_ms']:.0f} / {r['connected_p99_ms']:.0f}")
        Console().print(table)
    return 0
