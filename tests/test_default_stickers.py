"""dari's default sticker pack: enough stickers, each named, and visibly different from one another
(compared as a person sees them, small and on a white chat background), and a server whose database
holds the older drawing of the pack gets the new one on start."""

from __future__ import annotations

import io
import itertools
import sqlite3
import uuid
from typing import Any

from PIL import Image, ImageChops, ImageStat

from dari.client import Client
from dari.client.media import download
from dari.services import default_stickers, sticker_pack
from tests.conftest import PASSWORD

# The pack before this drawing (nine faces on one bridge) differed by 0.4-3 between any two
# stickers on this measure; clearly different pictures differ by tens.
MIN_COLOUR_DIFF = 20.0
MIN_SHAPE_DIFF = 12.0


def _seen(data: bytes, px: int = 64, grey: bool = False) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.seek(0)
    rgba = img.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    page.alpha_composite(rgba)
    out = page.convert("L" if grey else "RGB").resize((px, px), Image.Resampling.BILINEAR)
    return out


def _diff(a: Image.Image, b: Image.Image) -> float:
    stat = ImageStat.Stat(ImageChops.difference(a, b)).mean
    return sum(stat) / len(stat)


def test_default_pack_has_distinct_named_stickers() -> None:
    pack = sticker_pack.validate(default_stickers.draw())
    assert len(pack.stickers) >= 12
    assert all(s.name.strip() and s.emoji for s in pack.stickers), [(s.file, s.name, s.emoji) for s in pack.stickers]
    assert len({s.name for s in pack.stickers}) == len(pack.stickers)
    assert len({s.emoji for s in pack.stickers}) == len(pack.stickers)
    colour = {s.name: _seen(s.data) for s in pack.stickers}
    grey = {s.name: _seen(s.data, grey=True) for s in pack.stickers}
    close = [(round(_diff(colour[a], colour[b]), 1), a, b) for a, b in itertools.combinations(colour, 2)
             if _diff(colour[a], colour[b]) < MIN_COLOUR_DIFF]
    assert not close, f"stickers too alike at 64 px: {close}"
    # Not recolours of one drawing either: the shapes differ in grey too.
    close = [(round(_diff(grey[a], grey[b]), 1), a, b) for a, b in itertools.combinations(grey, 2)
             if _diff(grey[a], grey[b]) < MIN_SHAPE_DIFF]
    assert not close, f"sticker shapes too alike: {close}"


def test_older_default_pack_is_upgraded_on_start(server_factory: Any) -> None:
    import asyncio

    srv = server_factory()
    handle = f"st_{uuid.uuid4().hex[:6]}"

    async def before() -> dict[str, Any]:
        c = Client(srv.url)
        try:
            await c.signup(handle, "Sticker fan", PASSWORD)
            chat = await c.call("chat.create_group", title="s", member_ids=[])
            sticker = (await c.call("sticker.installed"))[0]["stickers"][0]
            msg = await c.call("message.send_sticker", chat_id=chat["chat_id"], client_id="old",
                               sticker_id=sticker["sticker_id"])
            return {"chat_id": chat["chat_id"], "seq": msg["seq"], "blob_id": sticker["blob_id"]}
        finally:
            await c.close()

    sent = asyncio.run(before())
    srv.stop()
    # Make the database look like one from before: nine unnamed stickers, no version recorded.
    db = sqlite3.connect(srv.data_dir / "dari.db")
    with db:
        pack_id = db.execute("SELECT id FROM sticker_packs WHERE slug = 'dari-bridge'").fetchone()[0]
        db.execute("DELETE FROM stickers WHERE pack_id = ?", (pack_id,))
        db.executemany("INSERT INTO stickers (pack_id, position, emoji, blob_id, width, height, animated)"
                       " VALUES (?, ?, '🙂', ?, 256, 256, 0)", [(pack_id, i, sent["blob_id"]) for i in range(9)])
        db.execute("DELETE FROM meta WHERE key = 'default_stickers_version'")
    db.close()
    srv.start()

    async def after() -> None:
        c = Client(srv.url)
        try:
            await c.login(handle, PASSWORD)
            packs = await c.call("sticker.installed")
            stickers = packs[0]["stickers"]
            assert packs[0]["pack_id"] == pack_id and len(stickers) == len(default_stickers.STICKERS) + 1
            assert all(s["name"] for s in stickers) and "Thumbs up" in {s["name"] for s in stickers}
            # The sticker message sent before still shows its picture.
            history = await c.call("message.history", chat_id=sent["chat_id"])
            old = next(m for m in history["messages"] if m["seq"] == sent["seq"])
            data = await download(c, old["attachment"]["blob_id"])
            assert Image.open(io.BytesIO(data)).size == (256, 256)
        finally:
            await c.close()

    asyncio.run(after())
    srv.stop()
    srv.start()   # a second start changes nothing
    db = sqlite3.connect(srv.data_dir / "dari.db")
    n = db.execute("SELECT COUNT(*) FROM stickers WHERE pack_id = ?", (pack_id,)).fetchone()[0]
    db.close()
    assert n == len(default_stickers.STICKERS) + 1
