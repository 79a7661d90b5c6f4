"""Friends: one-way adds (as in KakaoTalk and LINE), contacts discovery, favourites, hiding, blocks."""

from __future__ import annotations

import asyncio
from typing import Any

from dari.protocol import methods as m
from dari.protocol import phones
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import Friend, UserProfile
from dari.services.core import Caller, Core, is_blocked, now_ms, profile, user_devices_event
from dari.storage.base import Tx


def _friend_row_to_model(r: tuple[Any, ...]) -> Friend:
    return Friend(UserProfile(int(r[0]), str(r[1]), str(r[2]), str(r[3])), bool(r[4]), bool(r[5]), bool(r[6]))


_FRIEND_SELECT = (
    "SELECT u.id, u.handle, u.display_name, u.status_message, f.favourite, f.hidden,"
    " EXISTS (SELECT 1 FROM friends r WHERE r.user_id = f.friend_id AND r.friend_id = f.user_id)"
    " FROM friends f JOIN users u ON u.id = f.friend_id WHERE f.user_id = ?"
)


class Friends:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def add(self, caller: Caller, p: m.FriendAdd) -> Friend:
        now = now_ms()

        def fn(tx: Tx) -> Friend:
            target = tx.scalar("SELECT id FROM users WHERE handle = ?", (p.handle,))
            if target is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no user with handle {p.handle!r}",
                                {"reason": "no_such_handle", "handle": p.handle})
            return _add(tx, caller.user_id, int(target), now)

        return await self.core.db.write(fn)

    async def find_by_contacts(self, caller: Caller, p: m.FindByContacts) -> list[UserProfile]:
        hashes = sorted(set(p.phone_hashes))
        if not hashes:
            return []

        def fn(tx: Tx) -> list[UserProfile]:
            out: list[UserProfile] = []
            for i in range(0, len(hashes), 500):
                chunk = hashes[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = tx.all(
                    f"SELECT u.id, u.handle, u.display_name, u.status_message FROM users u"
                    f" WHERE u.phone_hash IN ({marks}) AND u.id <> ? AND NOT EXISTS"
                    f" (SELECT 1 FROM blocks b WHERE b.user_id = u.id AND b.blocked_id = ?)",
                    (*chunk, caller.user_id, caller.user_id))
                out.extend(UserProfile(r[0], r[1], r[2], r[3]) for r in rows)
            return out

        return await self.core.db.read(fn)

    async def find_by_phones(self, caller: Caller, p: m.FindByPhones) -> list[UserProfile]:
        """For browsers: the numbers are normalized and hashed here, as the SDK does on the device,
        and are not kept."""
        key = self.core.contact_key
        # ~40 µs a number: a full list (500) off the event loop.
        hashes = await asyncio.to_thread(lambda: [phones.phone_hash(key, n, p.region) for n in p.phones])
        return await self.find_by_contacts(caller, m.FindByContacts(phone_hashes=hashes))

    async def list_friends(self, caller: Caller, p: m.NoParams) -> list[Friend]:
        rows = await self.core.db.read(lambda tx: tx.all(
            _FRIEND_SELECT + " ORDER BY f.favourite DESC, u.display_name", (caller.user_id,)))
        return [_friend_row_to_model(r) for r in rows]

    async def update(self, caller: Caller, p: m.FriendUpdate) -> Friend:
        now = now_ms()

        def fn(tx: Tx) -> Friend:
            if p.favourite is not None:
                tx.execute("UPDATE friends SET favourite = ? WHERE user_id = ? AND friend_id = ?",
                           (int(p.favourite), caller.user_id, p.user_id))
            if p.hidden is not None:
                tx.execute("UPDATE friends SET hidden = ? WHERE user_id = ? AND friend_id = ?",
                           (int(p.hidden), caller.user_id, p.user_id))
            row = tx.one(_FRIEND_SELECT + " AND f.friend_id = ?", (caller.user_id, p.user_id))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"user {p.user_id} is not your friend")
            friend = _friend_row_to_model(row)
            user_devices_event(tx, [caller.user_id], "friend.updated", friend, now)
            return friend

        return await self.core.db.write(fn)

    async def remove(self, caller: Caller, p: m.UserRef) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM friends WHERE user_id = ? AND friend_id = ?",
                              (caller.user_id, p.user_id)):
                raise DariError(ErrorCode.NOT_FOUND, f"user {p.user_id} is not your friend")
            user_devices_event(tx, [caller.user_id], "friend.removed", {"user_id": p.user_id}, now)

        await self.core.db.write(fn)
        return {"ok": True}

    async def block(self, caller: Caller, p: m.UserRef) -> dict[str, bool]:
        if p.user_id == caller.user_id:
            raise DariError(ErrorCode.INVALID_PARAMS, "you cannot block yourself")
        now = now_ms()

        def fn(tx: Tx) -> None:
            profile(tx, p.user_id)
            tx.execute("INSERT INTO blocks (user_id, blocked_id, created_at) VALUES (?, ?, ?)"
                       " ON CONFLICT DO NOTHING", (caller.user_id, p.user_id, now))
            tx.execute("DELETE FROM friends WHERE user_id = ? AND friend_id = ?", (caller.user_id, p.user_id))
            user_devices_event(tx, [caller.user_id], "friend.blocked", {"user_id": p.user_id}, now)

        await self.core.db.write(fn)
        return {"ok": True}

    async def unblock(self, caller: Caller, p: m.UserRef) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?",
                              (caller.user_id, p.user_id)):
                raise DariError(ErrorCode.NOT_FOUND, f"user {p.user_id} is not blocked")
            user_devices_event(tx, [caller.user_id], "friend.unblocked", {"user_id": p.user_id}, now)

        await self.core.db.write(fn)
        return {"ok": True}

    async def blocked(self, caller: Caller, p: m.NoParams) -> list[UserProfile]:
        rows = await self.core.db.read(lambda tx: tx.all(
            "SELECT u.id, u.handle, u.display_name, u.status_message FROM blocks b JOIN users u"
            " ON u.id = b.blocked_id WHERE b.user_id = ? ORDER BY u.handle", (caller.user_id,)))
        return [UserProfile(r[0], r[1], r[2], r[3]) for r in rows]

    async def get_user(self, caller: Caller, p: m.UserGet) -> UserProfile:
        if (p.user_id is None) == (p.handle is None):
            raise DariError(ErrorCode.INVALID_PARAMS, "give exactly one of user_id or handle")

        def fn(tx: Tx) -> UserProfile:
            uid = p.user_id or tx.scalar("SELECT id FROM users WHERE handle = ?", (p.handle,))
            if uid is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no user with handle {p.handle!r}")
            if p.user_id is not None and not _acquainted(tx, caller.user_id, int(uid)):
                # Open chats show user ids behind nicknames; an id alone must not unmask a profile.
                raise DariError(ErrorCode.FORBIDDEN, "you can look up this user by handle only")
            prof = profile(tx, int(uid))
            if is_blocked(tx, prof.user_id, caller.user_id):
                # A blocked user sees neither status nor later profile changes.
                return UserProfile(prof.user_id, prof.handle, prof.display_name, "")
            return prof

        return await self.core.db.read(fn)


