"""dm-latency: two users, one message at a time; p50/p99 send→deliver (and send→durable ack)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.load import TEXT
from dari.bench.track import Tracker
from dari.bench.wire import Conn, MsgRef, close_all, connect_all, open_direct, signup_many

WARMUP_MESSAGES = 50


async def dm_latency(ctx: Context) -> dict[str, Any]:
    duration = ctx.cfg.duration or ctx.pick(10.0, 1.5)
    a, b = await signup_many(ctx.http, ctx.base, 2, ctx.prefix)
    chat = await open_direct(ctx.http, ctx.base, a, b)
    conns = [Conn(0, a), Conn(1, b)]
    await connect_all(ctx.http, ctx.ws_url, conns)
    tracker = Tracker()
    tracker.members[chat] = conns
    waiting: dict[str, asyncio.Future[float]] = {}

    def on_message(conn: Conn, ref: MsgRef, now: float) -> None:
        tracker.on_message(conn, ref, now)
        fut = waiting.pop(ref.client_id, None) if ref.sender_id != conn.user.user_id else None
        if fut is not None and not fut.done():
            fut.set_result(now)

    for c in conns:
        c.on_message = on_message
    loop = asyncio.get_running_loop()
    meter = ctx.meter()
    n = 0
    t_start = t_end = 0.0
    measured = 0
    while True:
        if n == WARMUP_MESSAGES:
            tracker.begin()
            meter.start()
            t_start = time.perf_counter()
            t_end = t_start + duration
        elif n > WARMUP_MESSAGES and time.perf_counter() >= t_end:
            break
        sender = conns[n % 2]
        cid = f"l{n}"
        delivered: asyncio.Future[float] = loop.create_future()
        waiting[cid] = delivered
        t0 = time.perf_counter()
        tracker.sent_at[cid] = t0
        ref = await sender.send_message(chat, cid, TEXT)
        tracker.on_ack(ref, t0)
        await asyncio.wait_for(delivered, 10)
        if n >= WARMUP_MESSAGES:
            measured += 1
        n += 1
    seconds = time.perf_counter() - t_start
    tracker.measuring = False
    usage = meter.stop()
    await tracker.drain(5.0)
    out = {**tracker.summary(seconds), **usage, "connections": 2, "messages": measured}
    await close_all(conns)
    return out
