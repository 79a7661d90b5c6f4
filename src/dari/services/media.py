"""Media: resumable chunked uploads, content-addressed blobs, who may read them, expiry.

An upload is a file under data_dir/uploads that grows chunk by chunk; its length is the offset a
client resumes from, so a dropped connection costs at most one chunk. Finishing detects the type
from the bytes, strips image metadata, makes a thumbnail and moves the bytes into the blob store.

A blob is readable by whoever holds a reference to it: its uploader ('user'), the members of a
chat it was sent to ('chat'), the viewers of a story or board post it is in, everyone logged in for
stickers. Other scopes register a check with `register_scope`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from dari.protocol import content as c
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import MessageOut
from dari.services import mediaproc, timeline
from dari.services.blobstore import BlobStore, DiskBlobStore
from dari.services.core import Caller, Core, now_ms
from dari.storage.base import Tx

UPLOAD_TTL_MS = 24 * 3600 * 1000
DAY_MS = 86400 * 1000
MESSAGE_KIND = {"image": "image", "video": "video", "audio": "voice", "file": "file"}
NEEDS = {"image": "image", "video": "video", "voice": "audio"}

ScopeCheck = Callable[[Tx, "int | None", int], bool]
_SCOPES: dict[str, ScopeCheck] = {}


def register_scope(scope: str, check: ScopeCheck) -> None:
    _SCOPES[scope] = check


register_scope("user", lambda tx, uid, sid: uid == sid)
register_scope("chat", lambda tx, uid, sid: uid is not None and timeline.member_row(tx, sid, uid) is not None)
register_scope("sticker", lambda tx, uid, sid: True)


class BlobInfo(msgspec.Struct):
    blob_id: str
    type: str
    kind: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumbnail_id: str | None = None
    animated: bool = False
    expires_at: int | None = None


_BLOB_COLS = "id, mime, kind, size, width, height, duration_ms, thumb_id, animated, expires_at"


def _blob(row: tuple[Any, ...]) -> BlobInfo:
    return BlobInfo(row[0], row[1], row[2], int(row[3]), row[4], row[5], row[6], row[7], bool(row[8]), row[9])


def can_read(tx: Tx, user_id: int | None, blob_id: str) -> bool:
    for scope, sid in tx.all("SELECT scope, scope_id FROM blob_refs WHERE blob_id = ?", (blob_id,)):
        check = _SCOPES.get(scope)
        if check is not None and check(tx, user_id, int(sid)):
            return True
    return False


def readable_blob(tx: Tx, user_id: int | None, blob_id: str, now: int) -> BlobInfo:
    """The blob if this user may read it; one answer for 'absent' and 'not yours' (G9)."""
    row = tx.one(f"SELECT {_BLOB_COLS} FROM blobs WHERE id = ?", (blob_id,))
    if row is None or (row[9] is not None and row[9] < now) or not can_read(tx, user_id, blob_id):
        raise DariError(ErrorCode.FORBIDDEN, "no such file, or not shared with you (files may expire)")
    return _blob(row)


def attach(tx: Tx, user_id: int, blob_ids: list[str], scope: str, scope_id: int, now: int) -> list[BlobInfo]:
    """Share blobs the user may read into a chat, story or post (which then grants access)."""
    out = [readable_blob(tx, user_id, b, now) for b in dict.fromkeys(blob_ids)]
    for info in out:
        tx.execute("INSERT INTO blob_refs (blob_id, scope, scope_id, created_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT DO NOTHING", (info.blob_id, scope, scope_id, now))
    return out


def detach(tx: Tx, scope: str, scope_id: int) -> None:
    tx.execute("DELETE FROM blob_refs WHERE scope = ? AND scope_id = ?", (scope, scope_id))


def expiry_days(settings_days: float, kinds: str, kind: str) -> float:
    for part in kinds.split(","):
        name, _, days = part.partition(":")
        if name.strip() == kind and days.strip():
            return float(days)
    return settings_days


class Media:
    def __init__(self, core: Core, store: BlobStore | None = None) -> None:
        self.core = core
        data = Path(core.settings.data_dir)
        self.store = store or DiskBlobStore(str(data / "blobs"))
        self.uploads = data / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def chunk_size(self) -> int:
        # Base64 grows data by 4/3 and the frame needs room for the JSON around it.
        room = (self.core.settings.max_frame_bytes - 4096) * 3 // 4
        return max(4096, min(512 * 1024, room // 4096 * 4096))

    def _part(self, upload_id: str) -> Path:
        return self.uploads / f"{upload_id}.part"

    # -- uploads ---------------------------------------------------------------------------------
    async def upload_begin(self, caller: Caller, p: c.UploadBegin) -> dict[str, Any]:
        cap = self.core.settings.media_max_bytes
        if p.size > cap:
            raise DariError(ErrorCode.LIMIT_EXCEEDED, f"the file is {p.size} bytes; this server accepts files up"
                            f" to {cap} bytes ({cap / 2**20:.0f} MiB)", {"max_bytes": cap})
        upload_id = secrets.token_urlsafe(18)
        now = now_ms()

        def fn(tx: Tx) -> None:
            tx.execute("INSERT INTO uploads (id, user_id, size, name, declared_type, created_at)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (upload_id, caller.user_id, p.size, p.name, p.declared_type, now))

        await self.core.db.write(fn)
        self._part(upload_id).touch()
        return {"upload_id": upload_id, "chunk_size": self.chunk_size, "offset": 0, "size": p.size,
                "max_bytes": cap, "http": f"/media/upload?upload_id={upload_id}"}

    async def _upload(self, caller: Caller, upload_id: str) -> tuple[int, str]:
        row = await self.core.db.read(lambda tx: tx.one(
            "SELECT size, name FROM uploads WHERE id = ? AND user_id = ?", (upload_id, caller.user_id)))
        if row is None or not self._part(upload_id).exists():
            raise DariError(ErrorCode.NOT_FOUND, f"no upload {upload_id} (finished, expired or not yours)")
        return int(row[0]), str(row[1])

    async def write(self, caller: Caller, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Write at `offset` (at most the bytes received so far: a resend overwrites), return the new offset."""
        size, _ = await self._upload(caller, upload_id)
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        async with lock:
            path = self._part(upload_id)
            have = path.stat().st_size
            if offset > have:
                raise DariError(ErrorCode.CONFLICT, f"offset {offset} is past the {have} bytes received; resume"
                                f" from {have}", {"offset": have})
            fh = await asyncio.to_thread(open, path, "r+b")
            try:
                fh.truncate(offset)
                fh.seek(offset)
                pos = offset
                async for chunk in chunks:
                    if pos + len(chunk) > size:
                        fh.truncate(offset)
                        raise DariError(ErrorCode.LIMIT_EXCEEDED, f"more bytes than the {size} announced")
                    await asyncio.to_thread(fh.write, chunk)
                    pos += len(chunk)
            finally:
                fh.close()
        return pos

    async def upload_chunk(self, caller: Caller, p: c.UploadChunk) -> dict[str, int]:
        try:
            data = base64.b64decode(p.data, validate=True)
        except (binascii.Error, ValueError):
            raise DariError(ErrorCode.INVALID_PARAMS, "data is not valid base64") from None

        async def one() -> AsyncIterator[bytes]:
            yield data

        return {"offset": await self.write(caller, p.upload_id, p.offset, one())}

    async def upload_status(self, caller: Caller, p: c.UploadRef) -> dict[str, Any]:
        size, name = await self._upload(caller, p.upload_id)
        return {"upload_id": p.upload_id, "offset": self._part(p.upload_id).stat().st_size, "size": size,
                "name": name}

    async def upload_finish(self, caller: Caller, p: c.UploadRef) -> dict[str, Any]:
        size, name = await self._upload(caller, p.upload_id)
        lock = self._locks.setdefault(p.upload_id, asyncio.Lock())
        async with lock:
            path = self._part(p.upload_id)
            have = path.stat().st_size
            if have != size:
                raise DariError(ErrorCode.CONFLICT, f"incomplete upload: {have} of {size} bytes; resume from {have}",
                                {"offset": have})
            try:
                info = await asyncio.to_thread(self._ingest, str(path))
            except DariError:
                # A corrupt image stays a failed upload; nothing reaches the store (G8).
                path.unlink(missing_ok=True)
                await self.core.db.write(lambda tx: tx.execute("DELETE FROM uploads WHERE id = ?", (p.upload_id,)))
                raise
        now = now_ms()
        days = expiry_days(self.core.settings.media_expiry_days, self.core.settings.media_expiry_kinds, info.kind)
        info.expires_at = now + int(days * DAY_MS) if days > 0 else None

        def fn(tx: Tx) -> BlobInfo:
            tx.execute(f"INSERT INTO blobs ({_BLOB_COLS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                       " ON CONFLICT (id) DO NOTHING",
                       (info.blob_id, info.type, info.kind, info.size, info.width, info.height, info.duration_ms,
                        info.thumbnail_id, int(info.animated), info.expires_at, now))
            if info.expires_at is None:
                tx.execute("UPDATE blobs SET expires_at = NULL WHERE id = ?", (info.blob_id,))
            else:
                tx.execute("UPDATE blobs SET expires_at = ? WHERE id = ? AND expires_at < ?",
                           (info.expires_at, info.blob_id, info.expires_at))
            tx.execute("INSERT INTO blob_refs (blob_id, scope, scope_id, created_at) VALUES (?, 'user', ?, ?)"
                       " ON CONFLICT DO NOTHING", (info.blob_id, caller.user_id, now))
            tx.execute("DELETE FROM uploads WHERE id = ?", (p.upload_id,))
            row = tx.one(f"SELECT {_BLOB_COLS} FROM blobs WHERE id = ?", (info.blob_id,))
            assert row is not None
            return _blob(row)

        blob = await self.core.db.write(fn)
        self._locks.pop(p.upload_id, None)
        return {**msgspec.to_builtins(blob), "name": name}

    def _ingest(self, path: str) -> BlobInfo:
        """Worker thread: detect, clean, thumbnail, store."""
        proc = mediaproc.process(path)
        size = os.path.getsize(path)
        thumb_id = self.store.put_bytes(proc.thumbnail) if proc.thumbnail else None
        blob_id = self.store.put_file(path)
        return BlobInfo(blob_id, proc.mime, proc.kind, size, proc.width, proc.height, proc.duration_ms, thumb_id,
                        proc.animated)

    async def ingest_bytes(self, data: bytes, *, scope: str, scope_id: int,
                           trusted: BlobInfo | None = None) -> BlobInfo:
        """Store bytes an operator imported (sticker images), never expiring. `trusted` describes
        bytes the server made itself, which skip the clean-up pass."""
        if trusted is not None:
            info = trusted
            info.blob_id = await asyncio.to_thread(self.store.put_bytes, data)
            info.size = len(data)
        else:
            tmp = self.uploads / f"internal-{secrets.token_hex(8)}.part"
            await asyncio.to_thread(tmp.write_bytes, data)
            try:
                info = await asyncio.to_thread(self._ingest, str(tmp))
            finally:
                tmp.unlink(missing_ok=True)
        now = now_ms()

        def fn(tx: Tx) -> None:
            tx.execute(f"INSERT INTO blobs ({_BLOB_COLS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
                       " ON CONFLICT (id) DO NOTHING",
                       (info.blob_id, info.type, info.kind, info.size, info.width, info.height, info.duration_ms,
                        info.thumbnail_id, int(info.animated), now))
            tx.execute("UPDATE blobs SET expires_at = NULL WHERE id = ?", (info.blob_id,))
            tx.execute("INSERT INTO blob_refs (blob_id, scope, scope_id, created_at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT DO NOTHING", (info.blob_id, scope, scope_id, now))

        await self.core.db.write(fn)
        return info

    # -- reading ---------------------------------------------------------------------------------
    async def blob_for(self, user_id: int | None, blob_id: str) -> BlobInfo:
        now = now_ms()
        return await self.core.db.read(lambda tx: readable_blob(tx, user_id, blob_id, now))

    async def info(self, caller: Caller, p: c.BlobRef) -> BlobInfo:
        return await self.blob_for(caller.user_id, p.blob_id)

    async def read(self, caller: Caller, p: c.MediaRead) -> dict[str, Any]:
        blob = await self.blob_for(caller.user_id, p.blob_id)
        target = blob.thumbnail_id if p.thumb else blob.blob_id
        if target is None:
            raise DariError(ErrorCode.NOT_FOUND, "this file has no thumbnail")
        total = await asyncio.to_thread(self.store.size, target)
        data = await asyncio.to_thread(self.store.read, target, p.offset, p.length)
        return {"data": base64.b64encode(data).decode(), "offset": p.offset, "size": total,
                "eof": p.offset + len(data) >= total, "type": "image/webp" if p.thumb else blob.type}

    # -- messages --------------------------------------------------------------------------------
    async def send_media(self, caller: Caller, p: c.SendMedia) -> MessageOut:
        if len(p.caption) > self.core.settings.max_message_chars or "\x00" in p.caption:
            raise DariError(ErrorCode.INVALID_PARAMS, "caption too long or contains NUL")
        now = now_ms()

        def fn(tx: Tx) -> MessageOut:
            prior = prior_message(tx, caller.user_id, p.client_id, p.chat_id)
            if prior is not None:
                return prior
            check_can_send(tx, p.chat_id, caller.user_id)
            blob = readable_blob(tx, caller.user_id, p.blob_id, now)
            kind = p.kind or MESSAGE_KIND[blob.kind]
            need = NEEDS.get(kind)
            if need is not None and blob.kind != need:
                raise DariError(ErrorCode.INVALID_PARAMS, f"a {kind} message needs a {need} file; this file is"
                                f" {blob.type}")
            attach(tx, caller.user_id, [p.blob_id], "chat", p.chat_id, now)
            att: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(blob).items() if v is not None}
            att.pop("kind", None)
            if att.get("duration_ms") is None and p.duration_ms is not None and kind in ("voice", "video"):
                att["duration_ms"] = p.duration_ms
            if p.name:
                att["name"] = p.name
            return timeline.append(tx, p.chat_id, caller.user_id, kind, p.caption, now, client_id=p.client_id,
                                   reply_to=p.reply_to, attachment=att)

        return await self.core.db.write(fn)

    # -- expiry ----------------------------------------------------------------------------------
    async def prune(self) -> dict[str, int]:
        now = now_ms()

        def fn(tx: Tx) -> tuple[list[tuple[str, str | None]], list[str]]:
            gone = [(str(r[0]), r[1]) for r in tx.all(
                "SELECT id, thumb_id FROM blobs WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))]
            for blob_id, _ in gone:
                tx.execute("DELETE FROM blob_refs WHERE blob_id = ?", (blob_id,))
                tx.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            stale = [str(r[0]) for r in tx.all("SELECT id FROM uploads WHERE created_at < ?", (now - UPLOAD_TTL_MS,))]
            for uid in stale:
                tx.execute("DELETE FROM uploads WHERE id = ?", (uid,))
            return gone, stale

        gone, stale = await self.core.db.write(fn)

        def files() -> None:
            for blob_id, thumb_id in gone:
                self.store.delete(blob_id)
                if thumb_id:
                    self.store.delete(thumb_id)
            for uid in stale:
                self._part(uid).unlink(missing_ok=True)

        await asyncio.to_thread(files)
        return {"blobs": len(gone), "uploads": len(stale)}

    async def prune_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.prune()
            except DariError:
                pass   # storage busy: next round


def prior_message(tx: Tx, sender_id: int, client_id: str, chat_id: int) -> MessageOut | None:
    """A retry returns the original message and stores nothing new (G2)."""
    row = tx.one(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM}"
                 " WHERE m.sender_id = ? AND m.client_id = ? AND m.client_id <> ''", (sender_id, client_id))
    if row is None:
        return None
    msg = timeline.row_to_message(row)
    if msg.chat_id != chat_id:
        raise DariError(ErrorCode.CONFLICT, "client_id was already used for another chat")
    msg.unread = timeline.unread_for(msg.seq, timeline.read_pointers(tx, chat_id))
    return msg


def check_can_send(tx: Tx, chat_id: int, user_id: int) -> None:
    """A plaintext media or sticker message may go to this chat: a member, not end-to-end encrypted
    (there the client encrypts the file and sends an envelope), and a 1:1 peer who still exists."""
    timeline.require_member(tx, chat_id, user_id)
    chat = tx.one("SELECT kind, e2ee FROM chats WHERE id = ?", (chat_id,))
    if chat is not None and chat[1]:
        raise timeline.e2ee_mismatch(True)
    if chat is not None and chat[0] == "direct":
        peer = tx.scalar("SELECT user_id FROM members WHERE chat_id = ? AND user_id <> ?", (chat_id, user_id))
        if peer is None:
            raise DariError(ErrorCode.FORBIDDEN, "the other person has deleted their account")
