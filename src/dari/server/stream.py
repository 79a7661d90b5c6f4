"""TLS stream transport: frames prefixed by a 4-byte big-endian length over a TLS (or, behind a
terminating proxy, plain TCP) connection. It is what relays and pluggable transports carry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from typing import TYPE_CHECKING

from dari.server.session import Session

if TYPE_CHECKING:
    from dari.server.app import ServerState

log = logging.getLogger("dari.stream")
HEADER = struct.Struct(">I")


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    try:
        header = await reader.readexactly(HEADER.size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    (size,) = HEADER.unpack(header)
    if size > limit:
        raise ValueError(f"frame of {size} bytes over the stream limit {limit}")
    try:
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def pack(frame: bytes) -> bytes:
    return HEADER.pack(len(frame)) + frame


async def _writer(writer: asyncio.StreamWriter, session: Session) -> None:
    outbox = session.outbox
    while True:
        if outbox:
            # Coalesce everything queued into one write: one syscall per loop tick, not per frame.
            chunks = []
            while outbox:
                chunks.append(pack(outbox.popleft()))
            writer.write(b"".join(chunks))
            session.drained()
            await writer.drain()
        if session.closed:
            return
        session.wakeup.clear()
        await session.wakeup.wait()


def stream_handler(state: ServerState):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = Session(state, str(peer[0]) if peer else "?", "stream")
        state.sessions.add(session)
        state.metrics.connections.inc()
        out = asyncio.create_task(_writer(writer, session))
        pending: set[asyncio.Task[None]] = set()
        limit = state.settings.max_frame_bytes * 4
        try:
            while not session.closed:
                try:
                    data = await read_frame(reader, limit)
                except ValueError as exc:
                    log.info("closing stream from %s: %s", peer, exc)
                    break
                if data is None:
                    break
                if not session.admit(data, len(pending)):
                    continue
                task = asyncio.create_task(session.handle(data))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            if not session.closed:
                session.close(1000, "")
            state.sessions.discard(session)
            state.metrics.connections.dec()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(out, 5)
            out.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return handle
