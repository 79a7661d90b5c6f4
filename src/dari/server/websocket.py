"""WebSocket transport: one session per socket; a flusher writes the session's outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from dari.server.session import Session

if TYPE_CHECKING:
    from dari.server.app import ServerState

log = logging.getLogger("dari.ws")


_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack
_TEXT_FIN = 0x81
# Past this many bytes buffered in the transport, wait for the peer to read (aiohttp's own limit).
_HIGH_WATER = 1 << 16


def _header(n: int) -> bytes:
    """An unmasked, uncompressed final text frame header (RFC 6455 5.2; servers never mask)."""
    if n < 126:
        return _HEAD1(_TEXT_FIN, n)
    if n < 65536:
        return _HEAD2(_TEXT_FIN, 126, n)
    return _HEAD3(_TEXT_FIN, 127, n)


class _Flusher:
    """Writes a session's outbox to its WebSocket: all frames queued by one loop tick go out in one
    transport write, header + the already encoded payload (a fan-out event is the same bytes for
    every recipient).

    It is a callback the session calls when frames are queued, not a task per connection: an idle
    connection costs no task and no event, and a delivery costs two scheduled callbacks instead of
    waking a task. A task exists only while the peer is not reading (waiting for the transport to
    drain) or while closing. If the session is dropped for not reading (`send_buffer_frames`) while
    the transport is full, the socket is reset at once, so a peer that never reads again holds no
    more than one transport buffer.
    """

    __slots__ = ("busy", "dead", "loop", "protocol", "scheduled", "session", "transport", "woken", "ws")

    def __init__(self, ws: web.WebSocketResponse, session: Session, transport: Any, protocol: Any) -> None:
        self.ws = ws
        self.session = session
        self.transport = transport
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.scheduled = False
        self.busy: asyncio.Future[None] | None = None   # draining or closing
        self.woken: asyncio.Future[None] | None = None  # resolved when the session closes mid-drain
        self.dead = False

    def kick(self) -> None:
        if self.busy is not None:
            if self.session.closed and self.woken is not None and not self.woken.done():
                self.woken.set_result(None)
            return
        if not self.scheduled and not self.dead:
            self.scheduled = True
            self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        # One more tick: replies resumed by the same commit as the events join this write.
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.busy is not None or self.dead:
            return
        session, outbox, transport = self.session, self.session.outbox, self.transport
        if outbox:
            if transport.is_closing():
                outbox.clear()       # the peer is gone; the handler sees it and ends the session
                session.drained()
                return
            parts: list[bytes] = []
            for _ in range(len(outbox)):
                frame = outbox.popleft()
                parts.append(_header(len(frame)))
                parts.append(frame)
            transport.write(b"".join(parts))
            session.drained()
            if transport.get_write_buffer_size() > _HIGH_WATER and self.protocol.writing_paused:
                self.busy = asyncio.ensure_future(self._wait_drain())
                return
        if session.closed:
            self.busy = asyncio.ensure_future(self._close())

    async def _wait_drain(self) -> None:
        drain = asyncio.ensure_future(self.protocol._drain_helper())
        self.woken = self.loop.create_future()
        try:
            if not self.session.closed:
                await asyncio.wait((drain, self.woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.woken = None
        if not drain.done() or drain.cancelled() or drain.exception() is not None:
            # Closed (dropped for not reading) while its buffers are full, or the connection broke:
            # a clean close would wait on the same peer, so free the buffers now.
            drain.cancel()
            self.dead = True
            _reset(self.transport)
            return
        self.busy = None
        self.flush()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=self.session.close_code, message=self.session.close_reason.encode())
        self.dead = True

    async def finish(self, timeout: float) -> None:
        """The connection is ending: write what is queued, close, and wait for that (bounded)."""
        if self.busy is None and not self.dead:
            self.flush()
        if self.busy is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.busy), timeout)
            if not self.busy.done():
                self.busy.cancel()
        self.dead = True


def _reset(transport: Any) -> None:
    """Abort with a TCP reset: a plain close would leave the kernel holding the unsent bytes (and the
    socket in FIN-WAIT) until it gives up on the peer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    state: ServerState = request.app["state"]
    limit = state.settings.max_frame_bytes
    # aiohttp enforces the frame cap itself (close 1009); we add one byte of slack so that our own
    # check answers with a structured error for frames just over the cap.
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=limit * 4, compress=False)
    await ws.prepare(request)
    if state.settings.socket_send_buffer > 0:
        # Linux autotunes a socket's send buffer up to net.ipv4.tcp_wmem's maximum (4 MB): a client
        # that stops reading can hold that much kernel memory before the outbox cap even starts.
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, state.settings.socket_send_buffer)
    session = Session(state, request.remote or "?", "ws")
    state.metrics.connections.inc()
    state.sessions.add(session)
    # aiohttp's writer after prepare(): the transport we write frames to and the protocol whose
    # flow control (writing_paused, _drain_helper) tells us the peer is not reading.
    writer = ws._writer
    assert writer is not None
    flusher = _Flusher(ws, session, writer.transport, writer.protocol)
    session.notify = flusher.kick
    pending: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data: bytes | str = msg.data
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
            else:
                break
            if session.closed:
                break
            if not session.admit(data, len(pending)):
                continue
            # Requests run concurrently so a slow call never blocks the socket; each answers by id.
            # Tasks start in arrival order, so one connection's sends commit in the order sent.
            task = asyncio.create_task(session.handle(data))
            pending.add(task)
            task.add_done_callback(pending.discard)
    except Exception:
        log.exception("websocket error from %s", request.remote)
    finally:
        if not session.closed:
            session.close(1000, "")
        state.sessions.discard(session)
        state.metrics.connections.dec()
        await flusher.finish(5)
    return ws