def _acquainted(tx: Tx, me: int, other: int) -> bool:
    """Friends either way, or members of a common 1:1 or group chat."""
    if me == other:
        return True
    if tx.one("SELECT 1 FROM friends WHERE (user_id = ? AND friend_id = ?) OR (user_id = ? AND friend_id = ?)",
              (me, other, other, me)):
        return True
    return tx.one(
        "SELECT 1 FROM members a JOIN members b ON b.chat_id = a.chat_id JOIN chats c ON c.id = a.chat_id"
        " WHERE a.user_id = ? AND b.user_id = ? AND c.kind <> 'open' LIMIT 1", (me, other)) is not None


def _add(tx: Tx, user_id: int, target: int, now: int) -> Friend:
    if target == user_id:
        raise DariError(ErrorCode.INVALID_PARAMS, "you cannot add yourself", {"reason": "add_self"})
    # Adding someone who blocked you looks exactly like any add (KakaoTalk never reveals a block):
    # they land in your list, while they get no notice and nothing changes on their side.
    inserted = tx.execute(
        "INSERT INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (user_id, target, now))
    row = tx.one(_FRIEND_SELECT + " AND f.friend_id = ?", (user_id, target))
    assert row is not None
    friend = _friend_row_to_model(row)
    if is_blocked(tx, target, user_id):
        friend.user.status_message = ""   # as user.get shows a blocked viewer: no status, no later changes
    if inserted:
        user_devices_event(tx, [user_id], "friend.added", friend, now)
        if not (is_blocked(tx, target, user_id) or is_blocked(tx, user_id, target)):
            me = profile(tx, user_id)
            user_devices_event(tx, [target], "friend.added_you", {"user": me}, now)
    return friend
