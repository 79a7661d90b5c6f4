"""Bookkeeping: who sent what when, which acknowledged message reached which member, CPU and memory."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from typing import Any

from dari.bench.proc import ProcStat
from dari.bench.wire import Conn, MsgRef

# Every scenario entry carries these keys; None where a figure does not apply.
RESULT_KEYS = ("messages_per_s", "deliveries_per_s", "resumes_per_s", "connections", "rss_kb_per_connection",
               "p50_ms", "p99_ms", "lost", "duplicated", "server_cpu_pct", "server_rss_mb", "client_cpu_pct")


def new_result() -> dict[str, Any]:
    return dict.fromkeys(RESULT_KEYS)


def percentile_ms(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile of durations in seconds, in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[rank] * 1000, 3)


class Meter:
    """CPU of the server (from /proc, all threads) and of this load generator over a measured window."""

    def __init__(self, server: ProcStat | None) -> None:
        self.server = server
        self._t0 = self._server0 = self._client0 = 0.0

    @staticmethod
    def _client_cpu() -> float:
        t = os.times()
        return t.user + t.system

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._client0 = self._client_cpu()
        self._server0 = self.server.cpu_s() if self.server else 0.0

    def stop(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        out: dict[str, Any] = {
            "client_cpu_pct": round(100 * (self._client_cpu() - self._client0) / wall, 1),
            "client_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if self.server:
            out["server_cpu_pct"] = round(100 * (self.server.cpu_s() - self._server0) / wall, 1)
            out["server_rss_mb"] = round(self.server.rss_kb() / 1024, 1)
        return out


class Tracker:
    """Message accounting for one scenario.

    Every acknowledged message is checked against every member connection of its chat, the sender's
    own included (its devices get the event too): missing is lost, more than once is duplicated.
    Latency is send→deliver to members other than the sender, and send→durable ack.
    """

    def __init__(self) -> None:
        self.members: dict[int, list[Conn]] = {}
        self.sent_at: dict[str, float] = {}
        self.acked: list[tuple[int, int]] = []
        self.deliver_lat: list[float] = []
        self.ack_lat: list[float] = []
        self.measuring = False
        self.acks = 0
        self.deliveries = 0
        self.errors = 0
        self.ignored: set[int] = set()   # connections left out of the latency figures (still checked for loss)

    def attach(self, conns: list[Conn]) -> None:
        for c in conns:
            c.on_message = self.on_message

    def on_message(self, conn: Conn, ref: MsgRef, now: float) -> None:
        if ref.sender_id == conn.user.user_id or not self.measuring or conn.index in self.ignored:
            return
        self.deliveries += 1
        t0 = self.sent_at.get(ref.client_id)
        if t0 is not None:
            self.deliver_lat.append(now - t0)

    def on_ack(self, ref: MsgRef, t0: float) -> None:
        self.acked.append((ref.chat_id, ref.seq))
        if self.measuring:
            self.acks += 1
            self.ack_lat.append(time.perf_counter() - t0)

    def begin(self) -> None:
        self.measuring = True
        self.acks = self.deliveries = 0
        self.deliver_lat.clear()
        self.ack_lat.clear()

    def missing(self) -> int:
        return sum(1 for chat_id, seq in self.acked for c in self.members[chat_id] if not c.got(chat_id, seq))

    def conns(self) -> list[Conn]:
        return list({id(c): c for cs in self.members.values() for c in cs}.values())

    def duplicated(self) -> int:
        return sum(c.duplicates for c in self.conns())

    async def drain(self, timeout: float) -> float:
        """Wait until every acknowledged message reached every member, or `timeout`; seconds waited."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if not self.missing():
                break
            await asyncio.sleep(0.25)
        return time.perf_counter() - t0

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "messages_per_s": round(self.acks / seconds, 1),
            "deliveries_per_s": round(self.deliveries / seconds, 1),
            "p50_ms": percentile_ms(self.deliver_lat, 50),
            "p99_ms": percentile_ms(self.deliver_lat, 99),
            "ack_p50_ms": percentile_ms(self.ack_lat, 50),
            "ack_p99_ms": percentile_ms(self.ack_lat, 99),
            "acked_total": len(self.acked),
            "lost": self.missing(),
            "duplicated": self.duplicated(),
            "errors": self.errors,
        }
