"""A bounded closed loop (optionally paced to an offered rate) shared by the throughput scenarios."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.track import Tracker
from dari.bench.wire import BenchError, Conn

TEXT = b"benchmark message: the quick brown fox jumps over the lazy dog"


async def run_load(ctx: Context, tracker: Tracker, senders: list[tuple[Conn, int]], *, duration: float,
                   warmup: float, window: int, rate: float) -> dict[str, Any]:
    """Each (conn, chat) sender keeps `window` messages in flight (at `rate` msgs/s overall if > 0)
    for warmup + duration seconds; figures cover the `duration` part only. Then drains and checks."""
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
                ref = await conn.send_message(chat_id, cid, TEXT)
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
    await asyncio.sleep(duration)
    tracker.measuring = False
    seconds = time.perf_counter() - t0
    usage = meter.stop()
    stop = True
    _, slow = await asyncio.wait(tasks, timeout=30)
    for t in slow:
        t.cancel()
    drained = await tracker.drain(15.0)
    out = {**tracker.summary(seconds), **usage, "seconds": round(seconds, 2), "in_flight": workers,
           "drain_s": round(drained, 2)}
    if rate > 0:
        out["offered_per_s"] = rate
    out["disconnects"] = sum(c.unexpected_closes for c in tracker.conns())
    return out
