"""Stickers: the server's packs, each user's installed packs and recent stickers, sticker messages.

Default packs count as installed for everyone until a user removes them; other packs need an
install. Sticker images are blobs with a 'sticker' reference, readable by anyone logged in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from dari.protocol import content as c
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import MessageOut
from dari.services import default_stickers, sticker_pack, timeline
from dari.services.core import Caller, Core, now_ms
from dari.services.media import BlobInfo, Media, check_can_send, prior_message, readable_blob
from dari.services.moderation import require_admin
from dari.storage.base import Tx


class StickerOut(msgspec.Struct):
    sticker_id: int
    pack_id: int
    blob_id: str
    emoji: str
    width: int
    height: int
    animated: bool
    name: str = ""


class PackOut(msgspec.Struct):
    pack_id: int
    slug: str
    title: str
    author: str
    animated: bool
    installed: bool
    is_default: bool
    cover_id: str | None = None
    stickers: list[StickerOut] | None = None


_INSTALLED = ("COALESCE((SELECT installed FROM user_sticker_packs u WHERE u.pack_id = p.id AND u.user_id = ?),"
              " p.is_default)")
_PACK_COLS = f"p.id, p.slug, p.title, p.author, p.animated, {_INSTALLED}, p.is_default, p.cover_id"
_STICKER_COLS = "id, pack_id, blob_id, emoji, width, height, animated, name"


def _pack(r: tuple[Any, ...]) -> PackOut:
    return PackOut(int(r[0]), r[1], r[2], r[3], bool(r[4]), bool(r[5]), bool(r[6]), r[7])


def _sticker(r: tuple[Any, ...]) -> StickerOut:
    return StickerOut(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5]), bool(r[6]), r[7] or "")


def _with_stickers(tx: Tx, pack: PackOut) -> PackOut:
    pack.stickers = [_sticker(r) for r in tx.all(
        f"SELECT {_STICKER_COLS} FROM stickers WHERE pack_id = ? ORDER BY position", (pack.pack_id,))]
    return pack


_VERSION_KEY = "default_stickers_version"


def _insert_stickers(tx: Tx, pack_id: int, pack: sticker_pack.Pack, blobs: list[BlobInfo]) -> None:
    for i, (s, b) in enumerate(zip(pack.stickers, blobs, strict=True)):
        tx.execute("INSERT INTO stickers (pack_id, position, emoji, name, blob_id, width, height, animated)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (pack_id, i, s.emoji, s.name, b.blob_id, s.width, s.height,
                                                        int(s.animated)))


def _set_version(tx: Tx) -> None:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (_VERSION_KEY, str(default_stickers.VERSION)))


class Stickers:
    def __init__(self, core: Core, media: Media) -> None:
        self.core = core
        self.media = media

    # -- import ----------------------------------------------------------------------------------
    async def import_pack(self, pack: sticker_pack.Pack, *, is_default: bool = False) -> PackOut:
        exists = await self.core.db.read(lambda tx: tx.scalar("SELECT id FROM sticker_packs WHERE slug = ?",
                                                              (pack.slug,)))
        if exists is not None:
            raise DariError(ErrorCode.CONFLICT, f"a sticker pack {pack.slug!r} is already installed on this server")
        blobs = await self._blobs(pack, is_default)
        now = now_ms()

        def fn(tx: Tx) -> PackOut:
            if tx.scalar("SELECT id FROM sticker_packs WHERE slug = ?", (pack.slug,)) is not None:
                raise DariError(ErrorCode.CONFLICT, f"a sticker pack {pack.slug!r} already exists")
            pid = int(tx.scalar(
                "INSERT INTO sticker_packs (slug, title, author, is_default, animated, cover_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (pack.slug, pack.title, pack.author, int(is_default), int(any(s.animated for s in pack.stickers)),
                 blobs[0].blob_id, now)))
            _insert_stickers(tx, pid, pack, blobs)
            if is_default:
                _set_version(tx)
            row = tx.one(f"SELECT {_PACK_COLS} FROM sticker_packs p WHERE p.id = ?", (0, pid))
            assert row is not None
            return _with_stickers(tx, _pack(row))

        return await self.core.db.write(fn)

    async def _blobs(self, pack: sticker_pack.Pack, is_default: bool) -> list[BlobInfo]:
        # Blobs first (idempotent, content-addressed); the pack appears in one transaction after.
        return [await self.media.ingest_bytes(
            s.data, scope="sticker", scope_id=0,
            trusted=BlobInfo("", "image/webp" if s.file.endswith(".webp") else "image/png", "image", 0, s.width,
                             s.height, animated=s.animated) if is_default else None)
            for s in pack.stickers]

    async def import_default(self) -> PackOut | None:
        """On first start: dari's own pack, unless an operator already has one with that slug. A
        database holding an older drawing of the default pack gets the new stickers in its place."""
        def state(tx: Tx) -> tuple[int | None, int]:
            pid = tx.scalar("SELECT id FROM sticker_packs WHERE slug = 'dari-bridge' AND is_default = 1")
            have = tx.scalar("SELECT 1 FROM sticker_packs WHERE slug = 'dari-bridge'")
            version = tx.scalar("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,))
            return (int(pid) if pid is not None else (0 if have else None)), int(version or 1)

        pack_id, version = await self.core.db.read(state)
        if pack_id == 0 or (pack_id is not None and version >= default_stickers.VERSION):
            return None   # an operator's own 'dari-bridge', or the current drawing
        pack = await asyncio.to_thread(lambda: sticker_pack.validate(default_stickers.files()))
        if pack_id is not None:
            return await self._upgrade_default(pack_id, pack)
        try:
            return await self.import_pack(pack, is_default=True)
        except DariError as err:
            if err.code == ErrorCode.CONFLICT:   # another process of this cluster won the race
                return None
            raise

    async def _upgrade_default(self, pack_id: int, pack: sticker_pack.Pack) -> PackOut | None:
        """Swap the default pack's stickers for the new drawing. Old sticker messages keep showing
        (they carry their blob ids and the blobs keep their 'sticker' reference); recents of the old
        stickers go with them."""
        blobs = await self._blobs(pack, True)

        def fn(tx: Tx) -> PackOut | None:
            version = int(tx.scalar("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,)) or 1)
            if version >= default_stickers.VERSION:
                return None   # another process of this cluster upgraded it first
            tx.execute("DELETE FROM stickers WHERE pack_id = ?", (pack_id,))
            _insert_stickers(tx, pack_id, pack, blobs)
            tx.execute("UPDATE sticker_packs SET title = ?, author = ?, cover_id = ?, animated = ? WHERE id = ?",
                       (pack.title, pack.author, blobs[0].blob_id, int(any(s.animated for s in pack.stickers)),
                        pack_id))
            _set_version(tx)
            row = tx.one(f"SELECT {_PACK_COLS} FROM sticker_packs p WHERE p.id = ?", (0, pack_id))
            assert row is not None
            return _with_stickers(tx, _pack(row))

        return await self.core.db.write(fn)

    async def admin_import(self, caller: Caller, p: c.StickerImport) -> PackOut:
        await require_admin(self.core, caller)
        now = now_ms()
        await self.core.db.read(lambda tx: readable_blob(tx, caller.user_id, p.blob_id, now))
        data = await asyncio.to_thread(self.media.store.read, p.blob_id)
        pack = await asyncio.to_thread(lambda: sticker_pack.validate(sticker_pack.read_zip(data)))
        return await self.import_pack(pack)

    # -- catalogue -------------------------------------------------------------------------------
    async def packs(self, caller: Caller, p: m.NoParams) -> list[PackOut]:
        return await self.core.db.read(lambda tx: [_pack(r) for r in tx.all(
            f"SELECT {_PACK_COLS} FROM sticker_packs p ORDER BY p.is_default DESC, p.id", (caller.user_id,))])

    async def pack(self, caller: Caller, p: c.PackRef) -> PackOut:
        def fn(tx: Tx) -> PackOut:
            row = tx.one(f"SELECT {_PACK_COLS} FROM sticker_packs p WHERE p.id = ?", (caller.user_id, p.pack_id))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no sticker pack {p.pack_id}")
            return _with_stickers(tx, _pack(row))

        return await self.core.db.read(fn)

    async def installed(self, caller: Caller, p: m.NoParams) -> list[PackOut]:
        def fn(tx: Tx) -> list[PackOut]:
            rows = tx.all(f"SELECT {_PACK_COLS} FROM sticker_packs p WHERE {_INSTALLED} = 1 ORDER BY p.is_default"
                          " DESC, p.id", (caller.user_id, caller.user_id))
            return [_with_stickers(tx, _pack(r)) for r in rows]

        return await self.core.db.read(fn)

    async def _set(self, caller: Caller, pack_id: int, on: bool) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            if tx.scalar("SELECT 1 FROM sticker_packs WHERE id = ?", (pack_id,)) is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no sticker pack {pack_id}")
            tx.execute("INSERT INTO user_sticker_packs (user_id, pack_id, installed, at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (user_id, pack_id) DO UPDATE SET installed = excluded.installed, at = excluded.at",
                       (caller.user_id, pack_id, int(on), now))
            # Your other devices refresh their sticker picker.
            tx.emit("sticker.packs_changed", {"pack_id": pack_id, "installed": on}, recipients=[caller.user_id],
                    user_id=caller.user_id, now=now)

        await self.core.db.write(fn)
        return {"installed": on}

    async def install(self, caller: Caller, p: c.PackRef) -> dict[str, bool]:
        return await self._set(caller, p.pack_id, True)

    async def remove(self, caller: Caller, p: c.PackRef) -> dict[str, bool]:
        return await self._set(caller, p.pack_id, False)

    async def recent(self, caller: Caller, p: c.Recent) -> list[StickerOut]:
        return await self.core.db.read(lambda tx: [_sticker(r) for r in tx.all(
            "SELECT s.id, s.pack_id, s.blob_id, s.emoji, s.width, s.height, s.animated, s.name FROM sticker_recent r"
            " JOIN stickers s ON s.id = r.sticker_id WHERE r.user_id = ? ORDER BY r.used_at DESC LIMIT ?",
            (caller.user_id, p.limit))])

    # -- sending ---------------------------------------------------------------------------------
    async def send(self, caller: Caller, p: c.SendSticker) -> MessageOut:
        now = now_ms()

        def fn(tx: Tx) -> MessageOut:
            prior = prior_message(tx, caller.user_id, p.client_id, p.chat_id)
            if prior is not None:
                return prior
            check_can_send(tx, p.chat_id, caller.user_id)
            row = tx.one(f"SELECT s.id, s.pack_id, s.blob_id, s.emoji, s.width, s.height, s.animated, s.name,"
                         f" {_INSTALLED}"
                         " FROM stickers s JOIN sticker_packs p ON p.id = s.pack_id WHERE s.id = ?",
                         (caller.user_id, p.sticker_id))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no sticker {p.sticker_id}")
            if not row[8]:
                raise DariError(ErrorCode.FORBIDDEN, "install this sticker pack first")
            sticker = _sticker(row[:8])
            tx.execute("INSERT INTO sticker_recent (user_id, sticker_id, used_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (user_id, sticker_id) DO UPDATE SET used_at = excluded.used_at",
                       (caller.user_id, sticker.sticker_id, now))
            return timeline.append(tx, p.chat_id, caller.user_id, "sticker", "", now, client_id=p.client_id,
                                   reply_to=p.reply_to, attachment=msgspec.to_builtins(sticker))

        return await self.core.db.write(fn)
