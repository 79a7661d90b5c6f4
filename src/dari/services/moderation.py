"""Moderation: anyone reports, operators (the admin_handles setting) hide content and suspend
accounts. Every operator action lands in the audit log with who, what and why.
"""

from __future__ import annotations

import time
from typing import Any

from dari.protocol import content as c
from dari.protocol.errors import DariError, ErrorCode
from dari.services import timeline
from dari.services.core import Caller, Core, active_members, now_ms, user_devices_event
from dari.storage.base import Tx

DAY_MS = 86400 * 1000

# target -> (table, column that hides it)
_HIDEABLE = {"board_post": "board_posts", "board_comment": "board_comments", "story": "stories",
             "story_comment": "story_comments"}


def admin_handles(core: Core) -> set[str]:
    return {h.strip() for h in core.settings.admin_handles.split(",") if h.strip()}


def is_admin(core: Core, tx: Tx, user_id: int | None) -> bool:
    if user_id is None:
        return False
    return tx.scalar("SELECT handle FROM users WHERE id = ?", (user_id,)) in admin_handles(core)


async def require_admin(core: Core, caller: Caller) -> None:
    if not await core.db.read(lambda tx: is_admin(core, tx, caller.user_id)):
        raise DariError(ErrorCode.FORBIDDEN, "this needs an operator account (admin_handles)")


def suspended_until(tx: Tx, user_id: int, now: int) -> int | None:
    until = tx.scalar("SELECT suspended_until FROM users WHERE id = ?", (user_id,))
    return int(until) if until is not None and int(until) > now else None


def check_not_suspended(tx: Tx, user_id: int, now: int) -> None:
    until = suspended_until(tx, user_id, now)
    if until is not None:
        day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until / 1000))
        raise DariError(ErrorCode.FORBIDDEN, f"this account is suspended until {day}", {"until": until})


def _message_ref(target_id: str) -> tuple[int, int]:
    chat, _, seq = target_id.partition(":")
    if not seq:
        raise DariError(ErrorCode.INVALID_PARAMS, "a message is chat_id:seq")
    return int(chat), int(seq)


def _audit(tx: Tx, actor: int, action: str, target: str, target_id: str, reason: str, now: int) -> None:
    tx.execute("INSERT INTO audit_log (actor_id, action, target, target_id, reason, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", (actor, action, target, target_id, reason, now))


