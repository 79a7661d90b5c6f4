"""HTTP long-poll transport, for networks whose proxies break WebSockets.

POST /lp/open                      -> {"sid": ...}
POST /lp/{sid}/send   [frames]     -> 202; requests run as on any transport
POST /lp/{sid}/poll?ack=N&wait=S   -> {"last": M, "closed": bool, "frames": [...]}

Server-to-client frames are numbered and kept until a later poll acknowledges them (ack=N), so a
poll response lost on the way costs a repeat, never a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from dari.protocol.errors import DariError, ErrorCode
from dari.server.rest import error_response
from dari.server.session import Session

if TYPE_CHECKING:
    from dari.server.app import ServerState

IDLE_TIMEOUT_S = 60.0
MAX_WAIT_S = 25.0
_frames = msgspec.json.Decoder(list[msgspec.Raw])


class Channel:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.unacked: deque[tuple[int, bytes]] = deque()
        self.next_n = 1
        self.last_seen = time.monotonic()
        self.tasks: set[asyncio.Task[None]] = set()
        self.polling = asyncio.Lock()

    def take(self, ack: int) -> None:
        while self.unacked and self.unacked[0][0] <= ack:
            self.unacked.popleft()
        out = self.session.outbox
        while out:
            self.unacked.append((self.next_n, out.popleft()))
            self.next_n += 1
        self.session.drained()


class LongPoll:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.channels: dict[str, Channel] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/lp/open", self.open)
        app.router.add_post("/lp/{sid}/send", self.send)
        app.router.add_post("/lp/{sid}/poll", self.poll)
        app.router.add_get("/lp/{sid}/poll", self.poll)

    def _channel(self, request: web.Request) -> Channel:
        ch = self.channels.get(request.match_info["sid"])
        if ch is None:
            raise DariError(ErrorCode.NOT_FOUND, "no such long-poll session (expired?); open a new one")
        ch.last_seen = time.monotonic()
        return ch

    async def open(self, request: web.Request) -> web.Response:
        if len(self.channels) >= 100_000:
            return error_response(DariError(ErrorCode.UNAVAILABLE, "too many long-poll sessions"))
        sid = secrets.token_urlsafe(24)
        session = Session(self.state, request.remote or "?", "longpoll")
        self.channels[sid] = Channel(session)
        self.state.sessions.add(session)
        return web.json_response({"sid": sid}, headers={"Cache-Control": "no-store"})

    async def send(self, request: web.Request) -> web.Response:
        try:
            ch = self._channel(request)
            limit = self.state.settings.max_frame_bytes
            body = await request.content.read(limit * 4 + 1)
            if len(body) > limit * 4:
                raise DariError(ErrorCode.FRAME_TOO_LARGE, "send batch over the limit")
            try:
                batch = _frames.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
                raise DariError(ErrorCode.BAD_FRAME, f"send body must be a JSON array of frames: {exc}") from None
            for raw in batch:
                data = bytes(raw)
                if not ch.session.admit(data, len(ch.tasks)):
                    continue
                task = asyncio.create_task(ch.session.handle(data))
                ch.tasks.add(task)
                task.add_done_callback(ch.tasks.discard)
        except DariError as err:
            return error_response(err)
        return web.json_response({"accepted": len(batch)}, status=202, headers={"Cache-Control": "no-store"})

    async def poll(self, request: web.Request) -> web.Response:
        try:
            ch = self._channel(request)
            try:
                ack = int(request.query.get("ack", "0"))
                wait = min(float(request.query.get("wait", MAX_WAIT_S)), MAX_WAIT_S)
            except ValueError:
                raise DariError(ErrorCode.INVALID_PARAMS, "ack and wait must be numbers") from None
        except DariError as err:
            return error_response(err)
        async with ch.polling:   # one poll at a time per channel; a newer poll waits for the older
            ch.take(ack)
            if not ch.unacked and not ch.session.closed and wait > 0:
                ch.session.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ch.session.wakeup.wait(), wait)
                ch.take(ack)
            closed = ch.session.closed and not ch.session.outbox
            body = b"".join([
                b'{"last":', str(ch.unacked[-1][0] if ch.unacked else ch.next_n - 1).encode(),
                b',"closed":', b"true" if closed else b"false",
                b',"close_code":', str(ch.session.close_code if closed else 0).encode(),
                b',"frames":[', b",".join(f for _, f in ch.unacked), b"]}"])
        ch.last_seen = time.monotonic()
        if closed:
            self._drop(request.match_info["sid"])
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    def _drop(self, sid: str) -> None:
        ch = self.channels.pop(sid, None)
        if ch is not None:
            if not ch.session.closed:
                ch.session.close(1001, "long-poll session expired")
            self.state.sessions.discard(ch.session)

    async def reap_forever(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for sid, ch in list(self.channels.items()):
                if now - ch.last_seen > IDLE_TIMEOUT_S and not ch.polling.locked():
                    self._drop(sid)

    def close_all(self) -> None:
        for sid in list(self.channels):
            self._drop(sid)
