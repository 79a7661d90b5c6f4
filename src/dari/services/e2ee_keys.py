"""Device keys for end-to-end encryption (docs/e2ee.md, Keys): signed bundles, one-time keys handed
out once each, fallback keys, and telling contacts when someone's keys change.

The server checks what it can without being trusted: both Ed25519 signatures of a bundle, so a
client's bug (or a forged upload) is refused here rather than shown as "unverified device"
everywhere. Clients still verify everything themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dari.protocol import e2ee as e
from dari.protocol.envelope import b64decode, device_statement
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.methods import NoParams
from dari.services.core import Caller, Core, now_ms, user_devices_event
from dari.storage.base import Tx

MAX_OTK_PER_DEVICE = 200
LOW_WATER = 10          # keys.low when fewer one-time keys than this are left
_BUNDLE = ("identity_key", "signing_key", "master_key", "device_signature", "master_signature")


def _verify(public_b64: str, signature_b64: str, message: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(b64decode(public_b64)).verify(b64decode(signature_b64), message)
    except (InvalidSignature, ValueError):
        raise DariError(ErrorCode.INVALID_PARAMS, f"{what} does not verify", {"reason": "bad_signature",
                                                                              "field": what}) from None


def keys_audience(tx: Tx, user_id: int) -> list[int]:
    """Who must hear that this user's keys changed: the user, everyone in a 1:1 or group chat with
    them (open chats are never encrypted), and their friends either way."""
    rows = tx.all(
        "SELECT o.user_id FROM members me JOIN chats c ON c.id = me.chat_id AND c.kind <> 'open'"
        " JOIN members o ON o.chat_id = me.chat_id AND o.active = 1 WHERE me.user_id = ? AND me.active = 1"
        " UNION SELECT friend_id FROM friends WHERE user_id = ? UNION SELECT user_id FROM friends WHERE friend_id = ?",
        (user_id, user_id, user_id))
    return [user_id, *sorted({int(r[0]) for r in rows} - {user_id})]


def keys_changed(tx: Tx, user_id: int, now: int) -> None:
    """A durable `keys.changed` to everyone concerned (replayed to a device that was away)."""
    user_devices_event(tx, keys_audience(tx, user_id), "keys.changed", {"user_id": user_id}, now)


def has_keys(tx: Tx, device_ids: Sequence[int]) -> bool:
    marks = ",".join("?" * len(device_ids))
    return bool(device_ids) and tx.one(f"SELECT 1 FROM device_keys WHERE device_id IN ({marks}) LIMIT 1",
                                       tuple(device_ids)) is not None


def otk_count(tx: Tx, device_id: int) -> int:
    return int(tx.scalar("SELECT count(*) FROM one_time_keys WHERE device_id = ?", (device_id,)))


class Keys:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def upload(self, caller: Caller, p: e.KeysUpload) -> dict[str, int]:
        given = [getattr(p, f) for f in _BUNDLE]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise DariError(ErrorCode.INVALID_PARAMS, "a key bundle needs identity_key, signing_key, master_key,"
                            " device_signature and master_signature together", {"reason": "incomplete_bundle"})
        bundle = all(v is not None for v in given)
        if bundle:
            assert p.identity_key and p.signing_key and p.master_key and p.device_signature and p.master_signature
            statement = device_statement(caller.user_id, caller.device_id, p.identity_key, p.signing_key)
            _verify(p.signing_key, p.device_signature, statement, "device_signature")
            _verify(p.master_key, p.master_signature, statement, "master_signature")
        now = now_ms()

        def fn(tx: Tx) -> dict[str, int]:
            row = tx.one(f"SELECT identity_key, signing_key, master_key, master_signature FROM device_keys"
                         f" WHERE device_id = ?{tx.for_update}", (caller.device_id,))
            changed = False
            if bundle:
                if row is None:
                    tx.execute("INSERT INTO device_keys (device_id, user_id, identity_key, signing_key, master_key,"
                               " device_signature, master_signature, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (caller.device_id, caller.user_id, p.identity_key, p.signing_key, p.master_key,
                                p.device_signature, p.master_signature, now))
                    changed = True
                elif (row[0], row[1]) != (p.identity_key, p.signing_key):
                    raise DariError(ErrorCode.CONFLICT, "this device's identity and signing keys are already set;"
                                    " log in again as a new device to get new ones", {"reason": "keys_immutable"})
                elif (row[2], row[3]) != (p.master_key, p.master_signature):
                    tx.execute("UPDATE device_keys SET master_key = ?, device_signature = ?, master_signature = ?,"
                               " updated_at = ? WHERE device_id = ?",
                               (p.master_key, p.device_signature, p.master_signature, now, caller.device_id))
                    changed = True
                # Only a bundle new to this device may move the user's master key: an old device re-uploading
                # its unchanged bundle must not bring back the master key a newer device replaced.
                current = tx.scalar(f"SELECT master_key FROM master_keys WHERE user_id = ?{tx.for_update}",
                                    (caller.user_id,)) if changed else p.master_key
                if current != p.master_key:
                    # The newest master key is the user's: its holder made it on a device with no old one to
                    # link from, and contacts show "security code changed".
                    tx.execute("INSERT INTO master_keys (user_id, master_key, updated_at) VALUES (?, ?, ?)"
                               " ON CONFLICT (user_id) DO UPDATE SET master_key = excluded.master_key,"
                               " updated_at = excluded.updated_at", (caller.user_id, p.master_key, now))
                    changed = True
            elif row is None and (p.one_time_keys or p.fallback_key):
                raise DariError(ErrorCode.INVALID_PARAMS, "upload this device's key bundle first",
                                {"reason": "bundle_required"})
            if p.one_time_keys:
                have = {str(r[0]): str(r[1]) for r in tx.all(
                    "SELECT key_id, key FROM one_time_keys WHERE device_id = ?", (caller.device_id,))}
                clash = [k for k, v in p.one_time_keys.items() if k in have and have[k] != v]
                if clash:
                    raise DariError(ErrorCode.CONFLICT, f"one-time key {clash[0]!r} was uploaded with another key",
                                    {"reason": "key_id_reused"})
                new = [(k, v) for k, v in p.one_time_keys.items() if k not in have]
                if len(have) + len(new) > MAX_OTK_PER_DEVICE:
                    raise DariError(ErrorCode.LIMIT_EXCEEDED, f"a device keeps at most {MAX_OTK_PER_DEVICE}"
                                    f" one-time keys; it has {len(have)}",
                                    {"reason": "too_many_keys", "limit": MAX_OTK_PER_DEVICE, "count": len(have)})
                tx.executemany("INSERT INTO one_time_keys (device_id, key_id, key, created_at) VALUES (?, ?, ?, ?)",
                               [(caller.device_id, k, v, now) for k, v in new])
            if p.fallback_key is not None:
                tx.execute("INSERT INTO fallback_keys (device_id, key_id, key, updated_at) VALUES (?, ?, ?, ?)"
                           " ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, key = excluded.key,"
                           " updated_at = excluded.updated_at",
                           (caller.device_id, p.fallback_key.key_id, p.fallback_key.key, now))
            if changed:
                keys_changed(tx, caller.user_id, now)
            return {"one_time_key_count": otk_count(tx, caller.device_id)}

        return await self.core.db.write(fn)

    async def query(self, caller: Caller, p: e.KeysQuery) -> dict[str, list[dict[str, Any]]]:
        ids = list(dict.fromkeys(p.user_ids))

        def fn(tx: Tx) -> dict[str, list[dict[str, Any]]]:
            marks = ",".join("?" * len(ids))
            masters = {int(r[0]): str(r[1]) for r in tx.all(
                f"SELECT user_id, master_key FROM master_keys WHERE user_id IN ({marks})", ids)}
            devices: dict[int, list[dict[str, Any]]] = {}
            # The join with devices keeps a device whose row is gone (revoked) out even mid-cascade.
            for r in tx.all("SELECT k.user_id, k.device_id, k.identity_key, k.signing_key, k.master_key,"
                            " k.device_signature, k.master_signature FROM device_keys k"
                            f" JOIN devices d ON d.id = k.device_id WHERE k.user_id IN ({marks})"
                            " ORDER BY k.user_id, k.device_id", ids):
                devices.setdefault(int(r[0]), []).append({
                    "user_id": int(r[0]), "device_id": int(r[1]), "identity_key": r[2], "signing_key": r[3],
                    "master_key": r[4], "device_signature": r[5], "master_signature": r[6]})
            return {"users": [{"user_id": u, "master_key": masters.get(u), "devices": devices.get(u, [])}
                              for u in ids if u in masters or u in devices]}

        return await self.core.db.read(fn)

    async def claim(self, caller: Caller, p: e.KeysClaim) -> dict[str, dict[str, dict[str, Any]]]:
        ids = list(dict.fromkeys(p.device_ids))

        def fn(tx: Tx) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            took: list[int] = []
            for did in ids:
                # Inside the write transaction (one writer; on PostgreSQL the batch lock and the row
                # lock too): the key read here is deleted before any other claim can read it.
                row = tx.one(f"SELECT id, key_id, key FROM one_time_keys WHERE device_id = ? ORDER BY id LIMIT 1"
                             f"{tx.for_update}", (did,))
                if row is not None:
                    tx.execute("DELETE FROM one_time_keys WHERE id = ?", (row[0],))
                    out[str(did)] = {"key_id": row[1], "key": row[2], "fallback": False}
                    took.append(did)
                    continue
                fb = tx.one("SELECT key_id, key FROM fallback_keys WHERE device_id = ?", (did,))
                if fb is not None:
                    out[str(did)] = {"key_id": fb[0], "key": fb[1], "fallback": True}
                    took.append(did)
            low: dict[int, int] = {}
            if took:
                marks = ",".join("?" * len(took))
                left = {int(r[0]): int(r[1]) for r in tx.all(
                    f"SELECT device_id, count(*) FROM one_time_keys WHERE device_id IN ({marks}) GROUP BY device_id",
                    took)}
                low = {d: left.get(d, 0) for d in took if left.get(d, 0) < LOW_WATER}
            if low:
                tx.after_commit.append(lambda: self._low(low))
            return out

        return {"keys": await self.core.db.write(fn)}

    def _low(self, low: dict[int, int]) -> None:
        for did, count in low.items():
            self.core.bus.ephemeral_devices([did], "keys.low", {"one_time_key_count": count})

    async def count(self, caller: Caller, p: NoParams) -> dict[str, Any]:
        def fn(tx: Tx) -> dict[str, Any]:
            fallback = tx.one("SELECT 1 FROM fallback_keys WHERE device_id = ?", (caller.device_id,)) is not None
            return {"one_time_key_count": otk_count(tx, caller.device_id), "fallback": fallback}

        return await self.core.db.read(fn)
