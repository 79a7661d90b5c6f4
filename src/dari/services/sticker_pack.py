"""Reading and validating a sticker pack (a folder or a zip) before anything is stored.

A pack is `manifest.json` plus images:

    {"slug": "dari-bridge", "title": "Dari", "author": "dari project",
     "stickers": [{"file": "happy.png", "emoji": "😊", "name": "Happy"}, ...]}

Archives come from operators, but an archive is still hostile input: entry count, per-file size,
total uncompressed size and compression ratio are capped before and while reading (a header may
lie), and paths that are absolute, climb out with `..`, or are symlinks are refused.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dari.protocol.errors import DariError, ErrorCode
from dari.services.mediaproc import open_image

MAX_STICKERS = 40
MAX_FILE_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ENTRIES = 100
MAX_TOTAL_BYTES = 40 << 20
MAX_RATIO = 100            # uncompressed / compressed; real PNG/WebP barely compress at all
MAX_SIDE = 512
MIN_SIDE = 32
MAX_FRAMES = 120


class PackError(DariError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(ErrorCode.INVALID_PARAMS, "sticker pack rejected: " + "; ".join(problems),
                         {"problems": problems})
        self.problems = problems


@dataclass
class Sticker:
    file: str
    data: bytes
    emoji: str
    width: int
    height: int
    animated: bool
    name: str = ""         # what it shows ("Thumbs up"): alt text and the CLI's description


@dataclass
class Pack:
    slug: str
    title: str
    author: str
    stickers: list[Sticker] = field(default_factory=list)


def _safe_name(name: str) -> str:
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise PackError([f"{name!r}: absolute or non-portable path"])
    parts = PurePosixPath(name).parts
    if any(p in ("..", "") for p in parts):
        raise PackError([f"{name!r}: path leaves the pack"])
    return "/".join(parts)


def read_zip(data: bytes) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackError([f"not a zip archive: {exc}"]) from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ENTRIES:
            raise PackError([f"{len(infos)} files in the archive; the limit is {MAX_ENTRIES}"])
        declared = sum(i.file_size for i in infos)
        if declared > MAX_TOTAL_BYTES:
            raise PackError([f"{declared} bytes uncompressed; the limit is {MAX_TOTAL_BYTES}"])
        files: dict[str, bytes] = {}
        total = 0
        for info in infos:
            name = _safe_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackError([f"{name!r}: symlinks are not allowed"])
            if info.file_size > max(info.compress_size, 1) * MAX_RATIO:
                raise PackError([f"{name!r}: compression ratio over {MAX_RATIO}:1 (a zip bomb?)"])
            limit = MAX_MANIFEST_BYTES if name.endswith(".json") else MAX_FILE_BYTES
            if info.file_size > limit:
                raise PackError([f"{name!r}: {info.file_size} bytes; the limit is {limit}"])
            try:
                with zf.open(info) as fh:
                    body = fh.read(limit + 1)   # headers can lie: cap what is really inflated
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise PackError([f"{name!r}: unreadable: {exc}"]) from None
            if len(body) > limit:
                raise PackError([f"{name!r}: over {limit} bytes"])
            total += len(body)
            if total > MAX_TOTAL_BYTES:
                raise PackError([f"over {MAX_TOTAL_BYTES} bytes uncompressed"])
            files[name] = body
    return _strip_common_folder(files)


def read_folder(path: str) -> dict[str, bytes]:
    root = Path(path)
    files: dict[str, bytes] = {}
    total = 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            raise PackError([f"{rel!r}: symlinks are not allowed"])
        if not p.is_file():
            continue
        if len(files) >= MAX_ENTRIES:
            raise PackError([f"more than {MAX_ENTRIES} files in the folder"])
        limit = MAX_MANIFEST_BYTES if rel.endswith(".json") else MAX_FILE_BYTES
        size = p.stat().st_size
        if size > limit:
            raise PackError([f"{rel!r}: {size} bytes; the limit is {limit}"])
        total += size
        if total > MAX_TOTAL_BYTES:
            raise PackError([f"over {MAX_TOTAL_BYTES} bytes in the folder"])
        files[rel] = p.read_bytes()
    return files


def read_path(path: str) -> dict[str, bytes]:
    if os.path.isdir(path):
        return read_folder(path)
    size = os.path.getsize(path)
    if size > MAX_TOTAL_BYTES:
        raise PackError([f"{path}: {size} bytes; the limit is {MAX_TOTAL_BYTES}"])
    with open(path, "rb") as fh:
        return read_zip(fh.read())


def _strip_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    # Zipping a folder puts everything under "folder/": accept that layout too.
    tops = {n.split("/", 1)[0] for n in files}
    if len(tops) == 1 and all("/" in n for n in files):
        return {n.split("/", 1)[1]: b for n, b in files.items()}
    return files


def validate(files: dict[str, bytes]) -> Pack:
    raw = files.get("manifest.json")
    if raw is None:
        raise PackError(["manifest.json is missing"])
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError([f"manifest.json: {exc}"]) from None
    problems: list[str] = []
    if not isinstance(manifest, dict):
        raise PackError(["manifest.json must be an object"])
    slug, title, author = manifest.get("slug"), manifest.get("title"), manifest.get("author", "")
    if not isinstance(slug, str) or not slug.replace("-", "").isalnum() or not 2 <= len(slug) <= 40 \
            or slug != slug.lower() or not slug.isascii():
        problems.append("slug: 2-40 characters of a-z, 0-9 and -")
    if not isinstance(title, str) or not 1 <= len(title) <= 60:
        problems.append("title: 1-60 characters")
    if not isinstance(author, str) or len(author) > 60:
        problems.append("author: at most 60 characters")
    entries = manifest.get("stickers")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_STICKERS:
        raise PackError([*problems, f"stickers: a list of 1-{MAX_STICKERS} entries"])
    pack = Pack(str(slug), str(title), str(author))
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            problems.append(f"stickers[{i}]: needs a file name")
            continue
        name, emoji = entry["file"], entry.get("emoji", "")
        if not isinstance(emoji, str) or len(emoji) > 16:
            problems.append(f"{name}: emoji is at most 16 characters")
            emoji = ""
        label = entry.get("name", "")
        if not isinstance(label, str) or len(label) > 40:
            problems.append(f"{name}: name is at most 40 characters")
            label = ""
        data = files.get(name)
        if data is None:
            problems.append(f"{name}: listed in the manifest but not in the pack")
            continue
        try:
            sticker = _check_image(name, data, emoji)
            sticker.name = label.strip()
            pack.stickers.append(sticker)
        except DariError as exc:
            problems.append(exc.message)
    if problems:
        raise PackError(problems)
    return pack


def _check_image(name: str, data: bytes, emoji: str) -> Sticker:
    try:
        img = open_image(data)
    except DariError as exc:
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name}: {exc.message}") from None
    if img.format not in ("PNG", "WEBP"):
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name}: {img.format} is not allowed (PNG, APNG or WebP)")
    w, h = img.size
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name}: {w}x{h}; sides must be {MIN_SIDE}-{MAX_SIDE} pixels")
    frames = int(getattr(img, "n_frames", 1))
    if frames > MAX_FRAMES:
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name}: {frames} frames; the limit is {MAX_FRAMES}")
    try:
        for i in range(frames):     # every frame decodes, or the pack is refused now rather than in a chat
            img.seek(i)
            img.load()
    except (OSError, EOFError, ValueError) as exc:
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name}: corrupt animation: {exc}") from None
    return Sticker(name, data, emoji, w, h, frames > 1)


def load(path: str) -> Pack:
    return validate(read_path(path))

