"""Redis bus: events and ephemeral signals reach devices connected to any process; presence and
rate-limit counters are shared. Redis holds nothing that cannot be lost: storage is the truth,
and after a Redis outage every process replays missed events to its sessions from storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dari.bus import Bus
from dari.protocol.frames import encode_event
from dari.storage.base import StoredEvent

log = logging.getLogger("dari.bus")
MAX_CONNECTIONS = 64   # per process

PRESENCE_EVERY_S = 2.0

# (kind, origin node, payload): "d" deliveries [(recipients, frame, cursor)], "x" drop device,
# "v" a frame for some devices (device ids, frame)
_Msg = tuple[str, str, Any]
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class RedisBus(Bus):
    shared = True

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.node = uuid.uuid4().hex[:12]
        self.redis: aioredis.Redis | None = None
        self.healthy = False
        self.failures = 0
        self.published = 0
        self.received = 0
        self._outbox: list[_Msg] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._online_elsewhere: set[int] = set()
        self._devices_elsewhere: set[int] = set()
        # Delivery in global event-id order (G4 across nodes): durable events wait here until every
        # lower id has been delivered or is known not to exist.
        self.next_id = 0
        self._pending: dict[int, tuple[list[int], bytes]] = {}
        self._gap_timer: asyncio.TimerHandle | None = None
        self._filling = False
        self.gap_fills = 0
        self._subscribed = asyncio.Event()

    def _key(self, name: str) -> str:
        return f"dari:{self.namespace}:{name}"

    async def start(self) -> None:
        # A bounded pool: every request does a rate-limit round trip, and an unbounded pool opens a
        # connection per concurrent request, so a reconnect storm of thousands of sessions ran Redis
        # out of clients (maxclients) and knocked the bus over for every process. Requests queue
        # for a connection instead (they pipeline, so a few dozen carry thousands per second).
        pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=MAX_CONNECTIONS, timeout=2,
                                                        socket_timeout=2, socket_connect_timeout=2,
                                                        health_check_interval=5)
        self.redis = aioredis.Redis(connection_pool=pool)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._send()),
                       asyncio.create_task(self._presence())]
        # Subscribe before reading the head: anything committed after the head arrives by the bus.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5)
        self.next_id = (await self.load_head() if self.load_head else 0) + 1

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.delete(self._key(f"online:{self.node}"))
                await self.redis.srem(self._key("nodes"), self.node)
            await self.redis.aclose()
            await self.redis.connection_pool.disconnect()   # ours (passed in), so aclose leaves it open

    # -- outgoing: deliver here now, tell the other processes in batches ----------------------
    def publish(self, events: list[StoredEvent]) -> None:
        batch: list[tuple[list[int], bytes, int | None]] = [(list(ev.recipients), ev.frame(), ev.id)
                                                            for ev in events]
        if batch:
            self._queue(("d", self.node, batch))
            self._sequence(batch)

    # -- in-order delivery ---------------------------------------------------------------------
    def _sequence(self, batch: list[tuple[list[int], bytes, int | None]]) -> None:
        for recipients, frame, cursor in batch:
            if cursor is None:
                self.deliver_local(recipients, frame, None)
            elif cursor >= self.next_id:
                self._pending[cursor] = (recipients, frame)
        self._drain()

    def _drain(self) -> None:
        pending = self._pending
        while self.next_id in pending:
            recipients, frame = pending.pop(self.next_id)
            if recipients:
                self.deliver_local(recipients, frame, self.next_id)
            self.next_id += 1
        if pending and self._gap_timer is None and not self._filling:
            # A lower id has not arrived: wait a moment for the bus, then ask storage.
            self._gap_timer = asyncio.get_running_loop().call_later(0.05, self._start_fill)

    def _start_fill(self) -> None:
        self._gap_timer = None
        if self._pending and not self._filling:
            self._filling = True
            task = asyncio.ensure_future(self._fill())
            task.add_done_callback(lambda _t: None)

    async def _fill(self) -> None:
        try:
            lo, hi = self.next_id, min(self._pending)
            if hi <= lo or self.load_range is None:
                return
            # Every id below one we have seen was committed or rolled back before it (commits are
            # serialized), so storage is authoritative for [lo, hi).
            found = await self.load_range(lo, hi)
            self.gap_fills += 1
            for eid, recipients, frame in found:
                if eid >= self.next_id:
                    self._pending.setdefault(eid, (recipients, frame))
            self.next_id = max(self.next_id, lo)
            for missing in range(lo, hi):
                self._pending.setdefault(missing, ([], b""))   # rolled back: never existed
        except Exception:
            log.exception("could not fill a gap in the event log; retrying")
        finally:
            self._filling = False
            self._drain()

    def ephemeral(self, user_ids: Sequence[int], event: str, payload: Any) -> None:
        if user_ids:
            frame = encode_event(event, payload)
            self.deliver_local(user_ids, frame, None)
            self._queue(("d", self.node, [(list(user_ids), frame, None)]))

    def ephemeral_devices(self, device_ids: Sequence[int], event: str, payload: Any) -> None:
        if device_ids:
            frame = encode_event(event, payload)
            self.deliver_local_devices(device_ids, frame)
            self._queue(("v", self.node, (list(device_ids), frame)))

    def drop_device(self, device_id: int) -> None:
        super().drop_device(device_id)
        self._queue(("x", self.node, device_id))

    def _queue(self, msg: _Msg) -> None:
        if len(self._outbox) > 100_000:
            # Redis is away and the backlog is large: drop; clients catch up from storage on resume.
            self._outbox.clear()
        self._outbox.append(msg)
        self._wake.set()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    assert self.redis is not None
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for msg in batch:
                            pipe.publish(self._key("bus"), _enc.encode(msg))
                        await pipe.execute()
                    self.published += len(batch)
                except (RedisError, OSError) as exc:
                    self._unhealthy(exc)
                    await asyncio.sleep(0.5)
                    break

    # -- incoming ------------------------------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                assert self.redis is not None
                async with self.redis.pubsub() as ps:
                    await ps.subscribe(self._key("bus"))
                    self._subscribed.set()
                    was_down = not self.healthy and self.failures > 0
                    self.healthy = True
                    log.info("redis bus connected (node %s)", self.node)
                    if was_down and self.on_recovered is not None:
                        self.on_recovered()
                    async for message in ps.listen():
                        if message.get("type") != "message":
                            continue
                        self._receive(_dec.decode(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._unhealthy(exc)
                await asyncio.sleep(1.0)

    def _receive(self, msg: Any) -> None:
        kind, origin, body = msg
        if origin == self.node:
            return
        self.received += 1
        if kind == "d":
            self._sequence([(list(r), bytes(f), c) for r, f, c in body])
        elif kind == "x":
            super().drop_device(int(body))
        elif kind == "v":
            device_ids, frame = body
            self.deliver_local_devices([int(d) for d in device_ids], bytes(frame))

    def _unhealthy(self, exc: BaseException) -> None:
        if self.healthy or self.failures == 0:
            log.warning("redis bus unavailable (%s): sends are still stored; other processes' clients"
                        " catch up when it returns", exc)
        self.healthy = False
        self.failures += 1

    # -- presence and rate limits -------------------------------------------------------------
    async def _presence(self) -> None:
        while True:
            try:
                assert self.redis is not None
                mine = sorted(self.hub.online_users()) if self.hub is not None else []
                my_devices = sorted(self.hub.online_devices()) if self.hub is not None else []
                key = self._key(f"online:{self.node}")
                ttl = int(PRESENCE_EVERY_S * 5)
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(key, _enc.encode(mine), ex=ttl)
                    pipe.set(self._key(f"devices:{self.node}"), _enc.encode(my_devices), ex=ttl)
                    pipe.sadd(self._key("nodes"), self.node)
                    pipe.smembers(self._key("nodes"))
                    _, _, _, nodes = await pipe.execute()
                others = [n.decode() if isinstance(n, bytes) else n for n in nodes]
                others = [n for n in others if n != self.node]
                keys = [self._key(f"{kind}:{n}") for kind in ("online", "devices") for n in others]
                got = await self.redis.mget(keys) if others else []
                values, device_values = got[:len(others)], got[len(others):]
                online: set[int] = set()
                devices: set[int] = set()
                for n, v, dv in zip(others, values, device_values, strict=True):
                    if v is None:
                        await self.redis.srem(self._key("nodes"), n)   # that process is gone
                    else:
                        online.update(_dec.decode(v if isinstance(v, bytes) else v.encode()))
                    if dv is not None:
                        devices.update(_dec.decode(dv if isinstance(dv, bytes) else dv.encode()))
                self._online_elsewhere = online
                self._devices_elsewhere = devices
            except (RedisError, OSError) as exc:
                self._unhealthy(exc)
            await asyncio.sleep(PRESENCE_EVERY_S)

    def is_online(self, user_id: int) -> bool:
        return super().is_online(user_id) or user_id in self._online_elsewhere

    def is_device_online(self, device_id: int) -> bool:
        return super().is_device_online(device_id) or device_id in self._devices_elsewhere

    async def allow(self, key: object, rate: float, burst: int) -> bool:
        """A fixed one-second window per key shared by every process; if Redis is away, the
        per-process limiter alone applies."""
        if not self.healthy or self.redis is None:
            return True
        window = int(time.time())
        rkey = self._key(f"rl:{key}:{window}")
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(rkey)
                pipe.expire(rkey, 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError):
            return True
        return int(count) <= max(rate, burst)
