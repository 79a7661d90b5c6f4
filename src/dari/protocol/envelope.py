"""The E2EE wire values the server checks but never opens (docs/e2ee.md): base64 keys and signatures,
the Megolm message envelope, canonical JSON. Pure: no I/O, and no import of methods.py (which uses
these for message.send), so both method modules can share them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# Standard base64 without padding, Olm's convention. 32-byte keys are 43 characters, 64-byte
# Ed25519 signatures 86.
_B64 = "[A-Za-z0-9+/]"
Key32 = Annotated[str, Meta(pattern=f"^{_B64}{{43}}$", description="32 bytes, unpadded base64")]
Signature = Annotated[str, Meta(pattern=f"^{_B64}{{86}}$", description="Ed25519 signature, unpadded base64")]
KeyId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/=_.:-]{1,64}$")]
# "ciphertext ≤ 64 KiB": 65,536 bytes are 87,382 unpadded base64 characters.
MAX_CIPHERTEXT_B64 = 87382
Ciphertext = Annotated[str, Meta(min_length=1, max_length=MAX_CIPHERTEXT_B64, pattern=f"^{_B64}+$")]
SessionId = Annotated[str, Meta(min_length=1, max_length=100, pattern=f"^{_B64}+$")]
BlobRef = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="sha256 of the encrypted blob")]
MAX_ATTACHMENTS = 64   # an album of 30 photos, each with its thumbnail, fits


class Envelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A Megolm-encrypted chat message: stored and forwarded as it came, never decrypted."""
    v: Literal[1]
    alg: Literal["megolm.v1"]
    sender_key: Key32
    device_id: Annotated[int, Meta(ge=1, le=2**62)]
    session_id: SessionId
    ciphertext: Ciphertext


def canonical(obj: Any) -> bytes:
    """The canonical JSON everything signed is serialized as (docs/e2ee.md, Encodings)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64decode(value: str) -> bytes:
    """Unpadded (or padded) standard base64; ValueError when it is not."""
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def device_statement(user_id: int, device_id: int, identity_key: str, signing_key: str) -> bytes:
    """What a device's two signatures cover."""
    return canonical({"alg": "dari-device-v1", "device_id": device_id, "identity_key": identity_key,
                      "signing_key": signing_key, "user_id": user_id})
