"""dm-throughput: online users in 1:1 pairs, everyone sending to their partner with a bounded window."""

from __future__ import annotations

import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.load import run_load
from dari.bench.track import Tracker
from dari.bench.wire import Conn, close_all, connect_all, gather_limited, open_direct, signup_many


async def dm_throughput(ctx: Context) -> dict[str, Any]:
    users = ctx.cfg.users or ctx.pick(1000, 100)
    users -= users % 2
    duration = ctx.cfg.duration or ctx.pick(20.0, 3.0)
    t0 = time.perf_counter()
    people = await signup_many(ctx.http, ctx.base, users, ctx.prefix)
    chats = await gather_limited(users // 2, 32, lambda i: open_direct(ctx.http, ctx.base, people[2 * i],
                                                                       people[2 * i + 1], e2ee=ctx.cfg.e2ee))
    conns = [Conn(i, u) for i, u in enumerate(people)]
    if ctx.cfg.e2ee:
        from dari.bench.e2ee import BenchCrypto

        for c in conns:
            c.crypto = BenchCrypto(c.user.user_id, c.index + 1)
        for i, chat in enumerate(chats):
            a, b = conns[2 * i].crypto, conns[2 * i + 1].crypto
            a.share_with(chat, [b])
            b.share_with(chat, [a])
    tracker = Tracker()
    senders: list[tuple[Conn, int]] = []
    for i, chat in enumerate(chats):
        pair = conns[2 * i: 2 * i + 2]
        tracker.members[chat] = pair
        senders += [(c, chat) for c in pair]
    tracker.attach(conns)
    await connect_all(ctx.http, ctx.ws_url, conns)
    setup = time.perf_counter() - t0
    ctx.log(f"{users} users in {users // 2} pairs online after {setup:.1f} s; sending for {duration:.0f} s")
    out = await run_load(ctx, tracker, senders, duration=duration, warmup=ctx.pick(2.0, 0.5),
                         window=ctx.cfg.window, rate=ctx.cfg.rate)
    await close_all(conns)
    extra = {"e2ee": True, "decrypted": sum(c.crypto.decrypted for c in conns),
             "decrypt_failures": sum(c.crypto.failures for c in conns)} if ctx.cfg.e2ee else {}
    return {**out, "connections": users, "setup_s": round(setup, 1), **extra}
