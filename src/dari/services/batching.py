"""Calls made in the same event-loop tick answered by one storage call over all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dari.protocol.errors import DariError

K = TypeVar("K")
R = TypeVar("R")


class TickBatcher(Generic[K, R]):
    """`await batcher(key)` queues the key; at the end of the loop tick `read` runs once for every key
    queued (at most `limit` per call) and each caller gets its own entry of the returned list: a
    result, or the DariError that is that caller's answer. A reconnect storm of a thousand sessions
    then costs a few reader-thread hops instead of a thousand."""

    def __init__(self, read: Callable[[list[K]], Awaitable[list[R | DariError]]], limit: int = 1000) -> None:
        self._read = read
        self._limit = limit
        self._queue: list[tuple[K, asyncio.Future[R]]] = []
        self._running: set[asyncio.Future[None]] = set()

    async def __call__(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((key, fut))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        while self._queue:
            jobs, self._queue = self._queue[:self._limit], self._queue[self._limit:]
            task = asyncio.ensure_future(self._answer(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, jobs: list[tuple[K, asyncio.Future[R]]]) -> None:
        try:
            results = await self._read([key for key, _ in jobs])
        except BaseException as exc:
            for _, fut in jobs:
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(exc)
                    else:
                        fut.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), res in zip(jobs, results, strict=True):
            if not fut.done():
                if isinstance(res, DariError):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
