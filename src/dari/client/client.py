"""The client: one realtime connection with automatic reconnect and resume by cursor (G4),
request/response by id, an event stream, and the on-disk outbox (G7).

    async with Client("http://127.0.0.1:8080") as c:
        await c.login("minji", "password", device_name="laptop")
        chat = await c.call("chat.open_direct", user_id=2)
        await c.send_message(chat["chat_id"], "hello")
        async for ev in c.events():
            print(ev.name, ev.payload)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import locale
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import phonenumbers

from dari.client.diagnose import Diagnosis, Target, diagnose
from dari.client.links import Link, Route
from dari.client.outbox import Outbox, Pending
from dari.client.reach_reports import ReportQueue
from dari.client.routes import AllRoutesFailed, RouteManager, default_routes
from dari.protocol import frames, phones
from dari.protocol.errors import DariError, ErrorCode

log = logging.getLogger("dari.client")
DEFAULT_REGION = "KR"

# Errors after which a queued message will never be accepted: keep it as failed, do not retry.
PERMANENT = {ErrorCode.FORBIDDEN, ErrorCode.BLOCKED, ErrorCode.LIMIT_EXCEEDED, ErrorCode.INVALID_PARAMS,
             ErrorCode.NOT_FOUND, ErrorCode.CONFLICT}


@dataclass
class Event:
    name: str
    payload: Any
    cursor: int | None = None


def default_region() -> str:
    """The region a phone number without +country code is read in: $DARI_REGION, else the country
    of the locale (ko_KR.UTF-8 -> KR), else KR."""
    env = os.environ.get("DARI_REGION", "").strip()
    if env:
        return phones.check_region(env)
    for value in (os.environ.get("LC_ALL"), os.environ.get("LANG"), locale.getlocale()[0]):
        if value and "_" in value:
            country = value.split("_", 1)[1][:2].upper()
            if country in phonenumbers.SUPPORTED_REGIONS:
                return country
    return DEFAULT_REGION


def phone_hash(contact_key: str, phone: str, region: str | None = None) -> str:
    """Keyed hash of a phone number in E.164, so '010-1234-5678' (region KR) and '+82 10-1234-5678'
    match. An invalid number raises DariError(INVALID_PARAMS)."""
    return phones.phone_hash(contact_key, phone, region or default_region())


def _raise(err: frames.ErrorBody) -> DariError:
    try:
        code = ErrorCode(err.code)
    except ValueError:
        code = ErrorCode.INTERNAL
    return DariError(code, err.message, err.details)


class Client:
    def __init__(self, url: str, *, token: str | None = None, cursor: int | None = None,
                 outbox_path: str | None = None, reconnect: bool = True, call_timeout: float = 30.0,
                 routes: list[Route] | None = None, route_memory: str | None = None,
                 upgrade_interval: float = 30.0, reports: ReportQueue | None = None,
                 diagnosis_target: Target | None = None, stall_s: float = 3.0, keepalive_s: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.routes = RouteManager(routes or default_routes(self.url), route_memory)
        self.upgrade_interval = upgrade_interval
        self._link: Link | None = None
        self._upgrader: asyncio.Task[None] | None = None
        # Reachability reports: what worked and what failed, diagnosed, sent by whatever works.
        self.reports = reports
        self.diagnosis_target = diagnosis_target
        self.last_diagnosis: Diagnosis | None = None
        self._diagnosing: asyncio.Task[None] | None = None
        self._last_diagnosis_at = 0.0
        self.diagnosis_interval = 300.0
        self._tasks: set[asyncio.Future[Any]] = set()
        # Liveness: a route a censor blackholes mid-session sends no error, only silence.
        self.stall_s = stall_s
        self.keepalive_s = keepalive_s
        self._last_rx = 0.0
        self._started: dict[int | str, float] = {}
        self.dead_links = 0
        self.token = token
        self.cursor = cursor
        self.reconnect = reconnect
        self.call_timeout = call_timeout
        self.outbox = Outbox(outbox_path) if outbox_path else None
        self.user: dict[str, Any] | None = None
        self.device_id: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        # Called with every event before it is queued: helpers such as client/calls.py follow their
        # own events without taking them from whoever reads `events()`.
        self.event_hooks: list[Callable[[Event], None]] = []
        self._connected = asyncio.Event()   # a link is up
        self._ready = asyncio.Event()       # ...and the session is open (or there is no token yet)
        self._live = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._outbox_wake = asyncio.Event()
        self._closing = False
        self.reconnects = 0
        self.resyncs = 0
        self.revoked = False
        self.state = "offline"

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10))
        return self._http

    async def connect(self) -> None:
        """Open the realtime connection (and the session, if a token is known). Reconnects by itself."""
        if self._runner is None:
            first = asyncio.get_running_loop().create_future()
            self._runner = asyncio.create_task(self._run(first))
            await first
        if self.outbox is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_outbox())

    async def close(self) -> None:
        self._closing = True
        for task in (self._flusher, self._upgrader, self._diagnosing, self._runner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._link is not None:
            await self._link.close()
        if self._http is not None:
            await self._http.close()
        if self.outbox is not None:
            self.outbox.close()
        self.state = "offline"

    async def wait_live(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._live.wait(), timeout)

    @property
    def route(self) -> str | None:
        """The route carrying the session now (for status lines)."""
        return self._link.route.label if self._link is not None and self._connected.is_set() else None

    async def _run(self, first: asyncio.Future[None]) -> None:
        delay = 0.2
        while not self._closing:
            reader: asyncio.Task[None] | None = None
            watchdog: asyncio.Task[None] | None = None
            try:
                self.state = "connecting" if not first.done() else "reconnecting"
                http = await self._session()
                try:
                    link = await self.routes.connect(http)
                finally:
                    self._note_attempts()
                self._link = link
                self._last_rx = asyncio.get_running_loop().time()
                reader = asyncio.create_task(self._read(link))
                watchdog = asyncio.create_task(self._watch(link, reader))
                self._connected.set()
                if self.token:
                    await self._open_session()
                self._ready.set()
                self.state = "online"
                if self.reports is not None and len(self.reports):
                    self._background(self._send_reports())
                if not first.done():
                    first.set_result(None)
                delay = 0.2
                if not self.routes.is_preferred(link.route) and self._upgrader is None:
                    self._upgrader = asyncio.create_task(self._upgrade(link))
                # asyncio.wait: a reader cancelled by the watchdog ends this link, not this loop.
                await asyncio.wait([reader])
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, DariError, AllRoutesFailed) as exc:
                if isinstance(exc, DariError) and exc.code == ErrorCode.UNAUTHENTICATED:
                    self.state = "logged-out"
                    if not first.done():
                        first.set_exception(exc)
                    return
                log.debug("connection failed: %s", exc)
                if not first.done():
                    if self.reconnect:
                        first.set_result(None)   # carry on offline; calls wait, the outbox keeps messages
                    else:
                        first.set_exception(exc)
                        return
            finally:
                if reader is not None and not reader.done():
                    reader.cancel()
                if watchdog is not None:
                    watchdog.cancel()
                if self._link is not None:
                    with contextlib.suppress(Exception):
                        await self._link.close()
                self._connected.clear()
                self._ready.clear()
                self._live.clear()
                self._fail_pending("connection lost; retry")
            if not self.reconnect or self._closing:
                self.state = "logged-out" if self.revoked else "offline"
                return
            self.reconnects += 1
            self.state = "reconnecting"
            # Jitter spreads a reconnect storm after a server restart.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _watch(self, link: Link, reader: asyncio.Task[None]) -> None:
        """Declare the link dead when it goes silent: a call waiting longer than stall_s with nothing
        received at all, or no answer to a ping after keepalive_s of silence. The route manager then
        moves to the next route and the session resumes by cursor."""
        loop = asyncio.get_running_loop()
        while not reader.done():
            await asyncio.sleep(min(1.0, self.stall_s / 4))
            now = loop.time()
            silent = now - self._last_rx
            oldest = min(self._started.values(), default=now)
            dead = silent > self.stall_s and now - oldest > self.stall_s
            if not dead and silent > self.keepalive_s:
                try:
                    await asyncio.wait_for(self._call_raw("session.ping", {}), self.stall_s)
                except (DariError, TimeoutError):
                    dead = True
            if dead:
                self.dead_links += 1
                log.info("route %s went silent for %.1f s: switching", link.route.label, silent)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.close(), 1.0)
                reader.cancel()
                return

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note_attempts(self) -> None:
        """Queue a sample per route attempt; when one failed, diagnose the routes in the background
        (at most every diagnosis_interval seconds)."""
        if self.reports is None:
            return
        failed = False
        for a in self.routes.last_attempts:
            if a.ok:
                self.reports.add(a.route, True, elapsed_ms=a.elapsed_ms)
            else:
                failed = True
        loop = asyncio.get_running_loop()
        if failed and self._diagnosing is None and loop.time() - self._last_diagnosis_at > self.diagnosis_interval:
            self._last_diagnosis_at = loop.time()
            self._diagnosing = asyncio.create_task(self._diagnose())

    async def _diagnose(self) -> None:
        try:
            target = self.diagnosis_target or Target(self.routes.routes)
            assert self.reports is not None
            d = await diagnose(target, self.reports.region, self.reports.asn)
            self.last_diagnosis = d
            self.reports.add_diagnosis(d)
            self._events.put_nowait(Event("diagnosis", d.to_json()))
            if self._ready.is_set():
                await self._send_reports()
        except Exception:
            log.exception("diagnosis failed")
        finally:
            self._diagnosing = None

    async def _send_reports(self) -> None:
        if self.reports is None:
            return
        with contextlib.suppress(DariError, TimeoutError):
            await self.reports.flush(lambda method, **params: self._call_raw(method, params))

    async def diagnose_now(self) -> Diagnosis:
        """Diagnose every route now, queue the result and send it if a route works."""
        target = self.diagnosis_target or Target(self.routes.routes)
        region, asn = (self.reports.region, self.reports.asn) if self.reports else ("ZZ", "")
        d = await diagnose(target, region, asn)
        self.last_diagnosis = d
        if self.reports is not None:
            self.reports.add_diagnosis(d)
            if self._ready.is_set():
                await self._send_reports()
        return d

    async def _upgrade(self, current: Link) -> None:
        """On a fallback route, keep trying the better ones; when one works, move the session there
        (resume by cursor: nothing lost, nothing doubled)."""
        try:
            while self._link is current and not self._closing:
                await asyncio.sleep(self.upgrade_interval * (0.8 + 0.4 * random.random()))
                better = self.routes.better_than(current.route)
                if not better or self._link is not current:
                    return
                try:
                    probe = await self.routes.connect(await self._session(), better)
                except AllRoutesFailed:
                    continue
                await probe.close()
                log.info("a better route works again (%s): switching", probe.route.label)
                await current.close()
                return
        finally:
            self._upgrader = None

    async def _open_session(self) -> None:
        try:
            info = await self._call_raw("session.open", {"token": self.token, "cursor": self.cursor})
        except DariError as err:
            if err.code != ErrorCode.RESYNC_NEEDED:
                raise
            # Away too long: start from now and tell the app to reload chats and history.
            self.resyncs += 1
            info = await self._call_raw("session.open", {"token": self.token})
            self.cursor = info["cursor"]
            self._events.put_nowait(Event("session.resync", {"cursor": self.cursor}))
        self.user = info["user"]
        self.device_id = info["device_id"]
        if self.cursor is None:
            self.cursor = info["cursor"]
        self._outbox_wake.set()

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DariError(ErrorCode.UNAVAILABLE, why))
        self._pending.clear()

    async def _read(self, link: Link) -> None:
        try:
            await self._read_frames(link)
        finally:
            # Whoever waits for an answer on this link (session.open included) learns at once.
            if self._link is link:
                self._fail_pending("connection lost; retry")

    async def _read_frames(self, link: Link) -> None:
        while True:
            data = await link.recv()
            if data is None:
                break
            self._last_rx = asyncio.get_running_loop().time()
            try:
                frame = frames.decode_server_frame(data)
            except (DariError, msgspec.DecodeError, msgspec.ValidationError):
                log.warning("ignoring an undecodable frame from the server")
                continue
            if isinstance(frame, frames.EventFrame):
                if frame.cursor is not None:
                    if self.cursor is not None and frame.cursor <= self.cursor:
                        continue   # already seen: a replay overlapping a live delivery
                    self.cursor = frame.cursor
                if frame.event == "session.live":
                    self._live.set()
                elif frame.event == "session.revoked":
                    self.token = None
                    self.revoked = True
                ev = Event(frame.event, frame.payload, frame.cursor)
                for hook in self.event_hooks:
                    hook(ev)
                self._events.put_nowait(ev)
            else:
                fut = self._pending.pop(frame.id, None) if frame.id is not None else None
                if fut is None or fut.done():
                    continue
                if frame.error is not None:
                    fut.set_exception(_raise(frame.error))
                else:
                    fut.set_result(frame.result)
        log.debug("connection closed: code=%s", link.close_code)
        if link.close_code == 4001:
            # Revoked from another device: stop reconnecting; the app must log in again.
            self.token = None
            self.revoked = True
            self._closing = True

    # -- calls -----------------------------------------------------------------------------
    async def _call_raw(self, method: str, params: dict[str, Any]) -> Any:
        link = self._link
        if link is None or not self._connected.is_set():
            raise DariError(ErrorCode.UNAVAILABLE, "not connected")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[rid] = fut
        self._started[rid] = loop.time()
        try:
            await link.send(frames.encode_request(rid, method, params))
            return await asyncio.wait_for(fut, self.call_timeout)
        finally:
            self._pending.pop(rid, None)
            self._started.pop(rid, None)

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call a method; waits for a connection (up to call_timeout) if it is reconnecting."""
        if self._runner is None:
            await self.connect()
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.call_timeout)
            except TimeoutError:
                raise DariError(ErrorCode.UNAVAILABLE, "no connection to the server") from None
        params = {k: v for k, v in params.items() if v is not None}
        return await self._call_raw(method, params)

    async def rest(self, method: str, /, **params: Any) -> Any:
        """The same call over REST (POST /api/v1/METHOD), for scripts and tests."""
        http = await self._session()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with http.post(f"{self.url}/api/v1/{method}", json=params, headers=headers) as resp:
            body = await resp.json(content_type=None)
        if body.get("error"):
            raise _raise(msgspec.convert(body["error"], frames.ErrorBody))
        return body["result"]

    # -- account helpers -------------------------------------------------------------------
    async def signup(self, handle: str, display_name: str, password: str, *, device_name: str = "sdk",
                     phone: str | None = None, region: str | None = None,
                     device_kind: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"handle": handle, "display_name": display_name, "password": password,
                                  "device_name": device_name}
        if device_kind:
            params["device_kind"] = device_kind
        if phone:
            info = await self.call("server.info")
            params["phone_hash"] = phone_hash(info["contact_key"], phone, region)
        # Over the realtime link, like everything else: sign-up works on every route (G6).
        res = await self.call("account.signup", **params)
        await self._adopt(res)
        return dict(res)

    async def login(self, handle: str, password: str, *, device_name: str = "sdk",
                    device_kind: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"handle": handle, "password": password, "device_name": device_name}
        if device_kind:
            params["device_kind"] = device_kind
        res = await self.call("account.login", **params)
        await self._adopt(res)
        return dict(res)

    async def _adopt(self, res: dict[str, Any]) -> None:
        self.token, self.user, self.device_id = res["token"], res["user"], res["device_id"]
        self.cursor = None
        await self._open_session()

    async def contact_hashes(self, numbers: list[str], region: str | None = None) -> list[str]:
        """Keyed hashes of phone numbers, each read in `region` (default: default_region()) unless it
        has a +country code. Only these hashes ever leave the device."""
        info = await self.call("server.info")
        return [phone_hash(info["contact_key"], p, region) for p in numbers]

    # -- events ----------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._events.get()

    async def next_event(self, name: str | None = None, timeout: float = 10.0) -> Event:
        """The next event (of a given name, skipping others). For scripts and tests."""
        async def wait() -> Event:
            while True:
                ev = await self._events.get()
                if name is None or ev.name == name:
                    return ev
        return await asyncio.wait_for(wait(), timeout)

    def drain_events(self) -> list[Event]:
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    # -- messages through the outbox -------------------------------------------------------
    async def send_message(self, chat_id: int, text: str, *, reply_to: int | None = None,
                           mentions: list[int] | None = None, client_id: str | None = None) -> Any:
        """Send a message. With an outbox it is stored on disk first and delivered once a connection
        exists, even after a restart; returns the client_id then. Without one, returns the message."""
        if self.outbox is None:
            import uuid

            cid = client_id or uuid.uuid4().hex
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.call_timeout
            while True:
                try:
                    return await self.call("message.send", chat_id=chat_id, text=text, reply_to=reply_to,
                                           mentions=mentions or [], client_id=cid)
                except DariError as err:
                    # The same client_id makes the retry safe: the server stores it once (G2).
                    if err.code != ErrorCode.UNAVAILABLE or loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        cid = self.outbox.add(chat_id, text, reply_to, mentions, client_id)
        self._outbox_wake.set()
        return cid

    async def flush_outbox(self, timeout: float = 30.0) -> None:
        """Wait until the outbox is empty (sent or failed permanently)."""
        assert self.outbox is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.outbox):
            if loop.time() > deadline:
                raise TimeoutError(f"{len(self.outbox)} messages still queued")
            self._outbox_wake.set()
            await asyncio.sleep(0.05)

    async def _flush_outbox(self) -> None:
        assert self.outbox is not None
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            for item in self.outbox.pending():
                if not await self._deliver(item):
                    break   # offline or failing: keep order, try again on the next wake-up

    async def _deliver(self, item: Pending) -> bool:
        assert self.outbox is not None
        if not self._ready.is_set() or not self.token:
            return False
        self.outbox.attempt(item.client_id)
        try:
            msg = await self._call_raw("message.send", {"chat_id": item.chat_id, "client_id": item.client_id,
                                                        "text": item.text, "reply_to": item.reply_to,
                                                        "mentions": item.mentions})
        except DariError as err:
            if err.code in PERMANENT:
                self.outbox.fail(item, err.code.value, err.message)
                self._events.put_nowait(Event("outbox.failed", {"client_id": item.client_id,
                                                                "code": err.code.value, "message": err.message}))
                return True
            asyncio.get_running_loop().call_later(1.0, self._outbox_wake.set)
            return False
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        self.outbox.done(item.client_id)
        self._events.put_nowait(Event("outbox.sent", msg))
        return True
