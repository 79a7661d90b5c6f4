"""WebM/Matroska and Ogg: whether a file is audio only, and how long it is.

A browser's MediaRecorder writes a voice message as WebM (Chromium) or Ogg (Firefox), and the
first bytes of WebM look the same for a video and a voice note; the tracks tell them apart.
MediaRecorder streams, so its WebM has no Duration in the header and its Segment and Clusters
have "unknown" sizes: the length comes from the last block's timecode instead. Every walk is
bounded (elements visited, bytes read), so a hostile file costs a bounded amount of work.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

_EBML, _DOCTYPE = 0x1A45DFA3, 0x4282
_SEGMENT, _INFO, _SCALE, _DURATION = 0x18538067, 0x1549A966, 0x2AD7B1, 0x4489
_TRACKS, _TRACK_ENTRY, _TRACK_TYPE = 0x1654AE6B, 0xAE, 0x83
_CLUSTER, _TIMECODE, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1
# Descended into rather than skipped: their children are read in line, which also works for the
# unknown sizes a live recording writes.
_MASTERS = {_EBML, _SEGMENT, _INFO, _TRACKS, _TRACK_ENTRY, _CLUSTER, _BLOCK_GROUP}
_UINTS = {_SCALE, _TRACK_TYPE, _TIMECODE}
MAX_ELEMENTS = 400_000      # a 5-minute Opus recording has ~15,000 blocks
OGG_TAIL = 1 << 16          # an Ogg page is at most 65,307 bytes: the last one starts in this tail


@dataclass
class ContainerInfo:
    mime: str
    kind: str                    # audio or video
    duration_ms: int | None = None


def _vint(fh: BinaryIO, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of an EBML variable-size integer; -1 is an unknown size."""
    first = fh.read(1)
    if not first:
        return None
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None
    rest = fh.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = b if keep_marker else b & (0xFF >> length)
    for x in rest:
        value = (value << 8) | x
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def webm_info(path: str) -> ContainerInfo | None:
    """Audio or video and the duration of a WebM/Matroska file; None if it is not one."""
    size = os.path.getsize(path)
    scale = 1_000_000           # ns per timecode unit, Matroska's default
    duration: float | None = None
    types: set[int] = set()
    doctype = b""
    cluster_tc = 0
    last_tc = 0
    pos = 0
    with open(path, "rb") as fh:
        for _ in range(MAX_ELEMENTS):
            if pos >= size:
                break
            fh.seek(pos)
            head = _vint(fh, keep_marker=True)
            if head is None:
                break
            ident, id_len = head
            sz = _vint(fh, keep_marker=False)
            if sz is None:
                break
            length, size_len = sz
            payload = pos + id_len + size_len
            if ident in _MASTERS:
                pos = payload
                continue
            if length < 0 or payload + length > size:
                break   # a truncated tail: keep what was read
            if ident in _UINTS and length <= 8:
                value = int.from_bytes(fh.read(length), "big")
                if ident == _SCALE and value:
                    scale = value
                elif ident == _TRACK_TYPE:
                    types.add(value)
                else:
                    cluster_tc = value
            elif ident == _DURATION and length in (4, 8):
                duration = struct.unpack(">f" if length == 4 else ">d", fh.read(length))[0]
            elif ident == _DOCTYPE and length <= 16:
                doctype = fh.read(length).rstrip(b"\x00")
            elif ident in (_SIMPLE_BLOCK, _BLOCK) and length >= 4:
                data = fh.read(11)
                track = _vint_bytes(data)
                if track is not None and track + 2 <= len(data):
                    rel = struct.unpack_from(">h", data, track)[0]
                    last_tc = max(last_tc, cluster_tc + rel)
            pos = payload + length
        else:
            last_tc = 0   # not walked to the end: the last timecode is not the length
    if doctype not in (b"webm", b"matroska") and not types:
        return None
    video = 1 in types or not types
    base = "webm" if doctype != b"matroska" else "x-matroska"
    units = duration if duration and duration > 0 else last_tc
    ms = int(units * scale / 1_000_000) if units and units > 0 else None
    return ContainerInfo(f"{'video' if video else 'audio'}/{base}", "video" if video else "audio", ms)


def _vint_bytes(data: bytes) -> int | None:
    """The length of the track-number vint at the start of a block."""
    if not data:
        return None
    for length in range(1, 9):
        if data[0] & (0x80 >> (length - 1)):
            return length
    return None


def ogg_info(path: str) -> ContainerInfo | None:
    """Opus, Vorbis or Theora in Ogg: audio or video, and the duration from the last page's granule."""
    with open(path, "rb") as fh:
        first = fh.read(512)
        if not first.startswith(b"OggS") or len(first) < 28:
            return None
        serial = first[14:18]
        body = first[27 + first[26]:]
        rate, skip, kind = 0, 0, "audio"
        if body.startswith(b"OpusHead") and len(body) >= 16:
            rate, skip = 48000, struct.unpack_from("<H", body, 10)[0]
        elif body.startswith(b"\x01vorbis") and len(body) >= 16:
            rate = struct.unpack_from("<I", body, 12)[0]
        elif body.startswith(b"\x80theora"):
            kind = "video"
        end = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, end - OGG_TAIL))
        tail = fh.read(OGG_TAIL)
    ms = None
    at = tail.rfind(b"OggS")
    while at >= 0 and rate:
        if tail[at + 14:at + 18] == serial and at + 14 <= len(tail):
            granule = struct.unpack_from("<q", tail, at + 6)[0]
            if granule > skip:
                ms = int((granule - skip) * 1000 / rate)
            break
        at = tail.rfind(b"OggS", 0, at)
    return ContainerInfo(f"{kind}/ogg", kind, ms)
