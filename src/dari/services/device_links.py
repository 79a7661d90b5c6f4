"""Linking a new device from a logged-in one, as LINE and KakaoTalk link their PC versions: the new
device shows a short code (and a QR code of it), the person approves it from their phone or the CLI,
and the new device is logged in without typing a password.

The code alone logs nobody in: the new device also holds a secret it polls with, and the token is
handed over once, then erased. Codes expire after LINK_TTL_MS.
"""

from __future__ import annotations

import hashlib
import secrets

from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.services.accounts import _me, token_hash
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.services.devices import add_device
from dari.storage.base import Tx

LINK_TTL_MS = 5 * 60_000
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"   # no 0/O, 1/I: read aloud or typed from a screen


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize(code: str) -> str:
    code = code.upper().replace("-", "")
    return f"{code[:4]}-{code[4:]}"


class DeviceLinks:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def start(self, caller: Caller | None, p: m.LinkStart) -> dict[str, object]:
        now = now_ms()
        secret = secrets.token_urlsafe(24)
        code = normalize("".join(secrets.choice(ALPHABET) for _ in range(8)))

        def fn(tx: Tx) -> None:
            tx.execute("DELETE FROM device_links WHERE expires_at < ?", (now - LINK_TTL_MS,))
            pending = tx.scalar("SELECT count(*) FROM device_links WHERE expires_at >= ?", (now,))
            if int(pending) > 10_000:
                raise DariError(ErrorCode.RATE_LIMITED, "too many devices waiting to be linked; try again soon")
            tx.execute("INSERT INTO device_links (code, secret_hash, device_name, device_kind, created_at, expires_at)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (code, _sha(secret), p.device_name, p.device_kind or "", now, now + LINK_TTL_MS))

        await self.core.db.write(fn)
        return {"code": code, "secret": secret, "expires_at": now + LINK_TTL_MS, "qr": f"/link/qr/{code}.svg",
                "link": f"dari://link?code={code}"}

    async def approve(self, caller: Caller, p: m.LinkApprove) -> dict[str, object]:
        code = normalize(p.code)
        now = now_ms()
        token = secrets.token_urlsafe(32)

        def fn(tx: Tx) -> dict[str, object]:
            row = tx.one("SELECT device_name, expires_at, approved_by, device_kind FROM device_links"
                         f" WHERE code = ?{tx.for_update}", (code,))
            if row is None or row[1] < now:
                raise DariError(ErrorCode.NOT_FOUND, "no device is waiting with that code (it expires after 5"
                                " minutes); show a new code on the new device")
            if row[2] is not None:
                raise DariError(ErrorCode.CONFLICT, "that code was already used")
            did, name = add_device(tx, caller.user_id, row[0], row[3], token_hash(token), now)
            tx.execute("UPDATE device_links SET approved_by = ?, device_id = ?, token = ? WHERE code = ?",
                       (caller.user_id, did, token, code))
            user_devices_event(tx, [caller.user_id], "device.added", {"device_id": did, "name": name}, now)
            return {"device_id": did, "name": name}

        return await self.core.db.write(fn)

    async def poll(self, caller: Caller | None, p: m.LinkPoll) -> dict[str, object]:
        now = now_ms()
        secret_hash = _sha(p.secret)

        def fn(tx: Tx) -> dict[str, object]:
            row = tx.one("SELECT code, expires_at, approved_by, device_id, token FROM device_links"
                         " WHERE secret_hash = ?", (secret_hash,))
            if row is None:
                return {"status": "expired"}
            code, expires, user_id, device_id, token = row
            if user_id is None:
                return {"status": "expired"} if expires < now else {"status": "pending", "code": code}
            if token is None:
                return {"status": "expired"}    # already handed over once
            # Hand the token over once and forget it.
            tx.execute("DELETE FROM device_links WHERE code = ?", (code,))
            return {"status": "approved", "token": token, "device_id": device_id, "user": _me(tx, user_id)}

        # A write: the first successful poll deletes the row.
        return await self.core.db.write(fn)
