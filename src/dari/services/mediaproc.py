"""What a file really is, from its bytes, and making images safe to share.

The client's claimed type is never trusted: a "photo" that is really a zip is a file. Images are
decoded and re-encoded, which drops EXIF (GPS position, camera serial), XMP and text chunks; the
EXIF orientation is applied first so the picture still stands the right way up. Runs in a worker
thread: decoding is CPU work.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from dari.protocol.errors import DariError, ErrorCode
from dari.services import containers

MAX_PIXELS = 50_000_000     # a 7000x7000 photo; above it decoding is a memory attack, not a photo
THUMB_SIZE = (320, 320)
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


def detect(head: bytes) -> tuple[str, str]:
    """(mime, kind) from the first bytes; kind is image, video, audio or file."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "image"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif", "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav", "audio"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
            return ("image/avif" if brand == b"avif" else "image/heic"), "file"   # not decoded here
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4", "audio"
        if brand == b"qt  ":
            return "video/quicktime", "video"
        return "video/mp4", "video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm", "video"
    if head.startswith(b"OggS"):
        return "audio/ogg", "audio"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ("audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"), "audio"
    if head.startswith(b"#!AMR"):
        return "audio/amr", "audio"
    if head.startswith(b"%PDF-"):
        return "application/pdf", "file"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip", "file"
    try:
        head.decode("utf-8")
        if b"\x00" not in head:
            return "text/plain", "file"
    except UnicodeDecodeError:
        pass
    return "application/octet-stream", "file"


@dataclass
class Processed:
    mime: str
    kind: str                     # image, video, audio, file
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    animated: bool = False
    thumbnail: bytes | None = None
    replaced: bool = False        # the file at the path was rewritten (metadata stripped)


def process(path: str) -> Processed:
    with open(path, "rb") as fh:
        head = fh.read(64)
    mime, kind = detect(head)
    if kind == "image":
        return _image(path, mime)
    if mime in ("video/mp4", "video/quicktime", "audio/mp4"):
        duration, width, height = mp4_info(path)
        return Processed(mime, kind, width, height, duration)
    if mime == "audio/wav":
        return Processed(mime, kind, duration_ms=_wav_duration(head))
    if mime in ("video/webm", "audio/ogg"):
        # A recorded voice message is WebM or Ogg: its tracks say audio or video.
        info = containers.webm_info(path) if mime == "video/webm" else containers.ogg_info(path)
        if info is not None:
            return Processed(info.mime, info.kind, duration_ms=info.duration_ms)
    return Processed(mime, kind)


def corrupt(reason: str) -> DariError:
    return DariError(ErrorCode.INVALID_PARAMS, f"corrupt image: {reason}")


def open_image(data: bytes | str) -> Image.Image:
    """Decode fully (a truncated file fails here, not later), with the pixel cap enforced."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if img.width * img.height > MAX_PIXELS:
            raise DariError(ErrorCode.LIMIT_EXCEEDED, f"image is {img.width}x{img.height}; the limit is"
                            f" {MAX_PIXELS} pixels")
        img.load()
        return img
    except Image.DecompressionBombError:
        raise DariError(ErrorCode.LIMIT_EXCEEDED, f"image is over {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise corrupt(str(exc) or type(exc).__name__) from None


def _image(path: str, mime: str) -> Processed:
    img = open_image(path)
    fmt = img.format or "PNG"
    frames = int(getattr(img, "n_frames", 1))
    if fmt == "MPO":              # a phone's JPEG with a depth map: keep the picture, drop the rest
        fmt, frames = "JPEG", 1
    animated = frames > 1
    out = io.BytesIO()
    if animated:
        # Every frame re-encoded; GIF and WebP keep their timing, metadata goes.
        try:
            img.save(out, format=fmt, save_all=True, duration=img.info.get("duration", 100),
                     loop=img.info.get("loop", 0))
        except (OSError, ValueError, EOFError) as exc:
            raise corrupt(str(exc)) from None
        width, height = img.size
        first = img.copy()
    else:
        upright = ImageOps.exif_transpose(img) or img
        width, height = upright.size
        save_kw: dict[str, object] = {}
        if img.info.get("icc_profile"):
            save_kw["icc_profile"] = img.info["icc_profile"]   # colour, not identity: keep it
        if fmt == "JPEG":
            if upright.mode not in ("RGB", "L", "CMYK"):
                upright = upright.convert("RGB")
            save_kw.update(quality=90, optimize=True)
        elif fmt == "WEBP":
            save_kw.update(quality=90)
        elif fmt == "GIF":
            pass
        else:
            fmt = "PNG"
        upright.save(out, format=fmt, **save_kw)
        first = upright
    with open(path + ".clean", "wb") as fh:
        fh.write(out.getvalue())
    os.replace(path + ".clean", path)
    return Processed(_IMAGE_FORMATS.get(fmt, mime), "image", width, height, None, animated,
                     thumbnail(first), replaced=True)


def thumbnail(img: Image.Image) -> bytes:
    thumb = img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img.copy()
    if thumb.mode not in ("RGB", "RGBA", "L"):
        thumb = thumb.convert("RGB")
    thumb.thumbnail(THUMB_SIZE)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=80)
    return out.getvalue()


def _wav_duration(head: bytes) -> int | None:
    # Canonical 44-byte header: byte rate at 28, data size at 40.
    if len(head) < 44 or head[36:40] != b"data":
        return None
    byte_rate = struct.unpack_from("<I", head, 28)[0]
    size = struct.unpack_from("<I", head, 40)[0]
    return int(size * 1000 / byte_rate) if byte_rate else None


def mp4_info(path: str) -> tuple[int | None, int | None, int | None]:
    """Duration (ms), width, height from the moov box of an MP4/MOV/M4A; None where absent."""
    duration = width = height = None
    try:
        with open(path, "rb") as fh:
            end = os.fstat(fh.fileno()).st_size
            moov = _find_box(fh, 0, end, b"moov")
            if moov is None:
                return None, None, None
            start, stop = moov
            mvhd = _find_box(fh, start, stop, b"mvhd")
            if mvhd is not None:
                fh.seek(mvhd[0])
                version = fh.read(1)[0]
                if version == 1:
                    fh.seek(mvhd[0] + 20)
                    scale, dur = struct.unpack(">IQ", fh.read(12))
                else:
                    fh.seek(mvhd[0] + 12)
                    scale, dur = struct.unpack(">II", fh.read(8))
                duration = int(dur * 1000 / scale) if scale else None
            pos = start
            while (trak := _find_box(fh, pos, stop, b"trak")) is not None:
                tkhd = _find_box(fh, trak[0], trak[1], b"tkhd")
                if tkhd is not None and tkhd[1] - tkhd[0] >= 8:
                    fh.seek(tkhd[1] - 8)
                    w, h = struct.unpack(">II", fh.read(8))
                    if w and h:
                        width, height = w >> 16, h >> 16
                        break
                pos = trak[1]
    except (OSError, struct.error, IndexError):
        pass
    return duration, width, height


def _find_box(fh: io.BufferedReader, start: int, end: int, name: bytes) -> tuple[int, int] | None:
    """(payload start, box end) of the first box `name` between start and end."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header)
        payload = pos + 8
        if size == 1:
            size = struct.unpack(">Q", fh.read(8))[0]
            payload += 8
        elif size == 0:
            size = end - pos
        if size < 8:
            return None
        if kind == name:
            return payload, min(pos + size, end)
        pos += size
    return None
