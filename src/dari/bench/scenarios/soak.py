"""soak: mixed chat for a long time (10 minutes by default) at a steady offered rate.

Members of small groups and 1:1 pairs send messages, type, read, look up presence and now and then
drop and resume. Server memory is sampled throughout: it must stay flat (a leak shows as growth
from the first fifth of the run to the end), with no errors, nothing lost and nothing duplicated.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.load import TEXT
from dari.bench.track import Tracker
from dari.bench.wire import (
    BenchError,
    Conn,
    close_all,
    connect_all,
    create_group,
    gather_limited,
    open_direct,
    signup_many,
)

GROUP = 10
# Share of actions: send, typing, read, presence lookup, drop-and-resume (the rest).
MIX = ((0.50, "send"), (0.20, "typing"), (0.15, "read"), (0.10, "presence"), (0.05, "reconnect"))


def _pick_action(r: float) -> str:
    for share, name in MIX:
        if r < share:
            return name
        r -= share
    return MIX[-1][1]


async def soak(ctx: Context) -> dict[str, Any]:
    users = ctx.cfg.users or ctx.pick(200, 30)
    users -= users % GROUP
    duration = ctx.cfg.duration or ctx.pick(600.0, 8.0)
    rate = ctx.cfg.rate or ctx.pick(200.0, 60.0)
    t0 = time.perf_counter()
    people = await signup_many(ctx.http, ctx.base, users, ctx.prefix)
    groups = [people[g:g + GROUP] for g in range(0, users, GROUP)]
    group_chats = await gather_limited(len(groups), 8, lambda g: create_group(
        ctx.http, ctx.base, groups[g][0], groups[g], f"soak group {g}"))
    pair_chats = await gather_limited(users // 2, 32, lambda i: open_direct(ctx.http, ctx.base, people[2 * i],
                                                                            people[2 * i + 1]))
    conns = [Conn(i, u) for i, u in enumerate(people)]
    tracker = Tracker()
    chats_of: dict[int, list[int]] = {c.index: [] for c in conns}
    for g, chat in enumerate(group_chats):
        members = conns[g * GROUP:(g + 1) * GROUP]
        tracker.members[chat] = members
        for c in members:
            chats_of[c.index].append(chat)
    for i, chat in enumerate(pair_chats):
        tracker.members[chat] = conns[2 * i:2 * i + 2]
        for c in tracker.members[chat]:
            chats_of[c.index].append(chat)
    tracker.attach(conns)
    await connect_all(ctx.http, ctx.ws_url, conns)
    setup = time.perf_counter() - t0
    ctx.log(f"{users} users in {len(groups)} groups and {len(pair_chats)} pairs online after {setup:.1f} s;"
            f" {rate:.0f} actions/s for {duration:.0f} s")

    counts = dict.fromkeys((name for _, name in MIX), 0)
    errors: dict[str, int] = {}
    busy: set[int] = set()
    stop = False
    n = 0

    async def act(conn: Conn) -> None:
        nonlocal n
        action = _pick_action(random.random())
        chat = random.choice(chats_of[conn.index])
        if action == "send":
            n += 1
            cid = f"soak.{n}"
            sent = time.perf_counter()
            tracker.sent_at[cid] = sent
            tracker.on_ack(await conn.send_message(chat, cid, TEXT), sent)
        elif action == "typing":
            await conn.call("typing.set", {"chat_id": chat, "typing": True})
        elif action == "read":
            seen = conn.received.get(chat)
            last = seen.rfind(b"\x01") if seen is not None else -1
            if last > 0:
                await conn.call("chat.read", {"chat_id": chat, "seq": last})
        elif action == "presence":
            ids = [random.choice(people).user_id for _ in range(5)]
            await conn.call("presence.get", {"user_ids": ids})
        else:
            await conn.close()
            await conn.open(ctx.http, ctx.ws_url, resume=True)
        counts[action] += 1

    workers = 16
    period = workers / rate

    async def worker() -> None:
        next_t = time.perf_counter() + random.random() * period
        while not stop:
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = random.choice(conns)
            if conn.index in busy or not conn.is_open:
                continue
            busy.add(conn.index)
            try:
                await act(conn)
            except (BenchError, ConnectionError) as exc:
                key = exc.code if isinstance(exc, BenchError) else "connection"
                errors[key] = errors.get(key, 0) + 1
            finally:
                busy.discard(conn.index)

    every = max(1.0, duration / 120)
    samples: list[tuple[float, int]] = []
    meter = ctx.meter()
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    tracker.begin()
    meter.start()
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < duration:
        if ctx.server is not None:
            samples.append((round(elapsed, 1), ctx.server.rss_kb()))
        await asyncio.sleep(min(every, max(0.0, duration - elapsed)))
    seconds = time.perf_counter() - start
    tracker.measuring = False
    usage = meter.stop()
    stop = True
    await asyncio.wait(tasks, timeout=30)
    drained = await tracker.drain(15.0)
    out: dict[str, Any] = {**tracker.summary(seconds), **usage, "connections": users, "seconds": round(seconds, 1),
                           "actions": counts, "errors": sum(errors.values()), "error_codes": errors,
                           "drain_s": round(drained, 2), "setup_s": round(setup, 1)}
    out["actions_per_s"] = round(sum(counts.values()) / seconds, 1)
    if samples:
        settled = samples[len(samples) // 5][1]   # after the first fifth: caches and pools have filled
        end = samples[-1][1]
        out["server_rss_settled_mb"] = round(settled / 1024, 1)
        out["server_rss_end_mb"] = round(end / 1024, 1)
        out["server_rss_max_mb"] = round(max(kb for _, kb in samples) / 1024, 1)
        out["rss_growth_pct"] = round(100 * (end - settled) / settled, 1)
        out["rss_samples"] = [(t, round(kb / 1024, 1)) for t, kb in samples]
    await close_all(conns)
    return out
