"""WebM and Ogg probing: audio-only files are voice messages, and their length is read from the
blocks (a recording's header has none). The files are built here element by element."""

from __future__ import annotations

import struct
from pathlib import Path

from dari.services import containers, mediaproc

UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def _size(n: int) -> bytes:
    return bytes([0x80 | n]) if n < 127 else b"\x40" + n.to_bytes(1, "big") if n < 0x3FFF else \
        b"\x10" + n.to_bytes(3, "big")


def el(ident: int, payload: bytes) -> bytes:
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + _size(len(payload)) + payload


def webm(track_types: list[int], block_ms: list[int], duration: float | None = None) -> bytes:
    """Like Chromium's MediaRecorder: Segment and Clusters of unknown size, no Duration unless given."""
    header = el(0x1A45DFA3, el(0x4282, b"webm"))
    info = el(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + (el(0x4489, struct.pack(">d", duration))
                                                           if duration is not None else b"")
    tracks = el(0x1654AE6B, b"".join(el(0xAE, el(0xD7, bytes([i + 1])) + el(0x83, bytes([t])))
                                     for i, t in enumerate(track_types)))
    clusters = b""
    for start in range(0, len(block_ms), 5):
        base = block_ms[start]
        blocks = b"".join(el(0xA3, b"\x81" + struct.pack(">h", ms - base) + b"\x80" + b"\x00" * 20)
                          for ms in block_ms[start:start + 5])
        clusters += (0x1F43B675).to_bytes(4, "big") + UNKNOWN + el(0xE7, base.to_bytes(2, "big")) + blocks
    return header + (0x18538067).to_bytes(4, "big") + UNKNOWN + el(0x1549A966, info) + tracks + clusters


def test_recorded_webm_audio_is_a_voice_note_with_its_length(tmp_path: Path) -> None:
    path = tmp_path / "voice.webm"
    path.write_bytes(webm([2], list(range(0, 1500, 20))))
    info = containers.webm_info(str(path))
    assert info is not None and (info.mime, info.kind, info.duration_ms) == ("audio/webm", "audio", 1480)
    proc = mediaproc.process(str(path))
    assert (proc.mime, proc.kind, proc.duration_ms) == ("audio/webm", "audio", 1480)


def test_webm_with_a_video_track_stays_video_and_header_duration_wins(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(webm([1, 2], [0, 40, 80], duration=2500.0))
    proc = mediaproc.process(str(path))
    assert (proc.mime, proc.kind, proc.duration_ms) == ("video/webm", "video", 2500)


def test_truncated_and_garbage_webm(tmp_path: Path) -> None:
    whole = webm([2], list(range(0, 1000, 20)))
    path = tmp_path / "cut.webm"
    path.write_bytes(whole[: len(whole) // 2])
    info = containers.webm_info(str(path))
    assert info is not None and info.kind == "audio" and info.duration_ms and info.duration_ms < 1000
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\xff" * 200)
    assert mediaproc.process(str(path)).kind == "video"   # no tracks found: as before


def ogg_page(serial: int, granule: int, seq: int, packet: bytes, flags: int = 0) -> bytes:
    return (b"OggS" + bytes([0, flags]) + struct.pack("<qIII", granule, serial, seq, 0)
            + bytes([1, len(packet)]) + packet)


def test_ogg_opus_duration_from_the_last_page(tmp_path: Path) -> None:
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIh", 312, 48000, 0) + b"\x00"
    data = ogg_page(7, 0, 0, head, 2) + ogg_page(7, 0, 1, b"OpusTags" + bytes(8))
    data += b"".join(ogg_page(7, 312 + 960 * (i + 1), i + 2, bytes(30)) for i in range(100))
    data += ogg_page(9, 10**9, 0, bytes(10))   # another stream's page at the end is not ours
    path = tmp_path / "voice.ogg"
    path.write_bytes(data)
    proc = mediaproc.process(str(path))
    assert (proc.mime, proc.kind, proc.duration_ms) == ("audio/ogg", "audio", 2000)
