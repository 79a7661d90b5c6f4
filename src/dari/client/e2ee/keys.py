"""Master keys, device bundles and safety numbers (docs/e2ee.md, "Keys" and "Safety numbers")."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dari.client.e2ee.codec import b64d, b64e, canonical

SAFETY_ROUNDS = 5200


class MasterKey:
    """The user's Ed25519 master key, from a 32-byte seed that travels only by device-link transfer."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("a master seed is 32 bytes")
        self.seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = b64e(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32))

    def sign(self, data: bytes) -> str:
        return b64e(self._key.sign(data))


def verify(public_b64: str, data: bytes, signature_b64: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(b64d(public_b64)).verify(b64d(signature_b64), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def device_statement(user_id: int, device_id: int, identity_key: str, signing_key: str) -> bytes:
    """What both signatures of a bundle cover."""
    return canonical({"alg": "dari-device-v1", "device_id": device_id, "identity_key": identity_key,
                      "signing_key": signing_key, "user_id": user_id})


@dataclass(frozen=True)
class Device:
    """A device whose bundle verified: both signatures good, signed by its user's current master key."""
    user_id: int
    device_id: int
    identity_key: str
    signing_key: str
    master_key: str


def verify_bundle(bundle: dict[str, Any], user_id: int, current_master: str) -> Device | None:
    """The device, or None when anything is off (shown as an unverified device, gets no keys)."""
    try:
        if int(bundle["user_id"]) != user_id or bundle["master_key"] != current_master:
            return None
        device_id = int(bundle["device_id"])
        ik, sk = str(bundle["identity_key"]), str(bundle["signing_key"])
        stmt = device_statement(user_id, device_id, ik, sk)
        if not (verify(sk, stmt, str(bundle["device_signature"]))
                and verify(current_master, stmt, str(bundle["master_signature"]))):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return Device(user_id, device_id, ik, sk, current_master)


def user_digits(user_id: int, master_key: str) -> str:
    raw = b64d(master_key)
    h = b"dari-safety-v1" + raw + str(user_id).encode()
    for _ in range(SAFETY_ROUNDS):
        h = hashlib.sha512(h + raw).digest()
    return "".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def safety_number(user_a: int, master_a: str, user_b: int, master_b: str) -> str:
    """60 digits in 12 groups of 5, the smaller user id's half first: the same on both phones."""
    (u1, m1), (u2, m2) = sorted([(user_a, master_a), (user_b, master_b)])
    digits = user_digits(u1, m1) + user_digits(u2, m2)
    return " ".join(digits[i:i + 5] for i in range(0, 60, 5))


def safety_qr(user_a: int, master_a: str, user_b: int, master_b: str) -> str:
    (u1, m1), (u2, m2) = sorted([(user_a, master_a), (user_b, master_b)])
    return f"dari-verify:1:{u1}:{m1}:{u2}:{m2}"
