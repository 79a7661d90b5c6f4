"""Token buckets for relay bandwidth: one per connection and one shared by all of them."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`rate` bytes per second with `burst` bytes of credit; rate 0 means unlimited.

    Takers go into debt instead of waiting for enough tokens, then sleep the debt off: a chunk
    larger than the burst still passes, and concurrent takers queue up in order of their debt.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate / 4, 16384.0)
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
