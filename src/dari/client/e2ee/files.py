"""Media in E2EE chats: AES-256-GCM per file (ciphertext‖tag, as WebCrypto writes it) and photos
re-encoded without EXIF/GPS before encryption, since the server can no longer strip them."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image, ImageOps, UnidentifiedImageError

from dari.client.e2ee.codec import b64d, b64e

MAX_PIXELS = 50_000_000
THUMB_SIZE = (320, 320)


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


@dataclass
class CleanImage:
    data: bytes
    mime: str
    width: int
    height: int
    thumb: bytes


def clean_image(data: bytes) -> CleanImage:
    """Decode and re-encode (upright) without metadata; a WebP thumbnail beside it."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image: {exc}") from None
    fmt = "JPEG" if img.format in ("JPEG", "MPO") else "PNG"
    upright = ImageOps.exif_transpose(img) or img
    if fmt == "JPEG" and upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    out = io.BytesIO()
    upright.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    thumb = upright.convert("RGB") if upright.mode not in ("RGB", "RGBA", "L") else upright.copy()
    thumb.thumbnail(THUMB_SIZE)
    tout = io.BytesIO()
    thumb.save(tout, format="WEBP", quality=80)
    return CleanImage(out.getvalue(), "image/jpeg" if fmt == "JPEG" else "image/png", upright.width,
                      upright.height, tout.getvalue())
