"""`dari bench failover`: time from a route cut to the first message delivered through the next
route, over repeated cuts, with the SDK's route manager doing the work.

Two kinds of cut, both on loopback through a forwarder that plays the censor: "reset" (open
connections reset, new ones refused: what a firewall's reject does) and "blackhole" (packets
vanish, connections stay open: what a drop rule does; only silence tells the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

from dari.bench.proc import LocalServer
from dari.client import Client
from dari.client.links import Route

PASSWORD = "bench failover password"


class Censor:
    """A TCP forwarder to the server that can reset or blackhole what crosses it."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.mode = "open"
        self.conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.conns |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if self.mode == "blackhole":
                        continue
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.conns -= {writer, up_w}

    def cut(self, mode: str) -> None:
        self.mode = mode
        if mode == "reset":
            for w in list(self.conns):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self.conns.clear()

    def restore(self) -> None:
        self.mode = "open"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.conns):
            with contextlib.suppress(Exception):
                w.transport.abort()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return False


async def run_mode(url: str, port: int, mode: str, cuts: int, stall_s: float | None) -> dict[str, Any]:
    censor = Censor(port)
    await censor.start()
    routes = [Route("ws", f"http://127.0.0.1:{censor.port}", name="direct"),
              Route("longpoll", url, name="long-poll")]
    alice = Client(url, routes=routes, upgrade_interval=1.0)
    if stall_s is not None:
        alice.stall_s = stall_s
    stall_s = alice.stall_s
    bob = Client(url)
    times: list[float] = []
    sent: list[str] = []
    try:
        await alice.signup(f"fo_a_{uuid.uuid4().hex[:8]}", "A", PASSWORD)
        await bob.signup(f"fo_b_{uuid.uuid4().hex[:8]}", "B", PASSWORD)
        chat = (await alice.call("chat.open_direct", user_id=bob.user["user_id"]))["chat_id"]  # type: ignore[index]
        for i in range(cuts):
            if not await _wait(lambda: alice.route == "direct", 30):
                raise RuntimeError("the client did not come back to the direct route")
            bob.drain_events()
            text = f"{mode} cut {i}"
            t0 = time.monotonic()
            censor.cut(mode)
            send = asyncio.create_task(alice.send_message(chat, text))
            while True:
                ev = await bob.next_event("message.new", timeout=60)
                if ev.payload["text"] == text:
                    times.append((time.monotonic() - t0) * 1000)
                    break
            await send
            sent.append(text)
            censor.restore()
        history = await bob.call("message.history", chat_id=chat, limit=200)
        stored = [m["text"] for m in history["messages"] if m["kind"] == "text"]
        lost = sum(1 for t in sent if t not in stored)
        duplicated = len(stored) - len(set(stored))
    finally:
        await alice.close()
        await bob.close()
        await censor.close()
    return {"mode": mode, "cuts": cuts, "p50_ms": round(_pct(times, 0.5), 1), "p99_ms": round(_pct(times, 0.99), 1),
            "max_ms": round(max(times), 1) if times else None,
            "mean_ms": round(statistics.fmean(times), 1) if times else None,
            "lost": lost, "duplicated": duplicated, "stall_s": stall_s}


async def run_failover(cuts: int = 10, stall_s: float | None = None, server_url: str | None = None
                       ) -> dict[str, Any]:
    server = None
    if server_url is None:
        server = LocalServer()
        await asyncio.to_thread(server.start)
        url, port = server.url, server.port
    else:
        url = server_url.rstrip("/")
        port = int(url.rsplit(":", 1)[1])
    try:
        results = {}
        for mode in ("reset", "blackhole"):
            results[f"failover-{mode}"] = await run_mode(url, port, mode, cuts, stall_s)
        return {"scenarios": results}
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
