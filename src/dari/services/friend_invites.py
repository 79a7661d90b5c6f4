"""Personal friend invites: a code per user behind a link (ORIGIN/#/add/CODE) and its QR code.

Whoever holds the link sees the owner's public profile and can add them, as KakaoTalk's "add by
QR code" does. One live code per user: rotating replaces it, revoking turns the link off.
"""

from __future__ import annotations

import secrets

from dari.protocol import invites as pi
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import Friend, FriendInvite, InvitePreview, UserProfile
from dari.services.core import Caller, Core, is_blocked, now_ms, profile
from dari.services.friends import _add
from dari.storage.base import Tx

GONE = "this invite link is not valid: it was replaced or turned off, or never existed"


def new_invite_code() -> str:
    """12 URL-safe characters starting with a letter or digit and holding a capital letter, so a
    code is never mistaken for a handle (lower case) or a command-line option."""
    while True:
        code = secrets.token_urlsafe(9)
        if code[0].isalnum() and any(ch.isupper() for ch in code):
            return code


def _owner(tx: Tx, code: str) -> int:
    uid = tx.scalar("SELECT user_id FROM friend_invites WHERE code = ?", (code,))
    if uid is None:
        raise DariError(ErrorCode.NOT_FOUND, GONE)
    return int(uid)


def _visible_profile(tx: Tx, owner: int, viewer: int) -> UserProfile:
    prof = profile(tx, owner)
    if is_blocked(tx, owner, viewer):
        # As in user.get: a blocked viewer sees no status, and nothing that tells them of the block.
        return UserProfile(prof.user_id, prof.handle, prof.display_name, "")
    return prof


class FriendInvites:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def get(self, caller: Caller, p: m.NoParams) -> FriendInvite:
        now = now_ms()

        def fn(tx: Tx) -> FriendInvite:
            row = tx.one("SELECT code, created_at FROM friend_invites WHERE user_id = ?", (caller.user_id,))
            if row is not None:
                return FriendInvite(row[0], row[1])
            return _create(tx, caller.user_id, now)

        return await self.core.db.write(fn)

    async def rotate(self, caller: Caller, p: m.NoParams) -> FriendInvite:
        now = now_ms()

        def fn(tx: Tx) -> FriendInvite:
            tx.execute("DELETE FROM friend_invites WHERE user_id = ?", (caller.user_id,))
            return _create(tx, caller.user_id, now)

        return await self.core.db.write(fn)

    async def revoke(self, caller: Caller, p: m.NoParams) -> dict[str, bool]:
        def fn(tx: Tx) -> bool:
            return bool(tx.execute("DELETE FROM friend_invites WHERE user_id = ?", (caller.user_id,)))

        return {"ok": True, "revoked": await self.core.db.write(fn)}

    async def preview(self, caller: Caller, p: pi.InviteRef) -> InvitePreview:
        def fn(tx: Tx) -> InvitePreview:
            owner = _owner(tx, p.code)
            is_friend = tx.one("SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?",
                               (caller.user_id, owner)) is not None
            return InvitePreview(_visible_profile(tx, owner, caller.user_id), is_friend, owner == caller.user_id)

        return await self.core.db.read(fn)

    async def add(self, caller: Caller, p: pi.InviteRef) -> Friend:
        now = now_ms()

        def fn(tx: Tx) -> Friend:
            owner = _owner(tx, p.code)
            if owner == caller.user_id:
                raise DariError(ErrorCode.INVALID_PARAMS, "this is your own invite link")
            return _add(tx, caller.user_id, owner, now)

        return await self.core.db.write(fn)


def _create(tx: Tx, user_id: int, now: int) -> FriendInvite:
    code = new_invite_code()
    tx.execute("INSERT INTO friend_invites (code, user_id, created_at) VALUES (?, ?, ?)", (code, user_id, now))
    return FriendInvite(code, now)
