"""Search finds photo captions and file names (issue 13), on SQLite and PostgreSQL, and migration 18
indexes the media that was sent before it existed."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dari.bus import Bus
from dari.config import Settings
from dari.services.core import Caller
from dari.services.registry import Services
from dari.storage import Tx, open_database
from tests.test_storage_contract import Svc, db_url, pg_url  # noqa: F401  (fixtures)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


PDF = b"%PDF-1.4\n% a quarterly report\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


async def _services(db_url: str, data_dir: Path) -> Services:  # noqa: F811
    services = Services(Settings(argon2_time_cost=1, argon2_memory_kib=8192, data_dir=str(data_dir)),
                        open_database(db_url), Bus())
    await services.start()
    return services


@pytest.fixture
async def svc(db_url: str, tmp_path: Path) -> AsyncIterator[Svc]:  # noqa: F811
    services = await _services(db_url, tmp_path / "data")
    yield Svc(services)
    await services.close()


async def send_media(svc: Svc, who: Caller, chat_id: int, data: bytes, name: str, caption: str = "",
                     client_id: str = "") -> dict[str, Any]:
    up = await svc.call(who, "media.upload_begin", size=len(data), name=name)
    await svc.call(who, "media.upload_chunk", upload_id=up["upload_id"], offset=0,
                   data=base64.b64encode(data).decode())
    blob = await svc.call(who, "media.upload_finish", upload_id=up["upload_id"])
    return dict(await svc.call(who, "message.send_media", chat_id=chat_id, client_id=client_id or name,
                               blob_id=blob["blob_id"], caption=caption, name=name))


async def _pair(svc: Svc) -> tuple[Caller, Caller, int]:
    alice = await svc.signup("alice")
    bob = await svc.signup("bob")
    await svc.call(alice, "friend.add", handle="bob")
    chat = await svc.call(alice, "chat.open_direct", user_id=bob.user_id)
    return alice, bob, int(chat["chat_id"])


async def _seqs(svc: Svc, who: Caller, query: str) -> list[int]:
    return sorted(h["seq"] for h in await svc.call(who, "message.search", query=query))


async def test_search_finds_captions_and_file_names(svc: Svc) -> None:
    alice, bob, chat_id = await _pair(svc)
    photo = await send_media(svc, alice, chat_id, _png(), "IMG_2041.png", caption="북한산 정상에서 본 일출")
    pdf = await send_media(svc, alice, chat_id, PDF, "quarterly-report.pdf")
    text = await svc.call(alice, "message.send", chat_id=chat_id, client_id="t", text="see the report above")
    assert photo["kind"] == "image" and pdf["kind"] == "file"

    # A caption word in Korean, through the trigram index (3+ characters) and LIKE (2 syllables).
    assert await _seqs(svc, bob, "정상에서") == [photo["seq"]]
    assert await _seqs(svc, bob, "일출") == [photo["seq"]]
    # A file name, whole or in part, any case; the hit says what it is.
    hits = await svc.call(bob, "message.search", query="quarterly-report.pdf")
    assert [(h["seq"], h["kind"], h["attachment"]["name"], h["text"]) for h in hits] == \
        [(pdf["seq"], "file", "quarterly-report.pdf", "")]
    assert await _seqs(svc, bob, "REPORT") == sorted([pdf["seq"], text["seq"]])
    assert await _seqs(svc, bob, "IMG_2041") == [photo["seq"]]
    assert await _seqs(svc, bob, "g_") == [photo["seq"]]          # a literal _, not a wildcard
    hits = await svc.call(bob, "message.search", query="report", chat_id=chat_id)
    assert {h["kind"] for h in hits} == {"file", "text"}

    # Nobody outside the chat finds them.
    outsider = await svc.signup("mallory")
    assert await _seqs(svc, outsider, "quarterly") == []
    assert await _seqs(svc, outsider, "일출") == []

    # A new caption replaces the old one and keeps the name findable; unsent media is not found.
    await svc.call(alice, "message.edit", chat_id=chat_id, seq=photo["seq"], text="백운대 하산길")
    assert await _seqs(svc, bob, "정상에서") == []
    assert await _seqs(svc, bob, "하산길") == [photo["seq"]]
    assert await _seqs(svc, bob, "IMG_2041") == [photo["seq"]]
    await svc.call(alice, "message.unsend", chat_id=chat_id, seq=pdf["seq"])
    assert await _seqs(svc, bob, "quarterly") == []


async def test_migration_18_indexes_media_sent_before_it(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    services = await _services(db_url, tmp_path / "data")
    svc = Svc(services)
    alice, bob, chat_id = await _pair(svc)
    photo = await send_media(svc, alice, chat_id, _png(), "hanok.png", caption="전주 한옥마을 골목")
    pdf = await send_media(svc, alice, chat_id, PDF, "budget-2025.pdf", caption="draft")
    gone = await send_media(svc, alice, chat_id, PDF + b" ", "secret-plan.pdf")
    await svc.call(alice, "message.unsend", chat_id=chat_id, seq=gone["seq"])

    def downgrade(tx: Tx) -> None:
        # The database as version 17 left it: no search_extra, media not in SQLite's FTS index.
        if tx.dialect == "sqlite":
            tx.execute("DELETE FROM message_fts WHERE rowid IN (SELECT id FROM messages WHERE kind <> 'text')")
        else:
            tx.execute("DROP INDEX messages_extra_trgm")
        tx.execute("ALTER TABLE messages DROP COLUMN search_extra")
        tx.execute("DELETE FROM schema_migrations WHERE version = 18")

    await services.core.db.write(downgrade)
    if db_url.startswith("sqlite"):   # nothing left to find the photo by
        assert await _seqs(svc, bob, "한옥마을") == []
    await services.close()

    services = await _services(db_url, tmp_path / "data")   # starting applies migration 18 again
    svc = Svc(services)
    try:
        assert await _seqs(svc, bob, "한옥마을") == [photo["seq"]]
        assert await _seqs(svc, bob, "budget-2025") == [pdf["seq"]]
        assert await _seqs(svc, bob, "budget") == [pdf["seq"]]
        assert await _seqs(svc, bob, "secret") == []
        hits = await svc.call(bob, "message.search", query="hanok.png")
        assert [h["attachment"]["name"] for h in hits] == ["hanok.png"]
    finally:
        await services.close()
