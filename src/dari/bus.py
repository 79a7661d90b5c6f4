"""The bus carries committed events and ephemeral signals to the connections of their recipients.

In one process it calls the local hub directly; RedisBus (bus_redis.py) also forwards them to every
other process. The hub is the server's connection registry; the bus knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from dari.protocol.frames import encode_event
from dari.storage.base import StoredEvent


class Hub(Protocol):
    def deliver(self, user_ids: Sequence[int], frame: bytes, cursor: int | None) -> None: ...

    def deliver_devices(self, device_ids: Sequence[int], frame: bytes) -> None: ...

    def drop_device(self, device_id: int) -> None: ...

    def online_users(self) -> set[int]: ...

    def online_devices(self) -> set[int]: ...

    def is_device_online(self, device_id: int) -> bool: ...


class Bus:
    shared = False      # True when several processes share this bus

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.namespace = "default"    # the cluster id of the database; set before start()
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        # Called when deliveries may have been missed (a shared bus came back after an outage):
        # the server then replays stored events to its sessions.
        self.on_recovered: Callable[[], None] | None = None
        # Set by the server for shared buses: the log head, and stored events [lo, hi) with their
        # recipients, to deliver in global order across processes.
        self.load_head: Callable[[], Awaitable[int]] | None = None
        self.load_range: Callable[[int, int], Awaitable[list[tuple[int, list[int], bytes]]]] | None = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, events: list[StoredEvent]) -> None:
        for ev in events:
            if ev.recipients:
                self.deliver_local(ev.recipients, ev.frame(), ev.id)

    def deliver_local(self, user_ids: Sequence[int], frame: bytes, cursor: int | None) -> None:
        if self.hub is not None:
            self.hub.deliver(user_ids, frame, cursor)
        if cursor is not None and self._waiters:
            for uid in user_ids:
                for fut in self._waiters.pop(uid, ()):
                    if not fut.done():
                        fut.set_result(None)

    async def wait_for(self, user_id: int, timeout: float) -> None:
        """Long-poll support: return when an event for `user_id` is published or `timeout` passes."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(user_id, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(user_id)
            if waiting and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._waiters[user_id]

    def ephemeral(self, user_ids: Sequence[int], event: str, payload: Any) -> None:
        if user_ids:
            self.deliver_local(user_ids, encode_event(event, payload), None)

    def ephemeral_devices(self, device_ids: Sequence[int], event: str, payload: Any) -> None:
        """A signal to some devices' sessions, not to their users' other devices; never stored (the
        device asks for what it missed, e.g. todevice.fetch, when it connects)."""
        if device_ids:
            self.deliver_local_devices(device_ids, encode_event(event, payload))

    def deliver_local_devices(self, device_ids: Sequence[int], frame: bytes) -> None:
        if self.hub is not None:
            self.hub.deliver_devices(device_ids, frame)

    def drop_device(self, device_id: int) -> None:
        if self.hub is not None:
            self.hub.drop_device(device_id)

    def is_online(self, user_id: int) -> bool:
        return self.hub is not None and user_id in self.hub.online_users()

    def is_device_online(self, device_id: int) -> bool:
        """Whether the device has a live session right now (on any process sharing this bus)."""
        return self.hub is not None and self.hub.is_device_online(device_id)

    async def allow(self, key: object, rate: float, burst: int) -> bool:
        """Shared rate limit across processes; the in-process bus leaves it to the local limiter."""
        return True


def open_bus(url: str) -> Bus:
    if url in ("", "memory", "memory://"):
        return Bus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dari.bus_redis import RedisBus

        return RedisBus(url)
    raise ValueError(f"unknown bus {url!r}: use memory or redis://HOST:PORT/DB")
