"""Media in E2EE chats: AES-256-GCM per file (ciphertext‖tag, as WebCrypto writes it). Photos are
stripped of EXIF/GPS before (client/media.py runs services/mediaproc.py on the device), since the
server can no longer do it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dari.client.e2ee.codec import b64d, b64e


@dataclass
class Sealed:
    blob: bytes          # what is uploaded
    key: str
    iv: str
    sha256: str          # hex of the plaintext


def seal(data: bytes) -> Sealed:
    key, iv = os.urandom(32), os.urandom(12)
    return Sealed(AESGCM(key).encrypt(iv, data, None), b64e(key), b64e(iv), hashlib.sha256(data).hexdigest())


def open_sealed(blob: bytes, key: str, iv: str, sha256: str | None = None) -> bytes:
    """The plaintext; ValueError when the tag or the plaintext hash does not match."""
    try:
        data = AESGCM(b64d(key)).decrypt(b64d(iv), blob, None)
    except (InvalidTag, ValueError):
        raise ValueError("the file was tampered with or the key is wrong") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("the file does not match its sha256")
    return data
