"""group-fanout: groups of online members; a few members of each group send, everyone receives."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.load import run_load
from dari.bench.track import Tracker
from dari.bench.wire import Conn, close_all, connect_all, create_group, gather_limited, signup_many


@dataclass
class Groups:
    conns: list[Conn]
    tracker: Tracker
    senders: list[tuple[Conn, int]]
    groups: int
    size: int
    senders_per_group: int
    setup_s: float


async def online_groups(ctx: Context) -> Groups:
    """`groups` group chats of `size` members each, every member online; the first few of each send."""
    size = ctx.pick(50, 10)
    groups = max(1, ctx.cfg.users // size) if ctx.cfg.users else ctx.pick(20, 4)
    senders_per_group = ctx.pick(5, 2)
    t0 = time.perf_counter()
    people = await signup_many(ctx.http, ctx.base, groups * size, ctx.prefix)
    members = [people[g * size:(g + 1) * size] for g in range(groups)]
    chats = await gather_limited(groups, 8, lambda g: create_group(ctx.http, ctx.base, members[g][0], members[g],
                                                                   f"bench group {g}"))
    conns = [Conn(i, u) for i, u in enumerate(people)]
    tracker = Tracker()
    senders: list[tuple[Conn, int]] = []
    for g, chat in enumerate(chats):
        group_conns = conns[g * size:(g + 1) * size]
        tracker.members[chat] = group_conns
        senders += [(c, chat) for c in group_conns[:senders_per_group]]
    tracker.attach(conns)
    await connect_all(ctx.http, ctx.ws_url, conns)
    return Groups(conns, tracker, senders, groups, size, senders_per_group, time.perf_counter() - t0)


async def group_fanout(ctx: Context) -> dict[str, Any]:
    duration = ctx.cfg.duration or ctx.pick(20.0, 3.0)
    g = await online_groups(ctx)
    ctx.log(f"{g.groups} groups x {g.size} members online after {g.setup_s:.1f} s; {g.senders_per_group} senders"
            f" per group for {duration:.0f} s")
    out = await run_load(ctx, g.tracker, g.senders, duration=duration, warmup=ctx.pick(2.0, 0.5),
                         window=ctx.cfg.window, rate=ctx.cfg.rate)
    await close_all(g.conns)
    return {**out, "connections": len(g.conns), "groups": g.groups, "members_per_group": g.size,
            "senders_per_group": g.senders_per_group, "setup_s": round(g.setup_s, 1)}
