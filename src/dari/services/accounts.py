"""Accounts and devices: sign-up, log-in, tokens, profile, privacy, password, deletion."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dari import PROTOCOL_VERSION, __version__
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import AuthResult, Device, Me, ServerInfo
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.services.moderation import check_not_suspended
from dari.storage.base import Tx


def token_hash(token: str) -> str:
    # Tokens are 256-bit random: a plain SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).hexdigest()


def _me(tx: Tx, user_id: int) -> Me:
    row = tx.one(
        "SELECT id, handle, display_name, status_message, presence_visibility, phone_hash FROM users"
        " WHERE id = ?", (user_id,))
    if row is None:
        raise DariError(ErrorCode.UNAUTHENTICATED, "account no longer exists")
    return Me(row[0], row[1], row[2], row[3], row[4], row[5] is not None)


class Accounts:
    def __init__(self, core: Core) -> None:
        self.core = core
        s = core.settings
        self.hasher = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib,
                                     parallelism=1)
        # Argon2 is deliberately expensive: bound how many run at once so a login flood cannot
        # starve message delivery.
        self._hash_slots = asyncio.Semaphore(2)

    async def _hash(self, password: str) -> str:
        async with self._hash_slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._hash_slots:
            try:
                return await asyncio.to_thread(self.hasher.verify, stored, password)
            except (VerificationError, InvalidHashError):
                return False

    async def server_info(self, caller: Caller | None, p: m.NoParams) -> ServerInfo:
        s = self.core.settings
        return ServerInfo(s.server_name, __version__, PROTOCOL_VERSION, self.core.contact_key,
                          s.max_frame_bytes, s.max_message_chars, s.unsend_window_s, s.group_member_limit)

    async def signup(self, caller: Caller | None, p: m.Signup) -> AuthResult:
        pw_hash = await self._hash(p.password)
        token = secrets.token_urlsafe(32)
        now = now_ms()

        def fn(tx: Tx) -> AuthResult:
            if tx.one("SELECT 1 FROM users WHERE handle = ?", (p.handle,)):
                raise DariError(ErrorCode.CONFLICT, f"the handle {p.handle!r} is taken")
            uid = tx.scalar(
                "INSERT INTO users (handle, display_name, password_hash, phone_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (p.handle, p.display_name, pw_hash, p.phone_hash, now))
            did = tx.scalar(
                "INSERT INTO devices (user_id, name, token_hash, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id", (uid, p.device_name, token_hash(token), now, now))
            return AuthResult(_me(tx, uid), did, token)

        return await self.core.db.write(fn)

    async def login(self, caller: Caller | None, p: m.Login) -> AuthResult:
        row = await self.core.db.read(
            lambda tx: tx.one("SELECT id, password_hash FROM users WHERE handle = ?", (p.handle,)))
        if row is None:
            # Spend the same time as a real check so handles cannot be probed by timing.
            await self._verify("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", p.password)
            raise DariError(ErrorCode.UNAUTHENTICATED, "wrong handle or password")
        if not await self._verify(row[1], p.password):
            raise DariError(ErrorCode.UNAUTHENTICATED, "wrong handle or password")
        token = secrets.token_urlsafe(32)
        now = now_ms()
        await self.core.db.read(lambda tx: check_not_suspended(tx, row[0], now))   # operators' suspensions

        def fn(tx: Tx) -> AuthResult:
            did = tx.scalar(
                "INSERT INTO devices (user_id, name, token_hash, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id", (row[0], p.device_name, token_hash(token), now, now))
            user_devices_event(tx, [row[0]], "device.added", {"device_id": did, "name": p.device_name}, now)
            return AuthResult(_me(tx, row[0]), did, token)

        return await self.core.db.write(fn)

    async def authenticate(self, token: str) -> Caller:
        th = token_hash(token)
        row = await self.core.db.read(lambda tx: tx.one(
            "SELECT user_id, id FROM devices WHERE token_hash = ?", (th,)))
        if row is None:
            raise DariError(ErrorCode.UNAUTHENTICATED, "invalid or revoked token; log in again")
        return Caller(row[0], row[1])

    async def touch_device(self, caller: Caller) -> Me:
        now = now_ms()

        def fn(tx: Tx) -> Me:
            tx.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?", (now, caller.device_id))
            return _me(tx, caller.user_id)

        return await self.core.db.write(fn)

    async def me(self, caller: Caller, p: m.NoParams) -> Me:
        return await self.core.db.read(lambda tx: _me(tx, caller.user_id))

    async def update_profile(self, caller: Caller, p: m.UpdateProfile) -> Me:
        now = now_ms()

        def fn(tx: Tx) -> Me:
            if p.display_name is not None:
                tx.execute("UPDATE users SET display_name = ? WHERE id = ?", (p.display_name, caller.user_id))
            if p.status_message is not None:
                tx.execute("UPDATE users SET status_message = ? WHERE id = ?",
                           (p.status_message, caller.user_id))
            me = _me(tx, caller.user_id)
            # Those who have me as a friend see the change, unless I blocked them.
            watchers = [r[0] for r in tx.all(
                "SELECT f.user_id FROM friends f WHERE f.friend_id = ? AND NOT EXISTS"
                " (SELECT 1 FROM blocks b WHERE b.user_id = ? AND b.blocked_id = f.user_id)",
                (caller.user_id, caller.user_id))]
            payload = {"user_id": me.user_id, "handle": me.handle, "display_name": me.display_name,
                       "status_message": me.status_message}
            user_devices_event(tx, [caller.user_id, *watchers], "profile.updated", payload, now)
            return me

        return await self.core.db.write(fn)

    async def change_password(self, caller: Caller, p: m.ChangePassword) -> dict[str, bool]:
        stored = await self.core.db.read(lambda tx: tx.scalar(
            "SELECT password_hash FROM users WHERE id = ?", (caller.user_id,)))
        if stored is None or not await self._verify(stored, p.old_password):
            raise DariError(ErrorCode.FORBIDDEN, "the current password is wrong")
        new_hash = await self._hash(p.new_password)
        await self.core.db.write(lambda tx: tx.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, caller.user_id)))
        return {"ok": True}

    async def set_privacy(self, caller: Caller, p: m.SetPrivacy) -> Me:
        def fn(tx: Tx) -> Me:
            tx.execute("UPDATE users SET presence_visibility = ? WHERE id = ?",
                       (p.presence_visibility, caller.user_id))
            return _me(tx, caller.user_id)

        return await self.core.db.write(fn)

    async def set_phone(self, caller: Caller, p: m.SetPhone) -> Me:
        def fn(tx: Tx) -> Me:
            tx.execute("UPDATE users SET phone_hash = ? WHERE id = ?", (p.phone_hash, caller.user_id))
            return _me(tx, caller.user_id)

        return await self.core.db.write(fn)

    async def delete(self, caller: Caller, p: m.DeleteAccount) -> dict[str, bool]:
        stored = await self.core.db.read(lambda tx: tx.scalar(
            "SELECT password_hash FROM users WHERE id = ?", (caller.user_id,)))
        if stored is None or not await self._verify(stored, p.password):
            raise DariError(ErrorCode.FORBIDDEN, "the password is wrong")
        from dari.services.chats import leave_chat

        now = now_ms()

        def fn(tx: Tx) -> list[int]:
            devices = [r[0] for r in tx.all("SELECT id FROM devices WHERE user_id = ?", (caller.user_id,))]
            for (chat_id,) in tx.all(
                    "SELECT m.chat_id FROM members m JOIN chats c ON c.id = m.chat_id"
                    " WHERE m.user_id = ? AND m.active = 1 AND c.kind <> 'direct'", (caller.user_id,)):
                leave_chat(tx, chat_id, caller.user_id, now, reason="left")
            tx.execute("DELETE FROM users WHERE id = ?", (caller.user_id,))
            return devices

        devices = await self.core.db.write(fn)
        self._drop_soon(devices)
        return {"ok": True}

    def _drop_soon(self, device_ids: list[int]) -> None:
        # After the caller's reply is queued: a device logging itself out still hears "ok".
        loop = asyncio.get_running_loop()
        for did in device_ids:
            loop.call_soon(self.core.bus.drop_device, did)

    async def devices(self, caller: Caller, p: m.NoParams) -> list[Device]:
        rows = await self.core.db.read(lambda tx: tx.all(
            "SELECT id, name, created_at, last_seen_at FROM devices WHERE user_id = ? ORDER BY id",
            (caller.user_id,)))
        return [Device(r[0], r[1], r[2], r[3], current=r[0] == caller.device_id) for r in rows]

    async def revoke(self, caller: Caller, p: m.DeviceRevoke) -> dict[str, bool]:
        return await self._revoke(caller, p.device_id)

    async def logout(self, caller: Caller, p: m.NoParams) -> dict[str, bool]:
        return await self._revoke(caller, caller.device_id)

    async def _revoke(self, caller: Caller, device_id: int) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM devices WHERE id = ? AND user_id = ?", (device_id, caller.user_id)):
                raise DariError(ErrorCode.NOT_FOUND, f"no device {device_id} on your account")
            user_devices_event(tx, [caller.user_id], "device.revoked", {"device_id": device_id}, now)

        await self.core.db.write(fn)
        self._drop_soon([device_id])
        return {"ok": True}
