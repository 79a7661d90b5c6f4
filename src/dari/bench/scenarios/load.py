"""A bounded closed loop (optionally paced to an offered rate) shared by the throughput scenarios."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dari.bench.runner import Context
from dari.bench.track import Tracker
from dari.bench.wire import BenchError, Conn

TEXT = b"benchmark message: the quick brown fox jumps over the lazy dog"


async def run_load(ctx: Context, tracker: Tracker, senders: list[tuple[Conn, int]], *, duration: float,
                   warmup: float, window: int, rate: float, text: bytes = TEXT,
                   before_drain: Callable[[], Awaitable[None]] | None = None,
                   until: Callable[[], Awaitable[bool]] | None = None, max_extra: float = 60.0) -> dict[str, Any]:
    """Each (conn, chat) sender keeps `window` messages in flight (at `rate` msgs/s overall if > 0)
    for warmup + duration seconds; figures cover the `duration` part only. Then `before_drain` (if
    given) runs, and the drain checks that every acknowledged message reached every member once.
    With `until`, the measured part goes on past `duration` (at most `max_extra` s) until it is true."""
    stop = False
    workers = len(senders) * window
    period = workers / rate if rate > 0 else 0.0

    async def worker(conn: Conn, chat_id: int, slot: int) -> None:
        n = 0
        next_t = time.perf_counter() + random.random() * period
        while not stop:
            if period:
                next_t += period
                delay = next_t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if stop:
                        return
            cid = f"{conn.index}.{slot}.{n}"
            n += 1
            t0 = time.perf_counter()
            tracker.sent_at[cid] = t0
            try:
                ref = await conn.send_message(chat_id, cid, text)
            except BenchError as exc:
                tracker.errors += 1
                if exc.code in ("rate_limited", "unavailable"):
                    await asyncio.sleep(0.1)
                continue
            except ConnectionError:
                tracker.errors += 1
                return
            tracker.on_ack(ref, t0)

    tasks = [asyncio.create_task(worker(c, chat, s)) for c, chat in senders for s in range(window)]
    meter = ctx.meter()
    await asyncio.sleep(warmup)
    tracker.begin()
    meter.start()
    t0 = time.perf_counter()
    peak_kb = await _peak_rss_kb(ctx, duration)
    if until is not None:
        extra_end = time.perf_counter() + max_extra
        while time.perf_counter() < extra_end and not await until():
            peak_kb = max(peak_kb, await _peak_rss_kb(ctx, 0.5))
    tracker.measuring = False
    seconds = time.perf_counter() - t0
    usage = meter.stop()
    stop = True
    _, slow = await asyncio.wait(tasks, timeout=30)
    for t in slow:
        t.cancel()
    if before_drain is not None:
        await before_drain()
    drained = await tracker.drain(15.0)
    out = {**tracker.summary(seconds), **usage, "seconds": round(seconds, 2), "in_flight": workers,
           "drain_s": round(drained, 2)}
    if peak_kb:
        out["server_rss_peak_mb"] = round(peak_kb / 1024, 1)
    if rate > 0:
        out["offered_per_s"] = rate
    out["disconnects"] = sum(c.unexpected_closes for c in tracker.conns())
    return out


async def _peak_rss_kb(ctx: Context, duration: float, every: float = 0.25) -> int:
    """Sleep `duration` seconds while sampling the server's resident memory; the highest reading."""
    end = time.perf_counter() + duration
    peak = 0
    while True:
        if ctx.server is not None:
            peak = max(peak, ctx.server.rss_kb())
        left = end - time.perf_counter()
        if left <= 0:
            return peak
        await asyncio.sleep(min(every, left))
