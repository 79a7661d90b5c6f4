"""reconnect-storm: every client drops at once, messages arrive while they are away, and all of them
reconnect together and resume from their cursors. Every acknowledged message must reach every member
connection exactly once, whether live, replayed, or arriving during the replay."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.load import TEXT
from dari.bench.track import Tracker, percentile_ms
from dari.bench.wire import (
    BenchError,
    Conn,
    MsgRef,
    User,
    close_all,
    connect_all,
    gather_limited,
    open_direct,
    rest,
    signup_many,
)


async def _rest_send(ctx: Context, tracker: Tracker, user: User, chat: int, cid: str) -> None:
    t0 = time.perf_counter()
    res = await rest(ctx.http, ctx.base, "message.send",
                     {"chat_id": chat, "client_id": cid, "text": TEXT.decode()}, user.token)
    tracker.on_ack(MsgRef(int(res["chat_id"]), int(res["seq"])), t0)


async def _away(ctx: Context, tracker: Tracker, people: list[User], chat_of: dict[int, int], r: int,
                k: int) -> None:
    user = people[k % len(people)]
    await _rest_send(ctx, tracker, user, chat_of[user.index], f"away.{r}.{k}")


async def reconnect_storm(ctx: Context) -> dict[str, Any]:
    users = ctx.cfg.users or ctx.pick(1000, 100)
    users -= users % 2
    rounds = ctx.pick(3, 1)
    missed = ctx.pick(3, 2)  # messages per user sent while everyone is away
    t0 = time.perf_counter()
    people = await signup_many(ctx.http, ctx.base, users, ctx.prefix)
    chats = await gather_limited(users // 2, 32, lambda i: open_direct(ctx.http, ctx.base, people[2 * i],
                                                                       people[2 * i + 1]))
    chat_of = {u.index: chats[u.index // 2] for u in people}
    conns = [Conn(i, u) for i, u in enumerate(people)]
    tracker = Tracker()
    for i, chat in enumerate(chats):
        tracker.members[chat] = conns[2 * i: 2 * i + 2]
    tracker.attach(conns)
    # LeanWS connections: 1,000 simultaneous aiohttp client handshakes cost the load generator about as
    # much CPU as they cost the server, and both share the machine.
    await connect_all(ctx.http, ctx.ws_url, conns, lean=True)
    # Some live traffic first, so every cursor is somewhere in the middle of the log.
    refs = await asyncio.gather(*(c.send_message(chat_of[c.index], f"live.{c.index}", TEXT) for c in conns))
    for ref in refs:
        tracker.on_ack(ref, time.perf_counter())
    setup = time.perf_counter() - t0
    ctx.log(f"{users} users online after {setup:.1f} s; {rounds} storm(s)")
    resume_times: list[float] = []
    storm_s = 0.0
    meter = ctx.meter()
    usages: list[tuple[float, dict[str, Any]]] = []
    replayed_before = 0
    for r in range(rounds):
        await close_all(conns)
        await gather_limited(users * missed, 32, functools.partial(_away, ctx, tracker, people, chat_of, r))
        during = 0
        stop = asyncio.Event()

        async def trickle(r: int = r, stop: asyncio.Event = stop) -> None:
            # Live messages while everyone replays: they must be held and sent after the replay.
            nonlocal during
            while not stop.is_set():
                u = random.choice(people)
                with contextlib.suppress(BenchError):
                    await _rest_send(ctx, tracker, u, chat_of[u.index], f"storm.{r}.{during}")
                during += 1

        tricklers = [asyncio.create_task(trickle()) for _ in range(4)]
        meter.start()
        start = time.perf_counter()
        resume_times += await connect_all(ctx.http, ctx.ws_url, conns, resume=True, limit=users, lean=True)
        elapsed = time.perf_counter() - start
        storm_s += elapsed
        usages.append((elapsed, meter.stop()))
        stop.set()
        await asyncio.gather(*tricklers)
        replayed = sum(c.replayed for c in conns)
        ctx.log(f"storm {r + 1}: {users} resumes in {elapsed:.2f} s, {replayed - replayed_before} events"
                f" replayed, {during} sent during the storm")
        replayed_before = replayed
    await tracker.drain(15.0)
    usage = {key: round(sum(t * u[key] for t, u in usages) / storm_s, 1) for key in usages[0][1]}
    usage["server_rss_mb"] = usages[-1][1].get("server_rss_mb")
    usage["client_rss_mb"] = usages[-1][1]["client_rss_mb"]
    out: dict[str, Any] = {
        **usage,
        "resumes_per_s": round(users * rounds / storm_s, 1),
        "connections": users,
        "rounds": rounds,
        "p50_ms": percentile_ms(resume_times, 50),
        "p99_ms": percentile_ms(resume_times, 99),
        "replayed_events": replayed_before,
        "acked_total": len(tracker.acked),
        "lost": tracker.missing(),
        "duplicated": tracker.duplicated(),
        "setup_s": round(setup, 1),
        "away_sends_per_round": users * missed,
    }
    await close_all(conns)
    return out
