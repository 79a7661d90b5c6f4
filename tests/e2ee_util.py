"""Test helpers for E2EE: real Ed25519 keys (cryptography) and the signed bundle docs/e2ee.md
describes. The server never needs the private halves; tests make bundles the way a client does."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def statement(user_id: int, device_id: int, identity_key: str, signing_key: str) -> bytes:
    """What both signatures cover, written from docs/e2ee.md rather than taken from the server."""
    return json.dumps({"alg": "dari-device-v1", "device_id": device_id, "identity_key": identity_key,
                       "signing_key": signing_key, "user_id": user_id},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def public(key: Ed25519PrivateKey) -> str:
    return b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def curve_key() -> str:
    """Stands in for a Curve25519 public key: 32 bytes the server only stores and hands out."""
    return b64(os.urandom(32))


def bundle(user_id: int, device_id: int, master: Ed25519PrivateKey, signing: Ed25519PrivateKey | None = None,
           identity_key: str | None = None) -> dict[str, Any]:
    signing = signing or Ed25519PrivateKey.generate()
    identity_key = identity_key or curve_key()
    signed = statement(user_id, device_id, identity_key, public(signing))
    return {"identity_key": identity_key, "signing_key": public(signing), "master_key": public(master),
            "device_signature": b64(signing.sign(signed)), "master_signature": b64(master.sign(signed))}


def envelope(device_id: int, size: int = 64) -> dict[str, Any]:
    """A Megolm envelope whose ciphertext is random bytes: nothing in it is text."""
    return {"v": 1, "alg": "megolm.v1", "sender_key": curve_key(), "device_id": device_id,
            "session_id": b64(os.urandom(32)), "ciphertext": b64(os.urandom(size))}