class Moderation:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def report(self, caller: Caller, p: c.ReportCreate) -> dict[str, int]:
        now = now_ms()

        def fn(tx: Tx) -> int:
            if p.target == "message":
                chat_id, seq = _message_ref(p.target_id)
                timeline.require_member(tx, chat_id, caller.user_id)   # you report what you were shown
                found = tx.scalar("SELECT 1 FROM messages WHERE chat_id = ? AND seq = ?", (chat_id, seq))
            else:
                found = tx.scalar(f"SELECT 1 FROM {_HIDEABLE[p.target]} WHERE id = ?", (int(p.target_id),))
            if not found:
                raise DariError(ErrorCode.NOT_FOUND, f"no {p.target} {p.target_id}")
            return int(tx.scalar("INSERT INTO reports (reporter_id, target, target_id, reason, created_at)"
                                 " VALUES (?, ?, ?, ?, ?) RETURNING id",
                                 (caller.user_id, p.target, p.target_id, p.reason, now)))

        return {"report_id": await self.core.db.write(fn)}

    async def reports(self, caller: Caller, p: c.AdminList) -> list[dict[str, Any]]:
        await require_admin(self.core, caller)
        where = "WHERE r.resolved = 0" if p.open_only else ""
        return await self.core.db.read(lambda tx: [
            {"report_id": r[0], "reporter_id": r[1], "reporter": r[2], "target": r[3], "target_id": r[4],
             "reason": r[5], "resolved": bool(r[6]), "created_at": r[7]}
            for r in tx.all("SELECT r.id, r.reporter_id, u.handle, r.target, r.target_id, r.reason, r.resolved,"
                            f" r.created_at FROM reports r JOIN users u ON u.id = r.reporter_id {where}"
                            " ORDER BY r.resolved, r.id DESC LIMIT ?", (p.limit,))])

    async def hide(self, caller: Caller, p: c.AdminHide) -> dict[str, Any]:
        await require_admin(self.core, caller)
        now = now_ms()

        def fn(tx: Tx) -> None:
            if p.target == "message":
                chat_id, seq = _message_ref(p.target_id)
                if not p.hidden:
                    raise DariError(ErrorCode.INVALID_PARAMS, "a removed message cannot be restored")
                mid = tx.scalar("SELECT id FROM messages WHERE chat_id = ? AND seq = ?", (chat_id, seq))
                if mid is None:
                    raise DariError(ErrorCode.NOT_FOUND, f"no message {p.target_id}")
                tx.execute("UPDATE messages SET unsent = 1, text = '', attachment = NULL, search_extra = ''"
                           " WHERE id = ?", (mid,))
                if tx.dialect == "sqlite":
                    tx.execute("DELETE FROM message_fts WHERE rowid = ?", (mid,))
                tx.emit("message.unsent", {"chat_id": chat_id, "seq": seq, "by": "operator"},
                        recipients=active_members(tx, chat_id), chat_id=chat_id, now=now)
            else:
                n = tx.execute(f"UPDATE {_HIDEABLE[p.target]} SET hidden = ? WHERE id = ?",
                               (int(p.hidden), int(p.target_id)))
                if not n:
                    raise DariError(ErrorCode.NOT_FOUND, f"no {p.target} {p.target_id}")
            tx.execute("UPDATE reports SET resolved = 1 WHERE target = ? AND target_id = ?", (p.target, p.target_id))
            _audit(tx, caller.user_id, "hide" if p.hidden else "unhide", p.target, p.target_id, p.reason, now)

        await self.core.db.write(fn)
        return {"target": p.target, "target_id": p.target_id, "hidden": p.hidden}

    async def suspend(self, caller: Caller, p: c.AdminSuspend) -> dict[str, Any]:
        await require_admin(self.core, caller)
        now = now_ms()
        until = now + int(p.days * DAY_MS) if p.days > 0 else None

        def fn(tx: Tx) -> list[int]:
            if tx.scalar("SELECT 1 FROM users WHERE id = ?", (p.user_id,)) is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no user {p.user_id}")
            if p.user_id == caller.user_id:
                raise DariError(ErrorCode.INVALID_PARAMS, "operators cannot suspend themselves")
            tx.execute("UPDATE users SET suspended_until = ? WHERE id = ?", (until, p.user_id))
            devices: list[int] = []
            if until is not None:
                # Logging every device out ends their sessions now; login is refused until `until`.
                devices = [int(r[0]) for r in tx.all("SELECT id FROM devices WHERE user_id = ?", (p.user_id,))]
                tx.execute("DELETE FROM devices WHERE user_id = ?", (p.user_id,))
                tx.after_commit.append(lambda: self.core.forget_devices(devices))
                for did in devices:
                    user_devices_event(tx, [p.user_id], "device.revoked", {"device_id": did}, now)
            _audit(tx, caller.user_id, "suspend" if until else "unsuspend", "user", str(p.user_id), p.reason, now)
            return devices

        devices = await self.core.db.write(fn)
        for did in devices:
            self.core.bus.drop_device(did)
        return {"user_id": p.user_id, "suspended_until": until}

    async def audit(self, caller: Caller, p: c.AdminList) -> list[dict[str, Any]]:
        await require_admin(self.core, caller)
        return await self.core.db.read(lambda tx: [
            {"id": r[0], "actor_id": r[1], "actor": r[2], "action": r[3], "target": r[4], "target_id": r[5],
             "reason": r[6], "created_at": r[7]}
            for r in tx.all("SELECT a.id, a.actor_id, u.handle, a.action, a.target, a.target_id, a.reason,"
                            " a.created_at FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id"
                            " ORDER BY a.id DESC LIMIT ?", (p.limit,))])
