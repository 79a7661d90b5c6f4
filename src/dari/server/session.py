"""A client session, whatever carries it. A transport feeds it request frames and drains its outbox.

The session authenticates (session.open), resumes from a cursor by replaying stored events, buffers
live events while replaying so none is missed or sent twice (G4), rate-limits, and turns every
failure into a structured error frame (G8).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dari.protocol import frames
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import SessionInfo
from dari.services.core import Caller
from dari.services.peer import current_peer
from dari.services.sync import Replayed

if TYPE_CHECKING:
    from dari.server.app import ServerState

log = logging.getLogger("dari.session")

REPLAY_PAGE = 1000
MAX_IN_FLIGHT = 256

CLOSE_REVOKED = 4001
CLOSE_TOO_SLOW = 4008


class Session:
    def __init__(self, state: ServerState, peer: str, transport: str) -> None:
        self.state = state
        self.peer = peer
        self.transport = transport
        self.caller: Caller | None = None
        self.cursor = 0
        self.outbox: deque[bytes] = deque()
        # A transport either sets `notify` (called whenever frames are queued or the session closes)
        # or waits on `wakeup`; events are made on first use, as most idle connections never need them.
        self.notify: Callable[[], None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        self._replaying = False
        self._held: list[tuple[bytes, int | None]] = []
        self.on_close: Callable[[], None] | None = None

    @property
    def wakeup(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    def _wake(self) -> None:
        if self.notify is not None:
            self.notify()
        elif self._wakeup is not None:
            self._wakeup.set()

    # -- outgoing ---------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        self.outbox.append(frame)
        if len(self.outbox) > self.state.settings.send_buffer_frames:
            # A client that stopped reading must not grow our memory; it resumes by cursor later.
            self.state.metrics.slow_drops.inc()
            self.close(CLOSE_TOO_SLOW, "too slow: reconnect and resume")
            return
        self._wake()

    def push(self, frame: bytes, cursor: int | None) -> None:
        """A live event from the hub."""
        if self._replaying:
            self._held.append((frame, cursor))
        else:
            self._forward(frame, cursor)

    def _forward(self, frame: bytes, cursor: int | None) -> None:
        if cursor is not None:
            if cursor <= self.cursor:
                return   # already sent by a replay
            self.cursor = cursor
        self.send(frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._wake()
        if self._drained is not None:
            self._drained.set()
        self.detach()
        if self.on_close:
            self.on_close()

    def revoke(self) -> None:
        self.send(frames.encode_event("session.revoked", {"reason": "this device was logged out"}))
        self.close(CLOSE_REVOKED, "device revoked")

    def detach(self) -> None:
        if self.caller is not None:
            self.state.hub.remove(self, self.caller.user_id, self.caller.device_id)

    # -- incoming ---------------------------------------------------------------------------
    def admit(self, data: bytes | str, in_flight: int) -> bool:
        """Cheap checks before a frame gets a task: the rate limit and the in-flight cap. A refused
        frame is answered at once, so a flood costs the server almost nothing."""
        key: object = self.caller.device_id if self.caller else self.peer
        if in_flight >= MAX_IN_FLIGHT:
            err = DariError(ErrorCode.RATE_LIMITED, f"more than {MAX_IN_FLIGHT} requests in flight; wait for"
                            " replies", {"retry_after_s": 1})
        elif not self.state.limiter.allow(key):
            err = DariError(ErrorCode.RATE_LIMITED, "too many requests; slow down", {"retry_after_s": 1})
        else:
            return True
        self.state.metrics.errors.labels(err.code.value).inc()
        self.send(frames.encode_error(frames.request_id_of(data), err))
        return False

    async def handle(self, data: bytes | str) -> None:
        rid: int | str | None = None
        started = time.perf_counter()
        try:
            bus = self.state.services.core.bus
            if bus.shared:
                key = self.caller.device_id if self.caller else self.peer
                s = self.state.settings
                if not await bus.allow(key, s.rate_per_s, s.rate_burst):
                    rid = frames.request_id_of(data)
                    raise DariError(ErrorCode.RATE_LIMITED, "too many requests; slow down", {"retry_after_s": 1})
            try:
                req = frames.decode_request(data, self.state.settings.max_frame_bytes)
            except DariError:
                rid = frames.request_id_of(data)
                raise
            rid = req.id
            current_peer.set(self.peer)   # for boards that show masked IPs; per task, so per request
            if self.caller is None and m.lookup(req.method).auth:
                raise DariError(ErrorCode.UNAUTHENTICATED, "call session.open (or log in) first")
            if req.method == "session.open":
                await self._open(rid, req.params)
                return
            result = await self.state.services.call(self.caller, req.method, req.params)
            self.send(frames.encode_result(rid, result))
        except DariError as err:
            self.state.metrics.errors.labels(err.code.value).inc()
            self.send(frames.encode_error(rid, err))
        except Exception:
            log.exception("internal error handling a frame from %s", self.peer)
            self.state.metrics.errors.labels("internal").inc()
            self.send(frames.encode_error(rid, DariError(ErrorCode.INTERNAL, "internal error; it was logged")))
        finally:
            self.state.metrics.requests.labels(self.transport).inc()
            self.state.metrics.latency.observe(time.perf_counter() - started)

    async def catch_up(self) -> None:
        """Replay stored events after this session's cursor (after a shared-bus outage)."""
        if self.caller is None or self.closed or self._replaying:
            return
        self._replaying = True
        try:
            await self._replay(self.caller.user_id, [], True)
        except DariError as err:
            if err.code == ErrorCode.RESYNC_NEEDED:
                self.close(CLOSE_TOO_SLOW, "missed too much: reconnect and resync")
        finally:
            self._replaying = False
            held, self._held = self._held, []
            for frame, cursor in held:
                self._forward(frame, cursor)

    async def _replay(self, user_id: int, first: list[Replayed], more: bool) -> None:
        """Send stored events after the cursor (`first` is a page already read) and then the live ones
        held meanwhile, a page at a time at the client's pace; ends the replay."""
        sync = self.state.services.sync
        while True:
            for eid, etype, payload in first:
                if eid > self.cursor:
                    self.send(frames.encode_event(etype, payload, eid))
                    self.cursor = eid
            if not more or self.closed:
                break
            await self._room()
            first, more = await sync.replay(user_id, self.cursor, self._page())
        while self._held and not self.closed:
            await self._room()
            n = self._page()
            batch, self._held = self._held[:n], self._held[n:]
            for frame, cursor in batch:
                self._forward(frame, cursor)
        self._held.clear()
        self._replaying = False

    def _page(self) -> int:
        return max(1, min(REPLAY_PAGE, self.state.settings.send_buffer_frames // 2))

    async def _room(self) -> None:
        """Wait until the outbox is at most half full. A long catch-up then goes at the client's pace
        instead of overflowing send_buffer_frames and being dropped again on every resume."""
        half = self.state.settings.send_buffer_frames // 2
        while len(self.outbox) > half and not self.closed:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    def drained(self) -> None:
        """Called by the transport each time it has taken everything queued in the outbox."""
        if self._drained is not None:
            self._drained.set()

    async def _open(self, rid: int | str, params: dict[str, Any]) -> None:
        p = m.parse_params(m.METHODS["session.open"], params)
        assert isinstance(p, m.SessionOpen)
        if self.caller is not None:
            raise DariError(ErrorCode.CONFLICT, "this connection already has a session")
        accounts = self.state.services.accounts
        caller = await accounts.authenticate(p.token)
        sync = self.state.services.sync
        self._replaying = True
        self.caller = caller
        # Registered before reading, so every event committed after the read's snapshot reaches us
        # live (held until the replay is sent; duplicates are dropped by cursor).
        self.state.hub.add(self, caller.user_id, caller.device_id)
        try:
            # The profile and the first replay page (or the log head) in one reader call; the cursor
            # is validated before acknowledging, so resync_needed is the answer.
            me, self.cursor, first, more = await sync.open(caller.user_id, p.cursor, self._page())
            accounts.touch_device(caller)
            self.send(frames.encode_result(rid, SessionInfo(me, caller.device_id, self.cursor)))
            await self._replay(caller.user_id, first, more)
        except BaseException:
            self.state.hub.remove(self, caller.user_id, caller.device_id)
            self.caller = None
            self._held.clear()
            self._replaying = False
            raise
        self.send(frames.encode_event("session.live", {"cursor": self.cursor}))
