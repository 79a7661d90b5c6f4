"""To-device messages (docs/e2ee.md): opaque payloads (Olm-encrypted room keys, device-link
transfers) queued per target device until it acknowledges them.

The queue is bounded per device (the oldest go first) and kept 30 days; a signal
`todevice.pending {count}` reaches only the target device's sessions, on any node.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dari.protocol import e2ee as e
from dari.protocol.envelope import canonical
from dari.protocol.errors import DariError, ErrorCode
from dari.services.core import Caller, Core, now_ms
from dari.storage.base import Tx

RETENTION_MS = 30 * 86400 * 1000


def prune(tx: Tx, now: int) -> int:
    """Drop queued messages older than the retention window (called with the event log's pruning)."""
    return tx.execute("DELETE FROM to_device WHERE created_at < ?", (now - RETENTION_MS,))


class ToDevice:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.queue_max = core.settings.todevice_queue_max

    async def send(self, caller: Caller, p: e.ToDeviceSend) -> dict[str, Any]:
        rows: list[tuple[int, str]] = []
        for i, msg in enumerate(p.messages):
            body = canonical(msg.payload)
            if len(body) > e.MAX_TODEVICE_PAYLOAD:
                raise DariError(ErrorCode.LIMIT_EXCEEDED, f"messages[{i}].payload is {len(body)} bytes; the limit is"
                                f" {e.MAX_TODEVICE_PAYLOAD}", {"reason": "payload_too_large", "index": i,
                                                               "limit": e.MAX_TODEVICE_PAYLOAD})
            rows.append((msg.device_id, body.decode()))
        now = now_ms()
        targets = list(dict.fromkeys(d for d, _ in rows))

        def fn(tx: Tx) -> tuple[dict[int, int], list[int]]:
            marks = ",".join("?" * len(targets))
            known = {int(r[0]) for r in tx.all(f"SELECT id FROM devices WHERE id IN ({marks})", targets)}
            tx.executemany("INSERT INTO to_device (device_id, sender_id, sender_device, payload, created_at)"
                           " VALUES (?, ?, ?, ?, ?)",
                           [(d, caller.user_id, caller.device_id, body, now) for d, body in rows if d in known])
            counts: dict[int, int] = {}
            for did in (d for d in targets if d in known):
                count = int(tx.scalar("SELECT count(*) FROM to_device WHERE device_id = ?", (did,)))
                if count > self.queue_max:
                    # Bounded: past the cap the oldest messages of that device are dropped.
                    cutoff = tx.scalar("SELECT id FROM to_device WHERE device_id = ? ORDER BY id LIMIT 1 OFFSET ?",
                                       (did, count - self.queue_max - 1))
                    tx.execute("DELETE FROM to_device WHERE device_id = ? AND id <= ?", (did, cutoff))
                    count = self.queue_max
                counts[did] = count
            tx.after_commit.append(lambda: self._pending(counts))
            return counts, [d for d in targets if d not in known]

        counts, unknown = await self.core.db.write(fn)
        return {"sent": sum(1 for d, _ in rows if d in counts), "unknown_devices": unknown}

    def _pending(self, counts: dict[int, int]) -> None:
        for did, count in counts.items():
            self.core.bus.ephemeral_devices([did], "todevice.pending", {"count": count})

    async def fetch(self, caller: Caller, p: e.ToDeviceFetch) -> dict[str, Any]:
        def fn(tx: Tx) -> dict[str, Any]:
            rows = tx.all("SELECT id, sender_id, sender_device, payload, created_at FROM to_device"
                          " WHERE device_id = ? AND id > ? ORDER BY id LIMIT ?",
                          (caller.device_id, p.after, p.limit + 1))
            return {"messages": [{"id": int(r[0]), "sender_id": int(r[1]), "sender_device": int(r[2]),
                                  "payload": msgspec.Raw(str(r[3]).encode()), "created_at": int(r[4])}
                                 for r in rows[:p.limit]],
                    "has_more": len(rows) > p.limit}

        return await self.core.db.read(fn)

    async def ack(self, caller: Caller, p: e.ToDeviceAck) -> dict[str, int]:
        def fn(tx: Tx) -> dict[str, int]:
            deleted = tx.execute("DELETE FROM to_device WHERE device_id = ? AND id <= ?", (caller.device_id, p.up_to))
            left = int(tx.scalar("SELECT count(*) FROM to_device WHERE device_id = ?", (caller.device_id,)))
            return {"deleted": deleted, "remaining": left}

        return await self.core.db.write(fn)
