"""The lean client side: raw aiohttp WebSockets, pre-encoded request frames, msgspec decoding.

The SDK (dari.client.Client) does more per frame than a load generator can afford (an event queue,
outbox, reconnect logic); here a connection is a socket, a reader task and a dict of pending ids.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union, cast
from urllib.parse import urlsplit

import aiohttp
import msgspec

PASSWORD = "bench-password-1"


class BenchError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ErrorInfo(msgspec.Struct):
    code: str = "?"
    message: str = ""


class ServerFrame(msgspec.Struct):
    """Any frame from the server: a response (id, result | error) or an event (event, payload, cursor)."""

    id: int | str | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: ErrorInfo | None = None
    event: str | None = None
    payload: msgspec.Raw = msgspec.Raw()
    cursor: int | None = None


class MsgRef(msgspec.Struct):
    """The fields of a message.send result or a message.new payload that the bench checks."""

    chat_id: int
    seq: int
    sender_id: int = 0
    client_id: str = ""


class OpenResult(msgspec.Struct):
    cursor: int


_frame = msgspec.json.Decoder(ServerFrame).decode
msg_ref = msgspec.json.Decoder(MsgRef).decode
_open_result = msgspec.json.Decoder(OpenResult).decode
_encode = msgspec.json.Encoder().encode
_SEND = b'{"id":%d,"method":"message.send","params":{"chat_id":%d,"client_id":"%s","text":"%s"}}'
_SEND_E2EE = b'{"id":%d,"method":"message.send","params":{"chat_id":%d,"client_id":"%s","e2ee":%s}}'


def _client_header(n: int) -> bytes:
    """A final text frame header from a client: masked (RFC 6455 5.3) with the all-zero key, which
    leaves the payload as it is; the server unmasks it as it would any other."""
    if n < 126:
        return bytes((0x81, 0x80 | n)) + b"\0\0\0\0"
    if n < 65536:
        return bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big") + b"\0\0\0\0"
    return bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big") + b"\0\0\0\0"


class LeanWS(asyncio.Protocol):
    """A minimal WebSocket client connection (RFC 6455), for storms of connections: a raw asyncio
    protocol with a pre-formatted upgrade request, whose frames are handed to the Conn from
    data_received, instead of aiohttp's ClientSession request machinery and a reader task per
    connection. It speaks only what the dari server sends: unfragmented text frames, ping, close."""

    def __init__(self, conn: Conn, upgrade: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.conn = conn
        self.upgrade = upgrade
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.buf = b""
        self.handshaking = True
        self.closed = False
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, conn: Conn, ws_url: str) -> LeanWS:
        url = urlsplit(ws_url)
        key = base64.b64encode(os.urandom(16)).decode()
        upgrade = (f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        proto = cls(conn, upgrade)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: proto, url.hostname or "127.0.0.1", url.port or 80)
        await proto.opened
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is not an asyncio.Transport subclass
        self.transport.write(self.upgrade)

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                err = ConnectionError(f"upgrade refused: {self.buf[:end].decode(errors='replace')}")
                if not self.opened.done():
                    self.opened.set_exception(err)
                if self.transport is not None:
                    self.transport.close()
                return
            self.handshaking = False
            data, self.buf = self.buf[end + 4:], b""
            self.opened.set_result(None)
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, length = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos - head < length:
                break
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            op = b0 & 0x0F
            if op == 1 or op == 2:
                if not b0 & 0x80:
                    raise ConnectionError("fragmented frame: not spoken by this client")
                self.conn._on_frame(payload)
            elif op == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closed:
                    self._write(0x88, payload[:2])
                    self.closed = True
                if self.transport is not None:
                    self.transport.close()
            elif op == 9:
                self._write(0x8A, payload)
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.close_code is None:
            self.close_code = 1006
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))
        self.conn._on_lost(self.close_code)
        if not self.done.done():
            self.done.set_result(None)

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes((opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    async def send_frame(self, data: bytes, kind: aiohttp.WSMsgType = aiohttp.WSMsgType.TEXT) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("not connected")
        self.transport.write(_client_header(len(data)) + data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(0x88, (1000).to_bytes(2, "big"))
        try:
            await asyncio.wait_for(asyncio.shield(self.done), 10)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


Socket = Union["aiohttp.ClientWebSocketResponse[bool]", LeanWS]


@dataclass
class User:
    index: int
    user_id: int
    token: str
    handle: str


class Conn:
    """One authenticated realtime connection of one user, with what it received (for lost/duplicated)."""

    def __init__(self, index: int, user: User) -> None:
        self.index = index
        self.user = user
        self.ws: Socket | None = None
        self.cursor: int | None = None
        self.received: dict[int, bytearray] = {}   # chat_id -> one byte per seq: how often it arrived
        self.duplicates = 0
        self.replayed = 0
        self.unexpected_closes = 0
        self.on_message: Callable[[Conn, MsgRef, float], None] | None = None
        self.crypto: Any = None      # bench/e2ee.py BenchCrypto with --e2ee: encrypt sends, decrypt receipts
        self._pending: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self._ids = 0
        self._live = asyncio.Event()
        self._replaying = False
        self._closing = False
        self._reader: asyncio.Future[None] | None = None

    # -- connecting ---------------------------------------------------------------------------
    async def open(self, http: aiohttp.ClientSession, ws_url: str, *, resume: bool = False,
                   lean: bool = False) -> None:
        """Connect, session.open (resuming from our cursor if asked) and wait for session.live.
        lean: a LeanWS connection instead of aiohttp's (storms of connections)."""
        self._closing = False
        self._live.clear()
        if lean:
            proto = await LeanWS.connect(self, ws_url)
            self.ws = proto
            self._reader = proto.done
        else:
            ws = await http.ws_connect(ws_url, autoping=True, heartbeat=None, compress=0, max_msg_size=0,
                                       decode_text=False)
            self.ws = ws
            self._reader = asyncio.create_task(self._read(ws))
        params: dict[str, Any] = {"token": self.user.token}
        if resume and self.cursor is not None:
            params["cursor"] = self.cursor
        self._replaying = resume
        raw = await self.call("session.open", params)
        if not resume or self.cursor is None:
            self.cursor = _open_result(raw).cursor
        await self._live.wait()
        self._replaying = False

    async def close(self) -> None:
        self._closing = True
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader

    def pause(self) -> None:
        """Stop reading the socket, as a phone that froze or a client stuck on slow work would."""
        transport = self._transport()
        if transport is not None:
            transport.pause_reading()

    def resume(self) -> None:
        transport = self._transport()
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:   # catch up at full speed, whatever buffer it was opened with
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            transport.resume_reading()

    async def wait_closed(self) -> None:
        """Until the connection ends (the server dropped it, or we closed it)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    def _transport(self) -> asyncio.Transport | None:
        if isinstance(self.ws, LeanWS):
            return self.ws.transport
        conn = self.ws._response.connection if self.ws is not None else None
        return conn.transport if conn is not None else None

    @property
    def is_open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    # -- requests -----------------------------------------------------------------------------
    def _next(self) -> tuple[int, asyncio.Future[msgspec.Raw]]:
        self._ids += 1
        fut: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = fut
        return self._ids, fut

    async def call(self, method: str, params: dict[str, Any]) -> msgspec.Raw:
        if self.ws is None or self.ws.closed:
            raise ConnectionError("not connected")
        rid, fut = self._next()
        await self.ws.send_frame(_encode({"id": rid, "method": method, "params": params}), aiohttp.WSMsgType.TEXT)
        return await fut

    async def send_message(self, chat_id: int, client_id: str, text: bytes) -> MsgRef:
        """The hot path: one pre-formatted frame, one future, the ack decoded into a MsgRef."""
        ws = self.ws
        if ws is None or ws.closed:
            raise ConnectionError("not connected")
        rid, fut = self._next()
        if self.crypto is not None:
            env = self.crypto.envelope(chat_id, client_id, text.decode())
            await ws.send_frame(_SEND_E2EE % (rid, chat_id, client_id.encode(), env), aiohttp.WSMsgType.TEXT)
        else:
            await ws.send_frame(_SEND % (rid, chat_id, client_id.encode(), text), aiohttp.WSMsgType.TEXT)
        return msg_ref(await fut)

    # -- receiving ----------------------------------------------------------------------------
    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT and msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                self._on_frame(msg.data)
        finally:
            self._on_lost(ws.close_code)

    def _on_frame(self, data: bytes) -> None:
        now = time.perf_counter()
        f = _frame(data)
        if f.event is not None:
            if f.cursor is not None:
                self.cursor = f.cursor
            if f.event == "message.new":
                ref = msg_ref(f.payload)
                if self.crypto is not None and ref.sender_id != self.user.user_id:
                    self.crypto.open(f.payload)
                received = self.received
                seen = received.get(ref.chat_id)
                if seen is None:
                    seen = received[ref.chat_id] = bytearray(max(64, ref.seq * 2))
                elif ref.seq >= len(seen):
                    seen.extend(bytes(max(ref.seq + 1 - len(seen), len(seen))))
                if seen[ref.seq]:
                    self.duplicates += 1
                else:
                    seen[ref.seq] = 1
                if self._replaying:
                    self.replayed += 1
                if self.on_message is not None:
                    self.on_message(self, ref, now)
            elif f.event == "session.live":
                self._live.set()
            return
        fut = self._pending.pop(f.id, None) if isinstance(f.id, int) else None
        if fut is None or fut.done():
            return
        if f.error is not None:
            fut.set_exception(BenchError(f.error.code, f.error.message))
        else:
            fut.set_result(f.result)

    def _on_lost(self, close_code: int | None) -> None:
        pending = self._pending
        if not self._closing:
            self.unexpected_closes += 1
        err = ConnectionError(f"connection closed (code {close_code})")
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
        pending.clear()
        if not self._live.is_set():
            self._live.set()  # wake open(); it sees the failed session.open future anyway

    def got(self, chat_id: int, seq: int) -> int:
        seen = self.received.get(chat_id)
        return seen[seq] if seen is not None and seq < len(seen) else 0


def small_buffer_session(rcvbuf: int = 4096) -> aiohttp.ClientSession:
    """An HTTP client whose sockets get a small receive buffer before connecting (so the TCP window
    stays small): when such a client stops reading, the kernel pushes back on the server at once
    instead of soaking up megabytes."""
    def factory(addr: Any) -> socket.socket:
        family, kind, proto = addr[0], addr[1], addr[2]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, socket_factory=factory))


# -- REST, for account setup and for sends while a user is offline -------------------------------
async def rest(http: aiohttp.ClientSession, base: str, method: str, params: dict[str, Any],
               token: str | None = None, retries: int = 50) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(retries):
        async with http.post(f"{base}/api/v1/{method}", data=_encode(params), headers=headers) as resp:
            body = msgspec.json.decode(await resp.read())
        if body.get("error"):
            err = body["error"]
            if err.get("code") in ("rate_limited", "unavailable"):
                await asyncio.sleep(0.2)
                continue
            raise BenchError(err.get("code", "?"), err.get("message", ""))
        return body["result"]
    raise BenchError("rate_limited", f"{method}: still limited after {retries} tries")


async def gather_limited(n: int, limit: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) with at most `limit` at once; results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await fn(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def signup_many(http: aiohttp.ClientSession, base: str, n: int, prefix: str,
                      limit: int = 16) -> list[User]:
    async def one(i: int) -> User:
        handle = f"{prefix}{i}"
        res = await rest(http, base, "account.signup", {"handle": handle, "display_name": f"bench {i}",
                                                         "password": PASSWORD, "device_name": "bench"})
        return User(i, int(res["user"]["user_id"]), str(res["token"]), handle)

    return await gather_limited(n, limit, one)


async def open_direct(http: aiohttp.ClientSession, base: str, a: User, b: User, *, e2ee: bool = False) -> int:
    res = await rest(http, base, "chat.open_direct", {"user_id": b.user_id, **({"e2ee": True} if e2ee else {})},
                     a.token)
    return int(res["chat_id"])


async def create_group(http: aiohttp.ClientSession, base: str, owner: User, members: list[User],
                       title: str) -> int:
    res = await rest(http, base, "chat.create_group",
                     {"title": title, "member_ids": [u.user_id for u in members if u is not owner]}, owner.token)
    return int(res["chat_id"])


async def connect_all(http: aiohttp.ClientSession, ws_url: str, conns: list[Conn], *, resume: bool = False,
                      limit: int = 200, lean: bool = False) -> list[float]:
    """Open every connection (at most `limit` handshakes at once); seconds each took to go live."""
    async def one(i: int) -> float:
        t0 = time.perf_counter()
        await conns[i].open(http, ws_url, resume=resume, lean=lean)
        return time.perf_counter() - t0

    return await gather_limited(len(conns), limit, one)


async def close_all(conns: list[Conn]) -> None:
    await asyncio.gather(*(c.close() for c in conns if c.ws is not None), return_exceptions=True)
