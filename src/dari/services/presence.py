"""Typing and presence: ephemeral, never written per event. Only `last_seen_at` is stored, on going
offline, once per session."""

from __future__ import annotations

import functools
import time

from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import Presence
from dari.services.batching import TickBatcher
from dari.services.core import Caller, Core, active_members, now_ms
from dari.storage.base import Tx

_MEMBER_CACHE_S = 5.0
_ONLINE_BATCH = 500


def _visible(tx: Tx, target: int, viewer: int) -> bool:
    if target == viewer:
        return True
    vis = tx.scalar("SELECT presence_visibility FROM users WHERE id = ?", (target,))
    if vis == "everyone":
        return not tx.one("SELECT 1 FROM blocks WHERE user_id = ? AND blocked_id = ?", (target, viewer))
    if vis == "friends":
        return tx.one("SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", (target, viewer)) is not None
    return False


def _watchers(tx: Tx, user_id: int) -> list[int]:
    """People who have this user as a friend and may see their presence."""
    return [r[0] for r in tx.all("SELECT user_id FROM friends WHERE friend_id = ?", (user_id,))
            if _visible(tx, user_id, r[0])]


def _watchers_of(user_ids: list[int], tx: Tx) -> list[list[int] | DariError]:
    return [_watchers(tx, uid) for uid in user_ids]


class PresenceService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._members: dict[int, tuple[float, list[int]]] = {}
        # Users who come online together (a reconnect storm) share one reader call.
        self._watchers_batch: TickBatcher[int, list[int]] = TickBatcher(
            lambda user_ids: core.db.read(functools.partial(_watchers_of, user_ids)), limit=_ONLINE_BATCH)

    async def _chat_members(self, chat_id: int, user_id: int) -> list[int]:
        hit = self._members.get(chat_id)
        if hit is None or time.monotonic() - hit[0] > _MEMBER_CACHE_S or user_id not in hit[1]:
            members = await self.core.db.read(lambda tx: active_members(tx, chat_id))
            hit = (time.monotonic(), members)
            self._members[chat_id] = hit
            if len(self._members) > 10000:
                self._members.clear()
        if user_id not in hit[1]:
            raise DariError(ErrorCode.FORBIDDEN, f"you are not a member of chat {chat_id}")
        return hit[1]

    async def typing(self, caller: Caller, p: m.Typing) -> dict[str, bool]:
        members = await self._chat_members(p.chat_id, caller.user_id)
        others = [u for u in members if u != caller.user_id]
        self.core.bus.ephemeral(others, "typing", {"chat_id": p.chat_id, "user_id": caller.user_id,
                                                   "typing": p.typing})
        return {"ok": True}

    async def get(self, caller: Caller, p: m.UserIds) -> list[Presence]:
        ids = list(dict.fromkeys(p.user_ids))

        def fn(tx: Tx) -> list[Presence]:
            out = []
            for uid in ids:
                row = tx.one("SELECT last_seen_at FROM users WHERE id = ?", (uid,))
                if row is None:
                    continue
                if _visible(tx, uid, caller.user_id):
                    out.append(Presence(uid, self.core.bus.is_online(uid), row[0]))
                else:
                    out.append(Presence(uid, False, None))
            return out

        return await self.core.db.read(fn)

    async def went_online(self, user_id: int) -> None:
        try:
            watchers = await self._watchers_batch(user_id)
        except DariError:
            return   # storage unavailable: presence is best effort
        self.core.bus.ephemeral(watchers, "presence", {"user_id": user_id, "online": True})

    async def went_offline(self, user_id: int) -> None:
        now = now_ms()

        def fn(tx: Tx) -> list[int]:
            tx.execute("UPDATE users SET last_seen_at = ? WHERE id = ?", (now, user_id))
            return _watchers(tx, user_id)

        try:
            watchers = await self.core.db.write(fn)
        except DariError:
            return
        self.core.bus.ephemeral(watchers, "presence", {"user_id": user_id, "online": False, "last_seen_at": now})
