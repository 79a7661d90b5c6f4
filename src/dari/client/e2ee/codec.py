"""Wire encodings shared with olm.js: standard base64 without padding, canonical JSON for signatures."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def b64d(text: str) -> bytes:
    """Standard base64, padded or not (olm.js omits the padding); ValueError on garbage."""
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
