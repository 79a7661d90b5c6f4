"""The connection registry: which live sessions belong to which user and device."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dari.server.session import Session


class ConnectionHub:
    def __init__(self) -> None:
        self.by_user: dict[int, set[Session]] = {}
        self.by_device: dict[int, set[Session]] = {}
        self.on_online: Callable[[int], None] | None = None
        self.on_offline: Callable[[int], None] | None = None
        # (user id, device id, online): a device's first session opened or its last one closed.
        self.on_device: Callable[[int, int, bool], None] | None = None
        self.delivered = 0

    def add(self, session: Session, user_id: int, device_id: int) -> None:
        sessions = self.by_user.setdefault(user_id, set())
        first = not sessions
        sessions.add(session)
        devs = self.by_device.setdefault(device_id, set())
        first_of_device = not devs
        devs.add(session)
        if first and self.on_online:
            self.on_online(user_id)
        if first_of_device and self.on_device:
            self.on_device(user_id, device_id, True)

    def remove(self, session: Session, user_id: int, device_id: int) -> None:
        sessions = self.by_user.get(user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.by_user[user_id]
                if self.on_offline:
                    self.on_offline(user_id)
        devs = self.by_device.get(device_id)
        if devs is not None:
            had = session in devs
            devs.discard(session)
            if not devs:
                del self.by_device[device_id]
                if had and self.on_device:
                    self.on_device(user_id, device_id, False)

    def deliver(self, user_ids: Sequence[int], frame: bytes, cursor: int | None) -> None:
        self._push(self.by_user, user_ids, frame, cursor)

    def deliver_devices(self, device_ids: Sequence[int], frame: bytes) -> None:
        """An ephemeral frame to the sessions of these devices only (to-device signals, keys.low)."""
        self._push(self.by_device, device_ids, frame, None)

    def _push(self, index: dict[int, set[Session]], keys: Sequence[int], frame: bytes, cursor: int | None) -> None:
        for key in keys:
            sessions = index.get(key)
            if sessions:
                # A copy: a push can drop a session that stopped reading, which removes it from the set.
                for s in tuple(sessions):
                    s.push(frame, cursor)
                    self.delivered += 1

    def drop_device(self, device_id: int) -> None:
        for s in list(self.by_device.get(device_id, ())):
            s.revoke()

    def online_users(self) -> set[int]:
        return set(self.by_user)

    def is_online(self, user_id: int) -> bool:
        return user_id in self.by_user

    def online_devices(self) -> set[int]:
        return set(self.by_device)

    def is_device_online(self, device_id: int) -> bool:
        return device_id in self.by_device

    def connections(self) -> int:
        return sum(len(v) for v in self.by_device.values())
