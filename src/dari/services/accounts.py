"""Accounts and devices: sign-up, log-in, tokens, profile, privacy, password, deletion."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dari import PROTOCOL_VERSION, __version__
from dari.protocol import methods as m
from dari.protocol import phones
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import AuthResult, Me, ServerInfo
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.services.devices import add_device
from dari.services.e2ee_keys import has_keys, keys_audience, keys_changed
from dari.services.moderation import check_not_suspended
from dari.storage.base import Tx

# Token -> caller lookups are cached this long (in one process; a revocation invalidates at once).
TOKEN_CACHE_S = 60.0
TOKEN_CACHE_MAX = 100_000
# devices.last_seen_at is kept in memory and written this often, in one transaction for all devices.
SEEN_FLUSH_S = 5.0


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
        # token hash -> (expires at, caller); device id -> its token hash. Only while this process
        # is the only one serving the database (a shared bus means others could revoke unseen).
        self._tokens: dict[str, tuple[float, Caller]] = {}
        self._token_of: dict[int, str] = {}
        self._token_gen = 0
        self._seen: dict[int, int] = {}     # device id -> last_seen_at not yet written
        self._seen_timer: asyncio.TimerHandle | None = None
        self._seen_flush: asyncio.Task[None] | None = None
        core.forget_devices = self.forget_devices

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
                raise DariError(ErrorCode.CONFLICT, f"the handle {p.handle!r} is taken",
                                {"reason": "handle_taken", "handle": p.handle})
            uid = tx.scalar(
                "INSERT INTO users (handle, display_name, password_hash, phone_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (p.handle, p.display_name, pw_hash, p.phone_hash, now))
            did, _ = add_device(tx, uid, p.device_name, p.device_kind, token_hash(token), now)
            return AuthResult(_me(tx, uid), did, token)

        return await self.core.db.write(fn)

    async def login(self, caller: Caller | None, p: m.Login) -> AuthResult:
        row = await self.core.db.read(
            lambda tx: tx.one("SELECT id, password_hash FROM users WHERE handle = ?", (p.handle,)))
        if row is None:
            # Spend the same time as a real check so handles cannot be probed by timing.
            await self._verify("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", p.password)
            raise DariError(ErrorCode.UNAUTHENTICATED, "wrong handle or password", {"reason": "wrong_login"})
        if not await self._verify(row[1], p.password):
            raise DariError(ErrorCode.UNAUTHENTICATED, "wrong handle or password", {"reason": "wrong_login"})
        token = secrets.token_urlsafe(32)
        now = now_ms()
        await self.core.db.read(lambda tx: check_not_suspended(tx, row[0], now))   # operators' suspensions

        def fn(tx: Tx) -> AuthResult:
            did, name = add_device(tx, row[0], p.device_name, p.device_kind, token_hash(token), now)
            user_devices_event(tx, [row[0]], "device.added", {"device_id": did, "name": name}, now)
            return AuthResult(_me(tx, row[0]), did, token)

        return await self.core.db.write(fn)

    async def authenticate(self, token: str) -> Caller:
        th = token_hash(token)
        cache = not self.core.bus.shared
        if cache:
            hit = self._tokens.get(th)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        gen = self._token_gen
        row = await self.core.db.read(lambda tx: tx.one(
            "SELECT user_id, id FROM devices WHERE token_hash = ?", (th,)))
        if row is None:
            raise DariError(ErrorCode.UNAUTHENTICATED, "invalid or revoked token; log in again")
        caller = Caller(row[0], row[1])
        # Not cached if a device was revoked while we read: our snapshot may predate that commit.
        if cache and gen == self._token_gen:
            if len(self._tokens) >= TOKEN_CACHE_MAX:
                self._tokens.clear()
                self._token_of.clear()
            self._tokens[th] = (time.monotonic() + TOKEN_CACHE_S, caller)
            self._token_of[caller.device_id] = th
        return caller

    def forget_devices(self, device_ids: Iterable[int]) -> None:
        """Revoked or deleted devices: their tokens are refused from now on. Runs as an after-commit
        hook of the transaction that deleted them, before any other request sees the commit."""
        self._token_gen += 1
        for did in device_ids:
            th = self._token_of.pop(did, None)
            if th is not None:
                self._tokens.pop(th, None)
            self._seen.pop(did, None)

    def pending_seen(self, device_id: int) -> int:
        return self._seen.get(device_id, 0)

    def touch_device(self, caller: Caller) -> None:
        """Record that a device connected; written with the others every SEEN_FLUSH_S seconds."""
        self.mark_seen(caller.device_id)

    def mark_seen(self, device_id: int) -> None:
        """The device is here now (it connected, or its last connection just closed)."""
        self._seen[device_id] = now_ms()
        if self._seen_timer is None and self._seen_flush is None:
            loop = asyncio.get_running_loop()
            self._seen_timer = loop.call_later(SEEN_FLUSH_S, self._start_seen_flush)

    def _start_seen_flush(self) -> None:
        self._seen_timer = None
        self._seen_flush = asyncio.ensure_future(self._flush_seen_later())

    async def _flush_seen_later(self) -> None:
        try:
            await self.flush_seen()
        except DariError:   # storage unavailable: the times are kept and written next time
            pass
        finally:
            self._seen_flush = None
            if self._seen and self._seen_timer is None:
                self._seen_timer = asyncio.get_running_loop().call_later(SEEN_FLUSH_S, self._start_seen_flush)

    async def flush_seen(self) -> None:
        """Write the pending devices.last_seen_at values in one transaction."""
        if not self._seen:
            return
        pending, self._seen = self._seen, {}
        rows = [(ts, did, ts) for did, ts in pending.items()]
        try:
            await self.core.db.write(lambda tx: tx.executemany(
                "UPDATE devices SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?", rows))
        except BaseException:
            for did, ts in pending.items():   # keep them (newer ones recorded meanwhile win)
                self._seen.setdefault(did, ts)
            raise

    async def close(self) -> None:
        """Stop the timer and write what is pending (before the database closes)."""
        if self._seen_timer is not None:
            self._seen_timer.cancel()
            self._seen_timer = None
        if self._seen_flush is not None:
            with contextlib.suppress(Exception):
                await self._seen_flush
        with contextlib.suppress(DariError):
            await self.flush_seen()

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
            raise DariError(ErrorCode.FORBIDDEN, "the current password is wrong", {"reason": "wrong_password"})
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

    async def set_phone_number(self, caller: Caller, p: m.SetPhoneNumber) -> Me:
        """For browsers, which cannot run phonenumbers: the same keyed hash the SDK computes. The raw
        number lives only in this call's memory; it is never stored or logged."""
        digest = phones.phone_hash(self.core.contact_key, p.phone, p.region)
        return await self.set_phone(caller, m.SetPhone(phone_hash=digest))

    async def delete(self, caller: Caller, p: m.DeleteAccount) -> dict[str, bool]:
        stored = await self.core.db.read(lambda tx: tx.scalar(
            "SELECT password_hash FROM users WHERE id = ?", (caller.user_id,)))
        if stored is None or not await self._verify(stored, p.password):
            raise DariError(ErrorCode.FORBIDDEN, "the password is wrong", {"reason": "wrong_password"})
        from dari.services.chats import leave_chat

        now = now_ms()

        def fn(tx: Tx) -> list[int]:
            devices = [r[0] for r in tx.all("SELECT id FROM devices WHERE user_id = ?", (caller.user_id,))]
            if has_keys(tx, devices):
                audience = keys_audience(tx, caller.user_id)[1:]
                user_devices_event(tx, audience, "keys.changed", {"user_id": caller.user_id}, now)
            for (chat_id,) in tx.all(
                    "SELECT m.chat_id FROM members m JOIN chats c ON c.id = m.chat_id"
                    " WHERE m.user_id = ? AND m.active = 1 AND c.kind <> 'direct'", (caller.user_id,)):
                leave_chat(tx, chat_id, caller.user_id, now, reason="left")
            tx.execute("DELETE FROM users WHERE id = ?", (caller.user_id,))
            tx.after_commit.append(lambda: self.forget_devices(devices))
            return devices

        devices = await self.core.db.write(fn)
        self._drop_soon(devices)
        return {"ok": True}

    def _drop_soon(self, device_ids: list[int]) -> None:
        # After the caller's reply is queued: a device logging itself out still hears "ok".
        loop = asyncio.get_running_loop()
        for did in device_ids:
            loop.call_soon(self.core.bus.drop_device, did)

    async def revoke(self, caller: Caller, p: m.DeviceRevoke) -> dict[str, bool]:
        return await self._revoke(caller, p.device_id)

    async def logout(self, caller: Caller, p: m.NoParams) -> dict[str, bool]:
        return await self._revoke(caller, caller.device_id)

    async def _revoke(self, caller: Caller, device_id: int) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            had_keys = has_keys(tx, [device_id])
            if not tx.execute("DELETE FROM devices WHERE id = ? AND user_id = ?", (device_id, caller.user_id)):
                raise DariError(ErrorCode.NOT_FOUND, f"no device {device_id} on your account")
            user_devices_event(tx, [caller.user_id], "device.revoked", {"device_id": device_id}, now)
            if had_keys:   # contacts stop encrypting to it (and rotate their group sessions)
                keys_changed(tx, caller.user_id, now)
            tx.after_commit.append(lambda: self.forget_devices([device_id]))

        await self.core.db.write(fn)
        self._drop_soon([device_id])
        return {"ok": True}
