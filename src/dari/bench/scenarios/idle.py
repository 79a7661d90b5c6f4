"""idle-connections: many authenticated, idle realtime connections; server memory per connection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dari.bench.runner import Context
from dari.bench.track import percentile_ms
from dari.bench.wire import Conn, close_all, connect_all, signup_many


async def idle_connections(ctx: Context) -> dict[str, Any]:
    n = ctx.cfg.connections or ctx.pick(10_000, 200)
    # Each connection authenticates with session.open on its own; accounts are shared round-robin
    # (several connections per device token) so that argon2 sign-ups do not dominate the run.
    accounts = min(n, ctx.cfg.users or ctx.pick(1000, 50))
    hold = ctx.cfg.duration or ctx.pick(5.0, 1.0)   # --duration: how long to hold them open
    people = await signup_many(ctx.http, ctx.base, accounts, ctx.prefix)
    conns = [Conn(i, people[i % accounts]) for i in range(n)]
    await asyncio.sleep(1.0)
    before_kb = ctx.server.rss_kb() if ctx.server else None
    meter = ctx.meter()
    meter.start()
    t0 = time.perf_counter()
    times = await connect_all(ctx.http, ctx.ws_url, conns, limit=ctx.pick(200, 50))
    connect_s = time.perf_counter() - t0
    usage = meter.stop()
    ctx.log(f"{n} connections live in {connect_s:.1f} s; holding {hold:.0f} s")
    await asyncio.sleep(hold)
    open_now = sum(1 for c in conns if c.is_open)
    out: dict[str, Any] = {**usage, "connections": open_now, "accounts": accounts,
                           "connects_per_s": round(n / connect_s, 1),
                           "connect_p50_ms": percentile_ms(times, 50), "connect_p99_ms": percentile_ms(times, 99),
                           "disconnects": sum(c.unexpected_closes for c in conns)}
    if ctx.server and before_kb is not None:
        after_kb = ctx.server.rss_kb()
        out["server_rss_mb"] = round(after_kb / 1024, 1)
        out["server_rss_before_mb"] = round(before_kb / 1024, 1)
        out["rss_kb_per_connection"] = round((after_kb - before_kb) / n, 2)
        out["rss_mb_per_1000_connections"] = round((after_kb - before_kb) / n * 1000 / 1024, 2)
    await close_all(conns)
    return out
