"""The relay's forwarder: client TCP connections piped byte for byte to the server.

In passthrough mode (the default, and the only mode for the frame stream) the relay never holds a
TLS key: the client's TLS session runs to the server and is pinned there, so the relay sees
ciphertext only. `terminate_tls` exists for browsers on the HTTPS listener alone; see
docs/operations.md "Relays" for what such a relay can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from dari.relay.limits import TokenBucket

log = logging.getLogger("dari.relay")
CHUNK = 16384
Address = tuple[str, int]


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:   # 0: any free port
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Listener:
    name: str                                   # "stream" | "https": the metrics label
    listen: Address
    upstream: Address
    terminate: ssl.SSLContext | None = None     # accept TLS here (browsers) ...
    upstream_tls: ssl.SSLContext | None = None  # ... and open a new TLS session to the server
    upstream_pin: str | None = None


@dataclass
class RelayConfig:
    listeners: list[Listener]
    max_connections: int = 1000
    rate: float = 0.0            # bytes/s per connection, both directions together; 0: unlimited
    total_rate: float = 0.0      # bytes/s over all connections; 0: unlimited
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.open = Gauge("dari_relay_connections", "Open relayed connections", ["listener"], registry=r)
        self.accepted = Counter("dari_relay_connections_accepted", "Connections accepted", ["listener"],
                                registry=r)
        self.rejected = Counter("dari_relay_connections_rejected", "Connections refused", ["reason"], registry=r)
        self.bytes = Counter("dari_relay_bytes", "Bytes relayed", ["direction"], registry=r)
        self.idle = Counter("dari_relay_idle_closed", "Connections closed for being idle", registry=r)


@dataclass
class _Conn:
    bucket: TokenBucket
    last: float = field(default_factory=time.monotonic)


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.total = TokenBucket(config.total_rate)
        self.active = 0
        self.servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Relay:
        for lst in self.config.listeners:
            server = await asyncio.start_server(self._handler(lst), lst.listen[0], lst.listen[1],
                                                ssl=lst.terminate, reuse_address=True, backlog=1024)
            self.servers.append(server)
            log.info("relay %s: %s:%s -> %s:%s%s", lst.name, *server.sockets[0].getsockname()[:2], *lst.upstream,
                     " (TLS terminated here: this listener sees frames)" if lst.terminate else "")
        return self

    def port(self, index: int = 0) -> int:
        return int(self.servers[index].sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _handler(self, lst: Listener):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._relay(lst, reader, writer)
            finally:
                self._tasks.discard(task)
        return handle

    async def _relay(self, lst: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.config.max_connections:
            self.metrics.rejected.labels("max_connections").inc()
            writer.transport.abort()
            return
        self.active += 1
        self.metrics.accepted.labels(lst.name).inc()
        self.metrics.open.labels(lst.name).inc()
        up_w: asyncio.StreamWriter | None = None
        try:
            try:
                up_r, upstream = await asyncio.wait_for(asyncio.open_connection(
                    *lst.upstream, ssl=lst.upstream_tls,
                    server_hostname=lst.upstream[0] if lst.upstream_tls else None), self.config.connect_timeout)
                up_w = upstream
                if lst.upstream_pin:
                    _check_upstream_pin(lst.upstream_pin, upstream)
            except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
                self.metrics.rejected.labels("upstream_unreachable").inc()
                log.warning("relay %s: upstream %s:%s unusable: %s", lst.name, *lst.upstream, exc)
                return
            conn = _Conn(TokenBucket(self.config.rate))
            pipes = [asyncio.create_task(self._pipe(reader, upstream, conn, "up")),
                     asyncio.create_task(self._pipe(up_r, writer, conn, "down"))]
            watchdog = asyncio.create_task(self._watch(conn, pipes))
            try:
                await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                watchdog.cancel()
                for p in pipes:
                    p.cancel()
        finally:
            self.active -= 1
            self.metrics.open.labels(lst.name).dec()
            for w in (writer, up_w):
                if w is not None:
                    w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn, direction: str) -> None:
        counter = self.metrics.bytes.labels(direction)
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            while data := await src.read(CHUNK):
                conn.last = time.monotonic()
                await conn.bucket.take(len(data))
                await self.total.take(len(data))
                dst.write(data)
                await dst.drain()
                counter.inc(len(data))
        # Pass the end of one direction on (TCP half-close) so that the other finishes naturally.
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()

    async def _watch(self, conn: _Conn, pipes: list[asyncio.Task[None]]) -> None:
        idle = self.config.idle_timeout
        while True:
            left = conn.last + idle - time.monotonic()
            if left <= 0:
                self.metrics.idle.inc()
                for p in pipes:
                    p.cancel()
                return
            await asyncio.sleep(left)


def _check_upstream_pin(pin: str, writer: asyncio.StreamWriter) -> None:
    from dari.server.tls import pin_of_der

    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if not der or pin_of_der(der) != pin:
        writer.transport.abort()
        raise ValueError("the server's key does not match --upstream-pin: TLS interception on the way to the server")
