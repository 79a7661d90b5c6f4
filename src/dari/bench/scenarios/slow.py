"""slow-consumers: group fan-out in which 5% of the members stop reading their sockets.

The run without them is the baseline. Then the slow ones stop reading (a frozen phone, a client
stuck in slow work) while the others keep chatting: the server must keep its memory bounded by the
per-connection send buffer cap, drop the slow ones (close 4008 / reset), and keep delivering to the
others about as fast as before. Afterwards the slow ones read again or reconnect, resume from their
cursors, and must have every message exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from dari.bench.runner import Context
from dari.bench.scenarios.fanout import online_groups
from dari.bench.scenarios.load import run_load
from dari.bench.wire import Conn, close_all, small_buffer_session

# The server runs with this cap for the scenario (default 10,000 frames) so that a stopped reader
# is dropped within seconds at bench message rates (a member of a busy group gets ~25 frames/s here)
# rather than after minutes.
SEND_BUFFER_FRAMES = 100
# ...and with the kernel's send buffer per WebSocket capped too (otherwise Linux lets each one grow
# to 4 MB, which a stopped reader fills before the server's own cap is reached).
SOCKET_SEND_BUFFER = 64 * 1024
SLOW_SHARE = 0.05


async def _server_drops(ctx: Context) -> int | None:
    async with ctx.http.get(f"{ctx.base}/metrics") as resp:
        if resp.status != 200:
            return None
        found = re.search(r"^dari_slow_consumer_drops_total ([0-9.e+]+)$", await resp.text(), re.M)
    return int(float(found.group(1))) if found else None


def _pick_slow(conns: list[Conn], senders: set[int], share: float) -> list[Conn]:
    listeners = [c for c in conns if c.index not in senders]
    n = max(1, round(share * len(conns)))
    step = max(1, len(listeners) // n)
    return listeners[::step][:n]


async def slow_consumers(ctx: Context) -> dict[str, Any]:
    duration = ctx.cfg.duration or ctx.pick(15.0, 4.0)
    g = await online_groups(ctx)
    slow = _pick_slow(g.conns, {c.index for c, _ in g.senders}, SLOW_SHARE)
    # The slow ones read normally at first, over sockets with a small receive buffer (a phone on a
    # poor link); they are left out of the latency figures in both runs, which compare the others.
    slow_http = small_buffer_session()
    for c in slow:
        g.tracker.ignored.add(c.index)
        await c.close()
        await c.open(slow_http, ctx.ws_url, resume=True)
    ctx.log(f"{g.groups} groups x {g.size} members online after {g.setup_s:.1f} s; baseline for {duration:.0f} s")

    async def phase(before_drain: Callable[[], Awaitable[None]] | None = None,
                    until: Callable[[], Awaitable[bool]] | None = None) -> dict[str, Any]:
        return await run_load(ctx, g.tracker, g.senders, duration=duration, warmup=ctx.pick(2.0, 0.5),
                              window=ctx.cfg.window, rate=ctx.cfg.rate, before_drain=before_drain, until=until)

    base = await phase()

    drops_before = await _server_drops(ctx)
    for c in slow:
        c.pause()
    watchers: list[asyncio.Task[bool]] = []

    async def back_when_dropped(c: Conn) -> bool:
        await c.wait_closed()
        await c.open(slow_http, ctx.ws_url, resume=True)
        return True

    async def wake_slow() -> None:
        for c in slow:
            c.resume()
            watchers.append(asyncio.create_task(back_when_dropped(c)))

    ctx.log(f"{len(slow)} of {len(g.conns)} members stop reading; the rest chat for {duration:.0f} s")
    async def all_dropped() -> bool:
        # On a slower machine the stopped readers take longer to fill their buffers: keep the load on
        # (up to a minute more) until the server has dropped every one of them.
        now = await _server_drops(ctx)
        return now is None or drops_before is None or now - drops_before >= len(slow)

    loaded = await phase(wake_slow, all_dropped)
    reconnected = 0
    if watchers:   # the drain can end on the last replayed message, a moment before session.live
        await asyncio.wait(watchers, timeout=10)
    for w in watchers:
        if w.done():
            reconnected += 1 if not w.cancelled() and w.exception() is None and w.result() else 0
        else:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await w
    drops_after = await _server_drops(ctx)
    await close_all(g.conns)
    await slow_http.close()
    ratio = (loaded["p99_ms"] / base["p99_ms"]) if loaded.get("p99_ms") and base.get("p99_ms") else None
    return {
        **loaded,
        "connections": len(g.conns),
        "slow_clients": len(slow),
        "slow_dropped": (drops_after - drops_before) if drops_after is not None and drops_before is not None else None,
        "slow_reconnected": reconnected,
        "send_buffer_frames": SEND_BUFFER_FRAMES,
        "socket_send_buffer": SOCKET_SEND_BUFFER,
        "baseline_messages_per_s": base["messages_per_s"],
        "baseline_p50_ms": base["p50_ms"],
        "baseline_p99_ms": base["p99_ms"],
        "baseline_server_rss_peak_mb": base.get("server_rss_peak_mb"),
        "p99_vs_baseline": round(ratio, 2) if ratio is not None else None,
        # Lost/duplicated cover both phases: the drain after the slow phase checks every message.
        "lost": loaded["lost"],
        "duplicated": loaded["duplicated"],
        "groups": g.groups,
        "members_per_group": g.size,
        "setup_s": round(g.setup_s, 1),
    }
