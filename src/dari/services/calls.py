"""Calls (issue 12): who rings whom, who answered on which device, how a call ended.

The server never touches media. It keeps each call's state in the database (so any server process
can answer a method about it), tells the devices what changed with ephemeral events, relays the
WebRTC signaling between two devices of a call, and writes the chat's system lines: missed,
declined, busy, and the length of a call that ended.

States: a call is `ringing` until someone answers, `active` while people talk, then `ended`. Each
person in it is `ringing`, `joined` (on one device), `left`, `declined` or `missed`. A group call
is a mesh: every joined device has a peer connection to every other, at most GROUP_CALL_MAX.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from typing import Any

from dari.protocol import calls as pc
from dari.protocol import methods as m
from dari.protocol import system_events as se
from dari.protocol.errors import DariError, ErrorCode
from dari.services import timeline
from dari.services.core import Caller, Core, is_blocked, now_ms
from dari.storage.base import Tx

log = logging.getLogger(__name__)

LIVE = ("ringing", "active")


def turn_credentials(secret: str, user_id: int, ttl_s: int, now_s: float | None = None) -> tuple[str, str]:
    """coturn's REST-API credentials (use-auth-secret): the username carries its own expiry, the
    password is base64(HMAC-SHA1(secret, username)), so coturn checks them without asking dari."""
    expiry = int(now_s if now_s is not None else time.time()) + ttl_s
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _split(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def call_info(tx: Tx, call_id: int) -> dict[str, Any]:
    row = tx.one("SELECT id, chat_id, caller_id, video, grp, state, created_at, ring_until, answered_at, ended_at,"
                 " end_reason FROM calls WHERE id = ?", (call_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no call {call_id}")
    members = [{"user_id": r[0], "device_id": r[1], "state": r[2], "name": r[3]} for r in tx.all(
        "SELECT cm.user_id, cm.device_id, cm.state, u.display_name FROM call_members cm JOIN users u"
        " ON u.id = cm.user_id WHERE cm.call_id = ? ORDER BY cm.user_id", (call_id,))]
    title = tx.scalar("SELECT title FROM chats WHERE id = ?", (row[1],))
    return {"call_id": row[0], "chat_id": row[1], "caller_id": row[2], "video": bool(row[3]), "group": bool(row[4]),
            "state": row[5], "created_at": row[6], "ring_until": row[7], "answered_at": row[8],
            "ended_at": row[9], "reason": row[10], "title": title or "",
            "caller_name": timeline.display_name(tx, row[1], row[2]), "members": members}


def _lock_call(tx: Tx, call_id: int) -> tuple[Any, ...]:
    row = tx.one(f"SELECT id, chat_id, caller_id, video, grp, state, ring_until, answered_at FROM calls"
                 f" WHERE id = ?{tx.for_update}", (call_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no call {call_id}")
    return row


def _member(tx: Tx, call_id: int, user_id: int) -> tuple[Any, ...]:
    row = tx.one("SELECT state, device_id FROM call_members WHERE call_id = ? AND user_id = ?", (call_id, user_id))
    if row is None:
        raise DariError(ErrorCode.FORBIDDEN, f"you are not in call {call_id}")
    return row


def _in_other_call(tx: Tx, user_id: int, call_id: int = 0) -> bool:
    return tx.one("SELECT 1 FROM call_members cm JOIN calls c ON c.id = cm.call_id WHERE cm.user_id = ?"
                  " AND cm.state = 'joined' AND c.state IN ('ringing', 'active') AND c.id <> ?",
                  (user_id, call_id)) is not None


def _person(tx: Tx, chat_id: int, user_id: int) -> dict[str, Any]:
    return se.person(user_id, timeline.display_name(tx, chat_id, user_id))


def _end(tx: Tx, call_id: int, reason: str, now: int, actor: int | None = None) -> None:
    """End a call and write its line: its length when someone answered, else missed or declined."""
    row = tx.one("SELECT chat_id, caller_id, video, grp, answered_at FROM calls WHERE id = ?", (call_id,))
    assert row is not None
    chat_id, caller_id, video, grp, answered_at = row
    tx.execute("UPDATE calls SET state = 'ended', ended_at = ?, end_reason = ? WHERE id = ?", (now, reason, call_id))
    unanswered = [r[0] for r in tx.all("SELECT user_id FROM call_members WHERE call_id = ? AND state = 'ringing'",
                                       (call_id,))]
    tx.execute("UPDATE call_members SET state = 'missed' WHERE call_id = ? AND state = 'ringing'", (call_id,))
    tx.execute("UPDATE call_members SET state = 'left' WHERE call_id = ? AND state = 'joined'", (call_id,))
    caller = _person(tx, chat_id, caller_id)
    if answered_at is not None:
        event = se.event(se.CALL_ENDED, caller, video=bool(video), duration_s=max(0, (now - answered_at) // 1000))
    elif reason == "declined" and actor is not None:
        event = se.event(se.CALL_DECLINED, _person(tx, chat_id, actor), users=[caller], video=bool(video))
    elif reason == "busy":
        event = se.event(se.CALL_BUSY, caller, users=[_person(tx, chat_id, u) for u in unanswered],
                         video=bool(video))
    elif reason == "blocked":
        return   # the one who blocked the caller hears nothing and sees nothing
    else:
        event = se.event(se.CALL_MISSED, caller, users=[_person(tx, chat_id, u) for u in unanswered],
                         video=bool(video))
    timeline.system(tx, chat_id, caller_id, event, now, [] if grp else unanswered)


def _audience(info: dict[str, Any]) -> list[int]:
    return [mb["user_id"] for mb in info["members"]]


class Calls:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Any]:
        return {"call.start": self.start, "call.accept": self.accept, "call.decline": self.decline,
                "call.hangup": self.hangup, "call.signal": self.signal, "call.current": self.current,
                "call.turn_credentials": self.turn}

    def _tell(self, user_ids: list[int], event: str, payload: Any) -> None:
        self.core.bus.ephemeral(list(dict.fromkeys(user_ids)), event, payload)

    def _ring_timer(self, call_id: int, delay_s: float) -> None:
        """Expire the ringing when nobody answers. Another process sweeps calls whose process died
        (see `_sweep`), so a lost timer only delays the missed-call line."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(call_id, None)
            self._spawn(self._expire(call_id))

        self._timers[call_id] = loop.call_later(max(0.0, delay_s), fire)

    async def _expire(self, call_id: int) -> None:
        now = now_ms()

        def fn(tx: Tx) -> tuple[dict[str, Any], list[int]] | None:
            row = _lock_call(tx, call_id)
            if row[5] not in LIVE or row[6] > now:
                return None
            ringing = [r[0] for r in tx.all("SELECT user_id FROM call_members WHERE call_id = ? AND state = 'ringing'",
                                            (call_id,))]
            if row[5] == "ringing":
                _end(tx, call_id, "missed", now)
            else:
                # A running group call: those who never answered stop ringing.
                tx.execute("UPDATE call_members SET state = 'missed' WHERE call_id = ? AND state = 'ringing'",
                           (call_id,))
            return call_info(tx, call_id), ringing

        try:
            out = await self.core.db.write(fn)
        except DariError as exc:
            log.warning("call %s: could not expire the ringing: %s", call_id, exc.message)
            return
        if out is None:
            return
        info, ringing = out
        if info["state"] == "ended":
            self._tell(_audience(info), "call.ended", info)
        else:
            self._tell(_audience(info), "call.missed", {"call_id": call_id, "user_ids": ringing, "call": info})

    async def _sweep(self) -> None:
        """Calls that rang past their time on a process that is gone."""
        now = now_ms()
        due = await self.core.db.read(lambda tx: [r[0] for r in tx.all(
            "SELECT id FROM calls WHERE state IN ('ringing', 'active') AND ring_until < ? LIMIT 50", (now - 2000,))
            if r[0] not in self._timers])
        for call_id in due:
            await self._expire(call_id)

    # -- methods -----------------------------------------------------------------------------
    async def _reap_offline(self, chat_id: int) -> None:
        """Take out of their calls the chat's members whose call device is offline: a process that
        restarted lost the timers of `device_offline`, and nobody should look busy for ever."""
        rows = await self.core.db.read(lambda tx: tx.all(
            "SELECT cm.call_id, cm.user_id, cm.device_id FROM call_members cm JOIN calls c ON c.id = cm.call_id"
            " JOIN members mb ON mb.user_id = cm.user_id AND mb.chat_id = ? AND mb.active = 1"
            " WHERE cm.state = 'joined' AND c.state IN ('ringing', 'active') LIMIT 100", (chat_id,)))
        for call_id, user_id, device_id in rows:
            if not self.core.bus.is_device_online(device_id):
                with contextlib.suppress(DariError):
                    await self.hangup(Caller(user_id, device_id), pc.CallRef(call_id=call_id))

    async def start(self, caller: Caller, p: pc.CallStart) -> dict[str, Any]:
        await self._sweep()
        await self._reap_offline(p.chat_id)
        now = now_ms()
        ring_ms = int(self.core.settings.call_ring_s * 1000)

        def fn(tx: Tx) -> tuple[dict[str, Any], list[int]]:
            row = tx.one("SELECT kind FROM chats WHERE id = ?", (p.chat_id,))
            members = [r[0] for r in tx.all("SELECT user_id FROM members WHERE chat_id = ? AND active = 1",
                                            (p.chat_id,))]
            if row is None or caller.user_id not in members:
                raise DariError(ErrorCode.FORBIDDEN, f"you are not a member of chat {p.chat_id}")
            kind = row[0]
            if kind == "open":
                raise DariError(ErrorCode.INVALID_PARAMS, "open chats have no calls", {"reason": "open_chat"})
            grp = kind == "group"
            if grp and p.video:
                raise DariError(ErrorCode.INVALID_PARAMS, "group calls are voice only", {"reason": "group_video"})
            if _in_other_call(tx, caller.user_id):
                raise DariError(ErrorCode.CONFLICT, "you are already in a call", {"reason": "in_call"})
            others = [u for u in members if u != caller.user_id]
            if kind == "direct":
                peer = tx.scalar("SELECT user_id FROM members WHERE chat_id = ? AND user_id <> ?",
                                 (p.chat_id, caller.user_id))
                others = [peer] if peer is not None else []
            if grp:
                running = tx.scalar("SELECT id FROM calls WHERE chat_id = ? AND state IN ('ringing', 'active')",
                                    (p.chat_id,))
                if running is not None:
                    raise DariError(ErrorCode.CONFLICT, "this group already has a call: join it",
                                    {"reason": "call_running", "call_id": running})
            if not others:
                raise DariError(ErrorCode.INVALID_PARAMS, "there is nobody to call in this chat")
            call_id = tx.insert_id(
                "INSERT INTO calls (chat_id, caller_id, video, grp, state, created_at, ring_until)"
                " VALUES (?, ?, ?, ?, 'ringing', ?, ?)", (p.chat_id, caller.user_id, int(p.video), int(grp), now,
                                                           now + ring_ms))
            tx.execute("INSERT INTO call_members (call_id, user_id, device_id, state, joined_at)"
                       " VALUES (?, ?, ?, 'joined', ?)", (call_id, caller.user_id, caller.device_id, now))
            for uid in others:
                tx.execute("INSERT INTO call_members (call_id, user_id, state) VALUES (?, ?, 'ringing')",
                           (call_id, uid))
            ring = list(others)
            if not grp:
                if is_blocked(tx, others[0], caller.user_id):
                    ring = []   # like a message: it looks like an unanswered call to the caller
                elif _in_other_call(tx, others[0], call_id):
                    _end(tx, call_id, "busy", now)
                    ring = []
            else:
                timeline.system(tx, p.chat_id, caller.user_id,
                                se.event(se.GROUP_CALL_STARTED, _person(tx, p.chat_id, caller.user_id)), now)
            return call_info(tx, call_id), ring

        info, ring = await self.core.db.write(fn)
        if info["state"] != "ended":
            self._ring_timer(info["call_id"], ring_ms / 1000)
            self._tell(ring, "call.ringing", info)
        self._tell([caller.user_id], "call.updated", info)
        return info

    async def accept(self, caller: Caller, p: pc.CallRef) -> dict[str, Any]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            row = _lock_call(tx, p.call_id)
            state, device = _member(tx, p.call_id, caller.user_id)
            if row[5] not in LIVE:
                raise DariError(ErrorCode.CONFLICT, "this call has ended", {"reason": "ended"})
            grp = bool(row[4])
            if state == "joined":
                raise DariError(ErrorCode.CONFLICT, "answered on another device" if device != caller.device_id
                                else "you are already in this call", {"reason": "answered_elsewhere"})
            if not grp and state != "ringing":
                raise DariError(ErrorCode.CONFLICT, "this call is no longer ringing for you", {"reason": state})
            if _in_other_call(tx, caller.user_id, p.call_id):
                raise DariError(ErrorCode.CONFLICT, "you are already in a call", {"reason": "in_call"})
            joined = tx.scalar("SELECT COUNT(*) FROM call_members WHERE call_id = ? AND state = 'joined'",
                               (p.call_id,))
            if joined >= pc.GROUP_CALL_MAX:
                raise DariError(ErrorCode.LIMIT_EXCEEDED, f"a call holds at most {pc.GROUP_CALL_MAX} people",
                                {"reason": "call_full", "limit": pc.GROUP_CALL_MAX})
            tx.execute("UPDATE call_members SET state = 'joined', device_id = ?, joined_at = ? WHERE call_id = ?"
                       " AND user_id = ?", (caller.device_id, now, p.call_id, caller.user_id))
            tx.execute("UPDATE calls SET state = 'active', answered_at = COALESCE(answered_at, ?) WHERE id = ?",
                       (now, p.call_id))
            return call_info(tx, p.call_id)

        info = await self.core.db.write(fn)
        # Everyone in the call learns which device joined: devices already in it offer to it, and
        # the person's other devices stop ringing (answered elsewhere).
        accepted = {"call_id": p.call_id, "user_id": caller.user_id, "device_id": caller.device_id, "call": info}
        self._tell([u for u in _audience(info) if u != caller.user_id], "call.accepted", accepted)
        self._tell([caller.user_id], "call.answered_elsewhere", accepted)
        return info

    async def decline(self, caller: Caller, p: pc.CallRef) -> dict[str, Any]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            row = _lock_call(tx, p.call_id)
            state, _ = _member(tx, p.call_id, caller.user_id)
            if row[5] not in LIVE or state != "ringing":
                raise DariError(ErrorCode.CONFLICT, "this call is not ringing for you", {"reason": state})
            tx.execute("UPDATE call_members SET state = 'declined' WHERE call_id = ? AND user_id = ?",
                       (p.call_id, caller.user_id))
            if not row[4]:
                _end(tx, p.call_id, "declined", now, actor=caller.user_id)
            return call_info(tx, p.call_id)

        info = await self.core.db.write(fn)
        self._cancel_timer(info)
        if info["state"] == "ended":
            self._tell(_audience(info), "call.ended", info)
        else:
            self._tell(_audience(info), "call.declined", {"call_id": p.call_id, "user_id": caller.user_id,
                                                          "call": info})
        return info

    async def hangup(self, caller: Caller, p: pc.CallRef) -> dict[str, Any]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            row = _lock_call(tx, p.call_id)
            state, device = _member(tx, p.call_id, caller.user_id)
            if row[5] not in LIVE:
                return call_info(tx, p.call_id)
            if state != "joined" or device != caller.device_id:
                raise DariError(ErrorCode.CONFLICT, "this device is not in the call", {"reason": "not_joined"})
            tx.execute("UPDATE call_members SET state = 'left' WHERE call_id = ? AND user_id = ?",
                       (p.call_id, caller.user_id))
            left = tx.scalar("SELECT COUNT(*) FROM call_members WHERE call_id = ? AND state = 'joined'",
                             (p.call_id,))
            # A 1:1 call ends when either hangs up (the caller before an answer: a missed call); a group
            # call when nobody is left in it, or one person once nobody is ringing any more.
            ringing = tx.scalar("SELECT COUNT(*) FROM call_members WHERE call_id = ? AND state = 'ringing'",
                                (p.call_id,))
            if not row[4] or left == 0 or (left == 1 and ringing == 0 and row[7] is not None):
                _end(tx, p.call_id, "hangup" if row[7] is not None else "missed", now)
            return call_info(tx, p.call_id)

        info = await self.core.db.write(fn)
        if info["state"] == "ended":
            self._cancel_timer(info)
            self._tell(_audience(info), "call.ended", info)
        else:
            self._tell(_audience(info), "call.left", {"call_id": p.call_id, "user_id": caller.user_id,
                                                      "device_id": caller.device_id, "call": info})
        return info

    def device_offline(self, user_id: int, device_id: int) -> None:
        """The device's last session closed: if it is still gone after the grace time, it leaves its
        call, so a closed tab or a dead phone does not keep anyone "in a call" for ever."""
        async def later() -> None:
            # A route switch or a reconnect is not leaving: media may still flow peer to peer.
            await asyncio.sleep(self.core.settings.call_offline_grace_s)
            if self.core.bus.is_device_online(device_id):
                return
            ids = await self.core.db.read(lambda tx: [r[0] for r in tx.all(
                "SELECT cm.call_id FROM call_members cm JOIN calls c ON c.id = cm.call_id WHERE cm.user_id = ?"
                " AND cm.device_id = ? AND cm.state = 'joined' AND c.state IN ('ringing', 'active')",
                (user_id, device_id))])
            for call_id in ids:
                with contextlib.suppress(DariError):
                    await self.hangup(Caller(user_id, device_id), pc.CallRef(call_id=call_id))

        self._spawn(later())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self, info: dict[str, Any]) -> None:
        if info["state"] == "ended":
            timer = self._timers.pop(info["call_id"], None)
            if timer is not None:
                timer.cancel()

    async def signal(self, caller: Caller, p: pc.CallSignal) -> dict[str, bool]:
        def fn(tx: Tx) -> int | None:
            row = tx.one("SELECT state FROM calls WHERE id = ?", (p.call_id,))
            if row is None or row[0] not in LIVE:
                raise DariError(ErrorCode.CONFLICT, "this call has ended", {"reason": "ended"})
            devices = {r[1]: r[0] for r in tx.all(
                "SELECT user_id, device_id FROM call_members WHERE call_id = ? AND state = 'joined'", (p.call_id,))}
            if devices.get(caller.device_id) != caller.user_id:
                raise DariError(ErrorCode.FORBIDDEN, "this device is not in the call", {"reason": "not_joined"})
            return devices.get(p.to_device)

        to_user = await self.core.db.read(fn)
        if to_user is None:
            raise DariError(ErrorCode.NOT_FOUND, f"device {p.to_device} is not in the call", {"reason": "gone"})
        payload = p.payload
        self._tell([to_user], "call.signal", {
            "call_id": p.call_id, "from_user": caller.user_id, "from_device": caller.device_id,
            "to_device": p.to_device, "payload": {"type": payload.type, "sdp": payload.sdp,
                                                  "candidate": payload.candidate, "sdp_mid": payload.sdp_mid,
                                                  "sdp_mline_index": payload.sdp_mline_index}})
        return {"ok": True}

    async def current(self, caller: Caller, p: m.NoParams) -> list[dict[str, Any]]:
        await self._sweep()

        def fn(tx: Tx) -> list[dict[str, Any]]:
            ids = [r[0] for r in tx.all(
                "SELECT c.id FROM calls c JOIN call_members cm ON cm.call_id = c.id WHERE cm.user_id = ?"
                " AND c.state IN ('ringing', 'active') AND cm.state IN ('ringing', 'joined')"
                " ORDER BY c.id DESC LIMIT 10", (caller.user_id,))]
            return [call_info(tx, i) for i in ids]

        return await self.core.db.read(fn)

    async def turn(self, caller: Caller, p: m.NoParams) -> dict[str, Any]:
        s = self.core.settings
        servers: list[dict[str, Any]] = []
        stun = _split(s.stun_urls)
        if stun:
            servers.append({"urls": stun})
        turn = _split(s.turn_urls)
        out: dict[str, Any] = {"ice_servers": servers, "relay_only": s.call_relay_only, "ttl_s": 0}
        if turn and s.turn_secret:
            username, credential = turn_credentials(s.turn_secret, caller.user_id, s.turn_ttl_s)
            servers.append({"urls": turn, "username": username, "credential": credential})
            out["ttl_s"] = s.turn_ttl_s
        return out

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
