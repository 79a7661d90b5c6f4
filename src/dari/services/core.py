"""Shared context of the services: settings, storage, bus, clock, and small query helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dari.bus import Bus
from dari.config import Settings
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import UserProfile
from dari.storage.base import Database, Tx


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    device_id: int


def now_ms() -> int:
    return int(time.time() * 1000)


class Core:
    def __init__(self, settings: Settings, db: Database, bus: Bus) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.contact_key = ""   # loaded from meta at start
        self.cluster_id = ""
        # Called (after the commit) with devices that were revoked or deleted; set by Accounts to
        # drop their cached tokens.
        self.forget_devices: Callable[[Iterable[int]], None] = lambda device_ids: None


def profile(tx: Tx, user_id: int) -> UserProfile:
    row = tx.one("SELECT id, handle, display_name, status_message FROM users WHERE id = ?", (user_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no user {user_id}")
    return UserProfile(row[0], row[1], row[2], row[3])


def is_blocked(tx: Tx, blocker: int, blocked: int) -> bool:
    return tx.one("SELECT 1 FROM blocks WHERE user_id = ? AND blocked_id = ?", (blocker, blocked)) is not None


def active_members(tx: Tx, chat_id: int) -> list[int]:
    return [r[0] for r in tx.all("SELECT user_id FROM members WHERE chat_id = ? AND active = 1", (chat_id,))]


def user_devices_event(tx: Tx, user_ids: Sequence[int], type: str, payload: object, now: int) -> None:
    """A user-scoped event, one log entry per recipient so each replays only to its own user."""
    for uid in dict.fromkeys(user_ids):
        tx.emit(type, payload, recipients=[uid], user_id=uid, now=now)
