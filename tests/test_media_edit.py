"""Editing a media message's caption and unsending media and sticker messages (issue 4 with the
edit/unsend rules of the core issue): only your own, only within the unsend window, and an unsent
message keeps no attachment for anyone."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image

from dari.client import Client
from dari.client.media import send_file
from dari.protocol.errors import DariError
from tests.conftest import PASSWORD


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def test_caption_edit_and_unsend_of_media_and_stickers(make_user: Any) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.create_group", title="pics", member_ids=[bob.user["user_id"]])
    chat_id = chat["chat_id"]
    photo = await send_file(alice, chat_id, png(), caption="first caption", name="a.png")
    assert photo["kind"] == "image"

    # The sender edits the caption; the attachment stays; members get message.edited.
    bob.drain_events()
    edited = await alice.call("message.edit", chat_id=chat_id, seq=photo["seq"], text="better caption")
    assert edited["text"] == "better caption" and edited["edited_at"]
    assert edited["attachment"]["blob_id"] == photo["attachment"]["blob_id"]
    ev = await bob.next_event("message.edited")
    assert ev.payload["seq"] == photo["seq"] and ev.payload["text"] == "better caption"
    # Not someone else's.
    with pytest.raises(DariError) as e:
        await bob.call("message.edit", chat_id=chat_id, seq=photo["seq"], text="mine now")
    assert e.value.code == "forbidden"

    # A sticker cannot be edited, but can be unsent.
    packs = await alice.call("sticker.installed")
    sticker = packs[0]["stickers"][0]
    sent = await alice.call("message.send_sticker", chat_id=chat_id, client_id="st-1",
                            sticker_id=sticker["sticker_id"])
    with pytest.raises(DariError) as e:
        await alice.call("message.edit", chat_id=chat_id, seq=sent["seq"], text="words")
    assert e.value.code == "forbidden"
    with pytest.raises(DariError) as e:
        await bob.call("message.unsend", chat_id=chat_id, seq=sent["seq"])
    assert e.value.code == "forbidden"
    for seq in (sent["seq"], photo["seq"]):
        await alice.call("message.unsend", chat_id=chat_id, seq=seq)
    history = await bob.call("message.history", chat_id=chat_id)
    gone = {m["seq"]: m for m in history["messages"] if m["seq"] in (sent["seq"], photo["seq"])}
    assert all(m["unsent"] and m["text"] == "" and m.get("attachment") is None for m in gone.values())
    with pytest.raises(DariError) as e:
        await alice.call("message.edit", chat_id=chat_id, seq=photo["seq"], text="too late")
    assert e.value.code == "conflict"


async def test_unsend_window_applies_to_media(server_factory: Any) -> None:
    srv = server_factory(extra_env={"DARI_UNSEND_WINDOW_S": "0"})
    a, b = Client(srv.url), Client(srv.url)
    await a.signup("win_a", "A", PASSWORD)
    await b.signup("win_b", "B", PASSWORD)
    try:
        chat = await a.call("chat.create_group", title="w", member_ids=[b.user["user_id"]])
        msg = await send_file(a, chat["chat_id"], png(), name="late.png")
        await asyncio.sleep(0.05)
        with pytest.raises(DariError) as e:
            await a.call("message.unsend", chat_id=chat["chat_id"], seq=msg["seq"])
        assert e.value.code == "expired"
    finally:
        await a.close()
        await b.close()
