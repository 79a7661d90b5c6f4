"""Links: one connected route to the server, whatever carries it. All move the same frames."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec

from dari.protocol.errors import DariError, ErrorCode

_HEADER = struct.Struct(">I")
_poll_decoder = msgspec.json.Decoder()


class RouteFailure(Exception):
    """A route could not be used; `stage` and `reason` feed diagnosis."""

    def __init__(self, route: str, stage: str, reason: str) -> None:
        super().__init__(f"{route}: {stage}: {reason}")
        self.route, self.stage, self.reason = route, stage, reason


class PinMismatch(RouteFailure):
    """The server presented a key other than the pinned one: someone is intercepting TLS."""


@dataclass(frozen=True)
class Route:
    """A way to reach the server. kind: ws | longpoll | stream."""

    kind: str
    url: str                      # http(s)://host:port for ws/longpoll; tcp://host:port or tls://host:port
    name: str = ""
    pin: str | None = None        # "sha256/<base64 SPKI hash>"; mismatches are reported, never accepted
    sni: str | None = None        # TLS server name to send (a relay's neutral name)
    insecure_tls: bool = False    # accept any certificate (only with a pin, or in tests)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{self.url}"


class Link(Protocol):
    route: Route
    close_code: int | None

    async def send(self, frame: bytes) -> None: ...

    async def recv(self) -> bytes | None: ...

    async def close(self) -> None: ...


def _client_ssl(route: Route) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if route.pin or route.insecure_tls:
        # The pin, checked after the handshake, replaces CA validation (self-signed servers, relays).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(route: Route, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
    if not route.pin:
        return
    from dari.server.tls import pin_of_der

    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PinMismatch(route.label, "tls", "no certificate presented where a pinned key was expected")
    got = pin_of_der(der)
    if got != route.pin:
        raise PinMismatch(route.label, "tls", f"server key {got} does not match the pin {route.pin}:"
                                              " TLS interception")


class WebSocketLink:
    def __init__(self, route: Route, http: aiohttp.ClientSession) -> None:
        self.route = route
        self.http = http
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.close_code: int | None = None

    async def open(self) -> WebSocketLink:
        url = self.route.url.replace("http", "ws", 1) + "/ws"
        tls = _client_ssl(self.route) if url.startswith("wss") else None
        try:
            self.ws = await self.http.ws_connect(url, heartbeat=30, max_msg_size=0, compress=0,
                                                 ssl=tls if tls else True, server_hostname=self.route.sni)
        except aiohttp.WSServerHandshakeError as exc:
            raise RouteFailure(self.route.label, "http", f"upgrade refused: HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RouteFailure(self.route.label, "connect", str(exc) or type(exc).__name__) from None
        if tls:
            try:
                check_pin(self.route, self.ws.get_extra_info("ssl_object"))
            except PinMismatch:
                await self.ws.close()
                raise
        return self

    async def send(self, frame: bytes) -> None:
        assert self.ws is not None
        try:
            await self.ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise DariError(ErrorCode.UNAVAILABLE, f"connection lost: {exc}") from None

    async def recv(self) -> bytes | None:
        assert self.ws is not None
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return msg.data.encode() if isinstance(msg.data, str) else msg.data
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        self.close_code = self.ws.close_code
        return None

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            # A blackholed peer never answers the closing handshake: do not wait for it.
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(self.ws.close(), 1.0)


class LongPollLink:
    """Requests by POST, events by a held poll. Frames are acknowledged by number on the next poll."""

    def __init__(self, route: Route, http: aiohttp.ClientSession, wait_s: float = 20.0) -> None:
        self.route = route
        self.http = http
        self.wait_s = wait_s
        self.sid = ""
        self.close_code: int | None = None
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._last = 0
        self._poller: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._ssl = _client_ssl(route) if route.url.startswith("https") else None

    async def open(self) -> LongPollLink:
        try:
            async with self.http.post(f"{self.route.url}/lp/open", ssl=self._ssl or True,
                                      server_hostname=self.route.sni,
                                      timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if self._ssl and resp.connection is not None and resp.connection.transport is not None:
                    check_pin(self.route, resp.connection.transport.get_extra_info("ssl_object"))
                if resp.status != 200:
                    raise RouteFailure(self.route.label, "http", f"long-poll open refused: HTTP {resp.status}")
                self.sid = (await resp.json())["sid"]
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            raise RouteFailure(self.route.label, "connect", str(exc) or type(exc).__name__) from None
        self._poller = asyncio.create_task(self._poll_loop())
        return self

    async def _poll_loop(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    async with self.http.post(
                            f"{self.route.url}/lp/{self.sid}/poll", params={"ack": self._last, "wait": self.wait_s},
                            ssl=self._ssl or True, server_hostname=self.route.sni,
                            timeout=aiohttp.ClientTimeout(total=self.wait_s + 15)) as resp:
                        if resp.status == 404:
                            self.close_code = 1001
                            break
                        if resp.status != 200:
                            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                        body = _poll_decoder.decode(await resp.read())
                except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
                    failures += 1
                    if failures >= 3:
                        break
                    await asyncio.sleep(0.3 * failures)
                    continue
                failures = 0
                frames = body.get("frames", [])
                first_n = int(body["last"]) - len(frames) + 1
                for i, frame in enumerate(frames):
                    if first_n + i > self._last:
                        self._inbox.put_nowait(msgspec.json.encode(frame))
                self._last = max(self._last, int(body["last"]))
                if body.get("closed"):
                    self.close_code = int(body.get("close_code") or 1000)
                    break
        finally:
            self._inbox.put_nowait(None)

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:   # one POST at a time keeps requests in order
            try:
                async with self.http.post(f"{self.route.url}/lp/{self.sid}/send", data=b"[" + frame + b"]",
                                          ssl=self._ssl or True, server_hostname=self.route.sni,
                                          headers={"Content-Type": "application/json"},
                                          timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    if resp.status != 202:
                        raise DariError(ErrorCode.UNAVAILABLE, f"long-poll send refused: HTTP {resp.status}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise DariError(ErrorCode.UNAVAILABLE, f"connection lost: {exc}") from None

    async def recv(self) -> bytes | None:
        return await self._inbox.get()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller


class StreamLink:
    """Length-prefixed frames over TCP or TLS, optionally through a SOCKS5 proxy (Tor, obfs4)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.close_code: int | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, timeout: float = 10.0) -> StreamLink:
        parts = urlsplit(self.route.url)
        host, port = parts.hostname or "", parts.port or 443
        tls = parts.scheme == "tls"
        ctx = _client_ssl(self.route) if tls else None
        socks = self.route.extra.get("socks")
        try:
            if socks:
                from dari.client.socks import open_via_socks

                reader, writer = await asyncio.wait_for(
                    open_via_socks(socks, host, port, ssl=ctx, server_hostname=self.route.sni or host,
                                   username=self.route.extra.get("socks_user"),
                                   password=self.route.extra.get("socks_pass")), timeout)
            else:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=(self.route.sni or host) if ctx else None), timeout)
        except ssl.SSLError as exc:
            raise RouteFailure(self.route.label, "tls", str(exc)) from None
        except ConnectionResetError as exc:
            raise RouteFailure(self.route.label, "tcp", f"reset: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise RouteFailure(self.route.label, "connect", str(exc) or type(exc).__name__) from None
        if ctx is not None:
            try:
                check_pin(self.route, writer.get_extra_info("ssl_object"))
            except PinMismatch:
                writer.close()
                raise
        self.reader, self.writer = reader, writer
        return self

    async def send(self, frame: bytes) -> None:
        assert self.writer is not None
        try:
            self.writer.write(_HEADER.pack(len(frame)) + frame)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise DariError(ErrorCode.UNAVAILABLE, f"connection lost: {exc}") from None

    async def recv(self) -> bytes | None:
        assert self.reader is not None
        try:
            (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
            if size > 64 << 20:
                raise ValueError("oversized frame from server")
            return await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, ssl.SSLError):
            self.close_code = self.close_code or 1006
            return None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


async def open_link(route: Route, http: aiohttp.ClientSession) -> Link:
    if route.kind == "ws":
        return await WebSocketLink(route, http).open()
    if route.kind == "longpoll":
        return await LongPollLink(route, http).open()
    if route.kind == "stream":
        return await StreamLink(route).open()
    raise ValueError(f"unknown route kind {route.kind!r}")
