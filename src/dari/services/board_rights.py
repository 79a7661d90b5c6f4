"""Who may create public boards: the operators (admin_handles), and users an operator granted the
right to (a community's moderators, a club's organiser). Granting and revoking is audited; a
revoked user's boards stay.
"""

from __future__ import annotations

import secrets
from typing import Any

from dari.protocol import content as c
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.services.boards import Board, _board_row
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.services.moderation import is_admin, require_admin
from dari.storage.base import Tx

MAX_BOARDS = 200   # public boards on one server: the list is shown whole to every visitor


def may_create(core: Core, tx: Tx, user_id: int | None) -> bool:
    if user_id is None:
        return False
    return is_admin(core, tx, user_id) or \
        tx.scalar("SELECT 1 FROM board_creators WHERE user_id = ?", (user_id,)) is not None


def insert_board(tx: Tx, creator_id: int | None, slug: str | None, title: str, show_ip: bool, now: int) -> Board:
    if not title.strip() or "\x00" in title:
        raise DariError(ErrorCode.INVALID_PARAMS, "a board needs a title, and no NUL characters")
    if int(tx.scalar("SELECT COUNT(*) FROM boards WHERE kind = 'public'")) >= MAX_BOARDS:
        raise DariError(ErrorCode.LIMIT_EXCEEDED, f"this server has {MAX_BOARDS} public boards already")
    slug = slug or f"b-{secrets.token_hex(4)}"
    if tx.scalar("SELECT 1 FROM boards WHERE slug = ?", (slug,)):
        raise DariError(ErrorCode.CONFLICT, f"a board {slug!r} exists", {"slug": slug})
    bid = int(tx.scalar("INSERT INTO boards (kind, slug, title, show_ip, created_by, created_at)"
                        " VALUES ('public', ?, ?, ?, ?, ?) RETURNING id",
                        (slug, title.strip(), int(show_ip), creator_id, now)))
    if creator_id is not None:
        tx.execute("INSERT INTO audit_log (actor_id, action, target, target_id, reason, created_at)"
                   " VALUES (?, 'board_create', 'board', ?, ?, ?)", (creator_id, str(bid), slug, now))
    return _board_row(tx, bid)


class BoardRights:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def rights(self, caller: Caller, p: m.NoParams) -> dict[str, bool]:
        def fn(tx: Tx) -> dict[str, bool]:
            return {"can_create": may_create(self.core, tx, caller.user_id),
                    "operator": is_admin(self.core, tx, caller.user_id)}

        return await self.core.db.read(fn)

    async def admin_create(self, caller: Caller, p: c.BoardCreate) -> Board:
        await require_admin(self.core, caller)
        now = now_ms()
        return await self.core.db.write(lambda tx: insert_board(tx, caller.user_id, p.slug, p.title, p.show_ip, now))

    async def create(self, caller: Caller, p: c.BoardNew) -> Board:
        now = now_ms()

        def fn(tx: Tx) -> Board:
            if not may_create(self.core, tx, caller.user_id):
                raise DariError(ErrorCode.FORBIDDEN, "creating a public board needs an operator's permission",
                                {"reason": "no_board_right"})
            return insert_board(tx, caller.user_id, p.slug, p.title, p.show_ip, now)

        return await self.core.db.write(fn)

    async def _set(self, caller: Caller, handle: str, on: bool) -> dict[str, Any]:
        await require_admin(self.core, caller)
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            row = tx.one("SELECT id, display_name FROM users WHERE handle = ?", (handle,))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no user {handle!r}")
            uid = int(row[0])
            if on:
                tx.execute("INSERT INTO board_creators (user_id, granted_by, granted_at) VALUES (?, ?, ?)"
                           " ON CONFLICT (user_id) DO NOTHING", (uid, caller.user_id, now))
            else:
                tx.execute("DELETE FROM board_creators WHERE user_id = ?", (uid,))
            tx.execute("INSERT INTO audit_log (actor_id, action, target, target_id, reason, created_at)"
                       " VALUES (?, ?, 'user', ?, ?, ?)",
                       (caller.user_id, "board_grant" if on else "board_revoke", str(uid), handle, now))
            can = may_create(self.core, tx, uid)
            # The user's open pages show or hide their "new board" button without a reload.
            user_devices_event(tx, [uid], "board.rights", {"can_create": can}, now)
            return {"handle": handle, "user_id": uid, "name": row[1], "can_create": can}

        return await self.core.db.write(fn)

    async def grant(self, caller: Caller, p: c.BoardGrant) -> dict[str, Any]:
        return await self._set(caller, p.handle, True)

    async def revoke(self, caller: Caller, p: c.BoardGrant) -> dict[str, Any]:
        return await self._set(caller, p.handle, False)

    async def creators(self, caller: Caller, p: m.NoParams) -> list[dict[str, Any]]:
        await require_admin(self.core, caller)
        return await self.core.db.read(lambda tx: [
            {"user_id": r[0], "handle": r[1], "name": r[2], "granted_by": r[3], "granted_at": r[4]}
            for r in tx.all("SELECT u.id, u.handle, u.display_name, g.handle, b.granted_at FROM board_creators b"
                            " JOIN users u ON u.id = b.user_id LEFT JOIN users g ON g.id = b.granted_by"
                            " ORDER BY b.granted_at, u.id LIMIT 1000")])
