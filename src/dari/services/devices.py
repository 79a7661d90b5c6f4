"""A person's devices: each has a name distinct within the account (two "Chrome on Linux" logins
become "Chrome on Linux" and "Chrome on Linux (2)"), a kind, and can be renamed from any device.

Whether a device is online comes from the connection hub (a live session right now), never from
last_seen_at, which is only written every few seconds and says nothing about the present.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import Device
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.storage.base import Tx

MAX_NAME = 64


def clean_name(name: str) -> str:
    """Control and format characters (newlines, bidi overrides) would garble every device list."""
    kept = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in name)
    return " ".join(kept.split())[:MAX_NAME]


def distinct_name(tx: Tx, user_id: int, name: str, *, except_id: int | None = None) -> str:
    """`name`, or `name (2)`, `name (3)`... whichever no other device of the account uses."""
    taken = {r[0] for r in tx.all("SELECT name FROM devices WHERE user_id = ? AND id <> ?",
                                  (user_id, except_id or 0))}
    if name not in taken:
        return name
    for n in range(2, len(taken) + 3):    # at most len(taken) candidates can be taken
        suffix = f" ({n})"
        candidate = name[:MAX_NAME - len(suffix)].rstrip() + suffix
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: more candidates than taken names")


def add_device(tx: Tx, user_id: int, name: str, kind: str | None, token_hash: str, now: int) -> tuple[int, str]:
    """Register a logged-in device; returns its id and the (distinct) name it got."""
    # Lock the account's row so two logins at once cannot both take the same free name (PostgreSQL;
    # SQLite has a single writer anyway).
    tx.one(f"SELECT id FROM users WHERE id = ?{tx.for_update}", (user_id,))
    name = distinct_name(tx, user_id, clean_name(name) or "device")
    did = int(tx.scalar("INSERT INTO devices (user_id, name, kind, token_hash, created_at, last_seen_at)"
                        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (user_id, name, kind or "", token_hash, now, now)))
    return did, name


def device_rows(tx: Tx, user_id: int) -> list[tuple[int, str, str, int, int]]:
    return [(r[0], r[1], r[2], r[3], r[4]) for r in tx.all(
        "SELECT id, name, kind, created_at, last_seen_at FROM devices WHERE user_id = ? ORDER BY id", (user_id,))]


class Devices:
    def __init__(self, core: Core, pending_seen: Callable[[int], int]) -> None:
        self.core = core
        self._pending_seen = pending_seen   # a device's last_seen_at not yet written (Accounts batches them)

    async def list(self, caller: Caller, p: m.NoParams) -> list[Device]:
        rows = await self.core.db.read(lambda tx: device_rows(tx, caller.user_id))
        bus = self.core.bus
        return [Device(did, name, created, max(seen, self._pending_seen(did)), current=did == caller.device_id,
                       online=bus.is_device_online(did), kind=kind)
                for did, name, kind, created, seen in rows]

    async def rename(self, caller: Caller, p: m.DeviceRename) -> Device:
        name = clean_name(p.name)
        if not name:
            raise DariError(ErrorCode.INVALID_PARAMS, "a device name needs at least one visible character")
        now = now_ms()

        def fn(tx: Tx) -> Device:
            tx.one(f"SELECT id FROM users WHERE id = ?{tx.for_update}", (caller.user_id,))
            row = tx.one("SELECT name, kind, created_at, last_seen_at FROM devices WHERE id = ? AND user_id = ?",
                         (p.device_id, caller.user_id))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no device {p.device_id} on your account")
            if row[0] != name:
                if distinct_name(tx, caller.user_id, name, except_id=p.device_id) != name:
                    raise DariError(ErrorCode.CONFLICT, f"another of your devices is already named {name!r}")
                tx.execute("UPDATE devices SET name = ? WHERE id = ?", (name, p.device_id))
                # Stored, so a device that is offline now shows the new name when it catches up.
                user_devices_event(tx, [caller.user_id], "device.renamed",
                                   {"device_id": p.device_id, "name": name}, now)
            return Device(p.device_id, name, row[2], max(row[3], self._pending_seen(p.device_id)),
                          current=p.device_id == caller.device_id,
                          online=self.core.bus.is_device_online(p.device_id), kind=row[1])

        return await self.core.db.write(fn)
