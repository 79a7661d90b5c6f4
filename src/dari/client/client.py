"""The client: one realtime connection with automatic reconnect and resume by cursor (G4),
request/response by id, an event stream, the on-disk outbox (G7), and end-to-end encryption
(docs/e2ee.md; e2ee_sync.py) on by default.

    async with Client("http://127.0.0.1:8080", crypto_path="keys-{user_id}-{device_id}.db") as c:
        await c.login("minji", "password", device_name="laptop")
        chat = await c.open_direct(2)                  # end-to-end encrypted
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import phonenumbers

from dari.client.diagnose import Diagnosis, Target, diagnose
from dari.client.e2ee.machine import E2EEError
from dari.client.e2ee_sync import E2EE
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
                 diagnosis_target: Target | None = None, stall_s: float = 3.0, keepalive_s: float = 15.0,
                 e2ee: bool = True, crypto_path: str | None = None) -> None:
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
        # End-to-end encryption (docs/e2ee.md): on unless asked not to; the store is in memory
        # without crypto_path (a new device identity per Client), on disk with it.
        self.e2ee: E2EE | None = E2EE(self, crypto_path) if e2ee else None

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
        for t in list(self._tasks):
            t.cancel()
        if self.e2ee is not None:
            self.e2ee.close()
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
        held = self.e2ee is not None and self.e2ee.hold()
        try:
            await self._open_session_held()
        except BaseException:
            if held and self.e2ee is not None:
                self.e2ee.release()
            raise
        if held and self.e2ee is not None:
            self.e2ee.session_opened()

    async def _open_session_held(self) -> None:
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
                if frame.event == "session.live" and self.e2ee is None:
                    self._live.set()   # with E2EE, once the events before it reached the queue
                elif frame.event == "session.revoked":
                    self.token = None
                    self.revoked = True
                if self.e2ee is not None:
                    self.e2ee.on_frame(Event(frame.event, frame.payload, frame.cursor))
                else:
                    self._events.put_nowait(Event(frame.event, frame.payload, frame.cursor))
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
        """Call a method; waits for a connection (up to call_timeout) if it is reconnecting.

        With E2EE on, `message.send`/`message.edit` with `text` into an E2EE chat are encrypted, and
        messages in results (send, edit, history, chat.list previews) are decrypted in place:
        `msg["text"]` holds the text and `msg["e2ee_status"]` is "ok" or why not. Other params pass
        through as given: `chat.create_group`/`chat.open_direct` create what they are asked for (use
        create_group/open_direct for E2EE by default)."""
        params = {k: v for k, v in params.items() if v is not None}
        if self.e2ee is None:
            return await self._plain_call(method, params)
        return await self._e2ee_call(method, params)

    async def _plain_call(self, method: str, params: dict[str, Any]) -> Any:
        if self._runner is None:
            await self.connect()
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.call_timeout)
            except TimeoutError:
                raise DariError(ErrorCode.UNAVAILABLE, "no connection to the server") from None
        return await self._call_raw(method, params)

    async def _e2ee_call(self, method: str, params: dict[str, Any]) -> Any:
        e = self.e2ee
        assert e is not None
        if method in ("message.send", "message.edit"):
            params = await e.prepare(method, params)
        elif method in ("message.history", "chat.list", "message.search") and self.token:
            await e.wait_ready(synced=True)   # keys queued for us are in before we decrypt
        if method in ("chat.remove_member", "chat.leave", "chat.invite") and "chat_id" in params:
            e.members.pop(int(params["chat_id"]), None)
        result = await self._plain_call(method, params)
        if method == "device.link_approve" and isinstance(result, dict):
            e.approved(int(result["device_id"]))
        elif method == "message.search" and isinstance(result, list) and e.active:
            local = await e.search(str(params.get("query", "")), params.get("chat_id"), int(params.get("limit", 20)))
            if any(h["chat_id"] not in e.chats for h in local):
                e.decrypt_result("chat.list", await self._plain_call("chat.list", {}))
                for h in local:
                    h["chat_title"] = (e.chats.get(h["chat_id"]) or {}).get("title", "")
            seen = {(h["chat_id"], h["seq"]) for h in result}
            merged = result + [h for h in local if (h["chat_id"], h["seq"]) not in seen]
            merged.sort(key=lambda h: -int(h.get("created_at") or 0))
            return merged[:int(params.get("limit", 20))]
        return e.decrypt_result(method, result)

    def _emit(self, name: str, payload: Any) -> None:
        self._events.put_nowait(Event(name, payload))

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

    # -- end-to-end encrypted chats --------------------------------------------------------
    def _e2ee_flag(self, e2ee: bool | None) -> bool | None:
        """E2EE by default for chats this SDK creates; None (leave it out) when this client has none,
        so a server without E2EE still works."""
        if e2ee is not None:
            return e2ee
        return True if self.e2ee is not None and self.e2ee.disabled is None else None

    async def create_group(self, title: str, member_ids: list[int], *, e2ee: bool | None = None,
                           **extra: Any) -> dict[str, Any]:
        """A group chat, end-to-end encrypted unless e2ee=False."""
        if self.e2ee is not None:
            await self.e2ee.wait_ready()
        return dict(await self.call("chat.create_group", title=title, member_ids=member_ids,
                                    e2ee=self._e2ee_flag(e2ee), **extra))

    async def open_direct(self, user_id: int, *, e2ee: bool | None = None) -> dict[str, Any]:
        """The 1:1 chat with someone, end-to-end encrypted unless e2ee=False (an existing plaintext
        1:1 chat is switched on)."""
        if self.e2ee is not None:
            await self.e2ee.wait_ready()
        return dict(await self.call("chat.open_direct", user_id=user_id, e2ee=self._e2ee_flag(e2ee)))

    def _need_e2ee(self) -> Any:
        if self.e2ee is None:
            raise DariError(ErrorCode.INVALID_PARAMS, "this client was made with e2ee=False")
        return self.e2ee

    async def safety_number(self, user_id: int) -> dict[str, Any]:
        """{safety_number: 12 groups of 5 digits, qr, verified, changed} with a contact."""
        return dict(await self._need_e2ee().safety(user_id))

    async def verify_user(self, user_id: int) -> dict[str, Any]:
        """Mark a contact verified (after comparing safety numbers): pins their master key."""
        return dict(await self._need_e2ee().mark_verified(user_id))

    @property
    def e2ee_state(self) -> str:
        """"ready", "waiting_for_approval" (another of our devices must share the keys: until then
        plaintext chats work and sending into encrypted ones is refused), "starting", or "off"."""
        return "off" if self.e2ee is None else self.e2ee.state

    async def e2ee_key_requests(self) -> list[dict[str, Any]]:
        """Our other devices waiting for this one to share the encryption keys (the event
        `e2ee.key_request {device_id, device_name}` announced each): [{device_id, device_name, requested_at}]."""
        return list(await self._need_e2ee().key_requests())

    async def share_e2ee_keys(self, device_id: int) -> None:
        """Approve a key request: send that device (a current device of ours, checked with device.list,
        its request signature checked) our master key and the chats' history keys."""
        await self._need_e2ee().share_keys(device_id)

    async def reset_e2ee(self) -> dict[str, Any]:
        """A new master key for the account, when no device holding the current one is left: contacts
        see "security code changed" and the other devices must be approved again. {master_key, previous}"""
        return dict(await self._need_e2ee().reset())

    async def link_start(self, device_name: str = "sdk", device_kind: str | None = None) -> dict[str, Any]:
        """New device: a code to approve from a logged-in device (device.link_approve)."""
        return dict(await self.call("device.link_start", device_name=device_name, device_kind=device_kind))

    async def link_wait(self, secret: str, timeout: float = 300.0, *, wait_keys: bool = True) -> dict[str, Any]:
        """New device: wait for the approval, log in with it, and (E2EE, unless wait_keys=False) wait
        for the approving device to hand over the master key and the chats' history keys."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            res = await self.call("device.link_poll", secret=secret)
            if res["status"] == "approved":
                break
            if res["status"] != "pending" or loop.time() > deadline:
                raise DariError(ErrorCode.NOT_FOUND, f"device link {res['status']}")
            await asyncio.sleep(0.3)
        if self.e2ee is not None:
            self.e2ee.awaiting_link = True
        await self._adopt(res)
        if self.e2ee is not None and wait_keys:
            await asyncio.wait_for(self.e2ee.linked.wait(), max(1.0, deadline - loop.time()))
        return dict(res)

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
        params = {"chat_id": item.chat_id, "client_id": item.client_id, "text": item.text,
                  "reply_to": item.reply_to, "mentions": item.mentions}
        try:
            if self.e2ee is not None:
                params = await self.e2ee.prepare("message.send", params)
            msg = await self._call_raw("message.send", params)
            if self.e2ee is not None:
                msg = self.e2ee.decrypt_result("message.send", msg)
        except DariError as err:
            if err.code in PERMANENT:
                self.outbox.fail(item, err.code.value, err.message)
                self._events.put_nowait(Event("outbox.failed", {"client_id": item.client_id,
                                                                "code": err.code.value, "message": err.message}))
                return True
            asyncio.get_running_loop().call_later(1.0, self._outbox_wake.set)
            return False
        except E2EEError as err:
            self.outbox.fail(item, "e2ee", str(err))
            self._events.put_nowait(Event("outbox.failed", {"client_id": item.client_id, "code": "e2ee",
                                                            "message": str(err)}))
            return True
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        self.outbox.done(item.client_id)
        self._events.put_nowait(Event("outbox.sent", msg))
        return True
