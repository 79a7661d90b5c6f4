"""The server's relay list on disk: its Ed25519 signing key and the descriptors it has issued.

Kept as two files in the data dir (not in the database) so that `dari admin relay ...` works on a
stopped server and the key never travels through SQL backups. The server only reads them; the
admin commands write them atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from dari.relay.descriptor import Descriptor, Revocations, public_key_text, sign, verify_descriptor

DAY = 86400


def load_or_create_key(path: str) -> Ed25519PrivateKey:
    """The signing key, made once. O_EXCL makes a concurrent server and admin command agree on one key."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with open(path, "rb") as fh:
        key = load_pem_private_key(fh.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


class RelayRegistry:
    def __init__(self, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, "relays")
        self.key_path = os.path.join(self.dir, "signing-key.pem")
        self.state_path = os.path.join(self.dir, "relays.json")
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._key: Ed25519PrivateKey | None = None

    @property
    def key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
        return self._key

    def public_key(self) -> str:
        return public_key_text(self.key.public_key())

    # -- state file ---------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            mtime = os.stat(self.state_path).st_mtime
        except FileNotFoundError:
            return {"relays": {}, "revoked": []}
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        with open(self.state_path) as fh:
            state: dict[str, Any] = json.load(fh)
        self._cache = (mtime, state)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        self._cache = None

    # -- operations ---------------------------------------------------------------------------
    def _issue(self, fields: dict[str, Any], days: float) -> tuple[Descriptor, str]:
        now = int(time.time())
        d = msgspec.convert({**fields, "serial": secrets.token_hex(8), "issued": now,
                             "expires": now + int(days * DAY)}, Descriptor)
        return d, sign(d, self.key)

    def add(self, *, addresses: list[str], pin: str, kind: str = "stream", sni: str | None = None,
            obfs4_cert: str | None = None, iat_mode: int = 0, days: float = 30,
            relay_id: str | None = None) -> tuple[Descriptor, str]:
        state = self._load()
        rid = relay_id or f"r-{secrets.token_hex(4)}"
        if rid in state["relays"]:
            raise ValueError(f"relay {rid} exists; use rotate to re-issue it")
        try:
            d, blob = self._issue({"id": rid, "addresses": addresses, "kind": kind, "sni": sni, "pin": pin,
                                   "obfs4_cert": obfs4_cert, "iat_mode": iat_mode}, days)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid relay: {exc}") from None
        state["relays"][rid] = {"d": blob, "days": days}
        state["revoked"] = [r for r in state["revoked"] if r != rid]
        self._save(state)
        return d, blob

    def rotate(self, relay_id: str, *, days: float | None = None, addresses: list[str] | None = None,
               sni: str | None = None, pin: str | None = None) -> tuple[Descriptor, str]:
        """Re-issue a relay's descriptor (new serial and expiry, optionally new addresses, name or
        server pin); the old serial is revoked so that stale copies stop working."""
        state = self._load()
        entry = state["relays"].get(relay_id)
        if entry is None:
            raise KeyError(relay_id)
        old = self.decode(entry["d"])
        fields = msgspec.to_builtins(old)
        for k in ("serial", "issued", "expires"):
            fields.pop(k)
        fields.update({k: v for k, v in {"addresses": addresses, "sni": sni, "pin": pin}.items() if v})
        d, blob = self._issue(fields, days or entry.get("days", 30))
        state["relays"][relay_id] = {"d": blob, "days": days or entry.get("days", 30)}
        state["revoked"].append(old.serial)
        self._save(state)
        return d, blob

    def revoke(self, relay_id: str) -> None:
        state = self._load()
        if relay_id not in state["relays"]:
            raise KeyError(relay_id)
        del state["relays"][relay_id]
        state["revoked"].append(relay_id)
        self._save(state)

    def decode(self, blob: str) -> Descriptor:
        # Expired entries still decode (the operator lists and rotates them); a failure here means
        # the file was edited by hand or signed by another key.
        return verify_descriptor(blob, [self.key.public_key()], check_time=False)

    def entries(self) -> list[tuple[Descriptor, str]]:
        return [(self.decode(e["d"]), e["d"]) for e in self._load()["relays"].values()]

    def revoked(self) -> set[str]:
        """Revoked relay ids and serials."""
        return {str(r) for r in self._load()["revoked"]}

    def get(self, relay_id: str) -> str:
        entry = self._load()["relays"].get(relay_id)
        if entry is None:
            raise KeyError(relay_id)
        return str(entry["d"])

    def listing(self) -> dict[str, Any]:
        """What `relay.list` returns: the signing key, current descriptors, signed revocations."""
        now = time.time()
        state = self._load()
        current = [blob for d, blob in self.entries() if d.expires > now]
        revocations = sign(Revocations(revoked=list(state["revoked"]), issued=int(now)), self.key)
        return {"key": self.public_key(), "relays": current, "revoked": revocations}
