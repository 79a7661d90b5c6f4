"""WebSocket transport: one session per socket; a writer task drains the session's outbox."""

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


async def _writer(ws: web.WebSocketResponse, session: Session) -> None:
    """Drain the outbox: all frames queued by one loop tick go out in one transport write.

    Frames are built here (header + the already encoded payload) instead of one `send_frame` call
    (and one write system call) per frame; a fan-out event is the same bytes for every recipient.
    When the peer does not read, the transport's buffer fills, we wait for it to drain, and the
    outbox grows until the session drops the connection at `send_buffer_frames`; the socket is then
    aborted, so a peer that never reads again holds no more than one transport buffer until then.
    """
    outbox = session.outbox
    wsw = getattr(ws, "_writer", None)
    transport = getattr(wsw, "transport", None)
    protocol = getattr(wsw, "protocol", None)
    coalesce = transport is not None and hasattr(protocol, "_drain_helper")
    while True:
        if outbox:
            # One more tick: replies resumed by the same commit as the events join this write.
            await asyncio.sleep(0)
            if not coalesce:
                while outbox:
                    await ws.send_frame(outbox.popleft(), WSMsgType.TEXT)
                session.drained()
                continue
            assert transport is not None and protocol is not None
            if transport.is_closing():
                raise ConnectionResetError("cannot write to a closing transport")
            parts: list[bytes] = []
            for _ in range(len(outbox)):
                frame = outbox.popleft()
                parts.append(_header(len(frame)))
                parts.append(frame)
            transport.write(b"".join(parts))
            session.drained()
            if transport.get_write_buffer_size() > _HIGH_WATER and protocol.writing_paused:
                if not await _drained(protocol, session):
                    # Dropped for not reading (or closed) while its buffers are full: a clean close
                    # would wait on the same peer, so free the buffers now; it resumes by cursor.
                    _reset(transport)
                    return
            continue
        if session.closed:
            await ws.close(code=session.close_code, message=session.close_reason.encode())
            return
        session.wakeup.clear()
        await session.wakeup.wait()


def _reset(transport: Any) -> None:
    """Abort with a TCP reset: a plain close would leave the kernel holding the unsent bytes (and the
    socket in FIN-WAIT) until it gives up on the peer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _drained(protocol: Any, session: Session) -> bool:
    """Wait for the transport to drain; False if the session closed first."""
    drain = asyncio.ensure_future(protocol._drain_helper())
    try:
        while not drain.done():
            if session.closed:
                return False
            session.wakeup.clear()
            woken = asyncio.ensure_future(session.wakeup.wait())
            await asyncio.wait((drain, woken), return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
        drain.result()
        return True
    finally:
        drain.cancel()


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
    writer = asyncio.create_task(_writer(ws, session))
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
        try:
            await asyncio.wait_for(writer, 5)
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            writer.cancel()
        except Exception:  # the peer vanished mid-write
            writer.cancel()
    return ws
