"""Issue 4's services on PostgreSQL too: one pass over media, stickers, stories, boards and
moderation against a real server using the PostgreSQL backend (the SQL must stay portable)."""

from __future__ import annotations

import io
import uuid
from typing import Any

from PIL import Image

from dari.client import Client
from dari.client.media import download, send_file
from tests.conftest import PASSWORD
from tests.test_storage_contract import pg_url  # noqa: F401  (fixture)


async def test_content_on_postgres(server_factory: Any, pg_url: str) -> None:  # noqa: F811
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(args=["--database", pg_url], extra_env={"DARI_ADMIN_HANDLES": op_handle})
    a, b = Client(srv.url), Client(srv.url)
    await a.signup(op_handle, "A", PASSWORD)
    await b.signup(f"b_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
    try:
        assert b.user is not None and a.user is not None
        chat = await a.call("chat.create_group", title="pg", member_ids=[b.user["user_id"]])
        img = io.BytesIO()
        Image.new("RGB", (40, 30), (5, 6, 7)).save(img, format="PNG")
        msg = await send_file(a, chat["chat_id"], img.getvalue(), caption="pg photo")
        assert (await download(b, msg["attachment"]["blob_id"]))[:4] == b"\x89PNG"
        sticker = (await a.call("sticker.installed"))[0]["stickers"][0]
        await a.call("message.send_sticker", chat_id=chat["chat_id"], client_id="s", sticker_id=sticker["sticker_id"])
        history = await b.call("message.history", chat_id=chat["chat_id"])
        assert [m["kind"] for m in history["messages"]][-2:] == ["image", "sticker"]
        await a.call("friend.add", handle=b.user["handle"])
        await b.call("friend.add", handle=a.user["handle"])
        story = await a.call("story.create", text="pg story", media=[msg["attachment"]["blob_id"]])
        await b.call("story.like", story_id=story["story_id"])
        await b.call("story.comment", story_id=story["story_id"], text="nice")
        feed = await b.call("story.feed")
        assert feed["stories"][0]["likes"] == 1 and feed["stories"][0]["comments"] == 1
        assert (await b.call("story.get", story_id=story["story_id"]))["views"] == 1
        board = await a.call("admin.board_create", slug="pg", title="PG", show_ip=True)
        post = await b.call("board.post_create", board_id=board["board_id"], title="Hello 김치", body="x",
                            poll={"question": "q", "options": ["1", "2"], "multiple": True})
        await a.call("board.vote", post_id=post["post_id"], options=[0, 1])
        found = await a.call("board.posts", board_id=board["board_id"], query="김치")
        assert found["total"] == 1 and found["posts"][0]["author"]["ip"] == "127.0.xxx.1"
        await a.call("report.create", target="board_post", target_id=str(post["post_id"]), reason="test")
        await a.call("admin.hide", target="board_post", target_id=str(post["post_id"]))
        assert (await a.call("admin.audit"))[0]["action"] == "hide"
        assert (await b.call("sticker.recent")) == []
    finally:
        await a.close()
        await b.close()
