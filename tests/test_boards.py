"""Boards and moderation through a real server: chat boards (members only, notices, polls), public
boards (numbered list, paging, search, views, login to comment, masked IPs), reports, hiding,
suspensions and the audit log."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest

from dari.client import Client
from dari.protocol.errors import DariError
from dari.services.boards import mask_ip
from tests.conftest import PASSWORD, ServerProcess


def uid(c: Client) -> int:
    assert c.user is not None
    return int(c.user["user_id"])


def test_mask_ip() -> None:
    assert mask_ip("112.171.203.7") == "112.171.xxx.7"
    assert mask_ip("::ffff:112.171.203.7") == "112.171.xxx.7"
    assert mask_ip("2001:db8:0:1:2:3:4:7") == "2001:db8:xxxx:xxxx:xxxx:xxxx:xxxx:7"
    assert mask_ip("garbage") == "unknown"


async def test_chat_board_notices_and_polls(make_user: Any) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    chat = await alice.call("chat.create_group", title="hiking club", member_ids=[uid(bob)])
    board = await bob.call("board.get", chat_id=chat["chat_id"])
    assert board["kind"] == "chat" and board["title"] == "hiking club"
    assert (await alice.call("board.get", chat_id=chat["chat_id"]))["board_id"] == board["board_id"]
    with pytest.raises(DariError) as e:
        await carol.call("board.get", chat_id=chat["chat_id"])
    assert e.value.code == "forbidden"
    with pytest.raises(DariError) as e:
        await carol.call("board.posts", board_id=board["board_id"])
    assert e.value.code == "forbidden"
    alice.drain_events()
    post = await bob.call("board.post_create", board_id=board["board_id"], title="Saturday?", body="Bukhansan",
                          poll={"question": "Which day?", "options": ["Sat", "Sun", "Both"], "multiple": False})
    ev = await alice.next_event("board.post")
    assert ev.payload["post_id"] == post["post_id"] and ev.payload["chat_id"] == chat["chat_id"]
    with pytest.raises(DariError) as e:
        await carol.call("board.post", post_id=post["post_id"])
    assert e.value.code == "forbidden"
    # Single choice: one option; votes can change; results show voters (not anonymous).
    with pytest.raises(DariError) as e:
        await alice.call("board.vote", post_id=post["post_id"], options=[0, 1])
    assert e.value.code == "invalid_params"
    with pytest.raises(DariError) as e:
        await alice.call("board.vote", post_id=post["post_id"], options=[7])
    assert e.value.code == "invalid_params"
    await alice.call("board.vote", post_id=post["post_id"], options=[0])
    res = await bob.call("board.vote", post_id=post["post_id"], options=[1])
    res = await alice.call("board.vote", post_id=post["post_id"], options=[1])
    assert [o["votes"] for o in res["options"]] == [0, 2, 0] and res["options"][1]["voters"] == sorted(
        [uid(alice), uid(bob)]) and res["my_votes"] == [1]
    # An anonymous multiple-choice poll shows counts only; a past deadline closes it.
    anon = await alice.call("board.post_create", board_id=board["board_id"], title="Snacks",
                            poll={"question": "Bring?", "options": ["kimbap", "fruit"], "multiple": True,
                                  "anonymous": True, "deadline": int(time.time() * 1000) + 1500})
    res = await bob.call("board.vote", post_id=anon["post_id"], options=[0, 1])
    assert [o["votes"] for o in res["options"]] == [1, 1] and "voters" not in res["options"][0]
    await asyncio.sleep(1.6)
    with pytest.raises(DariError) as e:
        await alice.call("board.vote", post_id=anon["post_id"], options=[0])
    assert e.value.code == "expired"
    # Pinned notices: the chat owner may pin; a member may not pin someone else's post.
    with pytest.raises(DariError) as e:
        await bob.call("board.pin", post_id=anon["post_id"])
    assert e.value.code == "forbidden"
    await alice.call("board.pin", post_id=post["post_id"])
    listing = await bob.call("board.posts", board_id=board["board_id"])
    assert [n["post_id"] for n in listing["notices"]] == [post["post_id"]]
    assert [p["number"] for p in listing["posts"]] == [2, 1]
    assert listing["posts"][1]["author"]["name"] == "Bob" and listing["posts"][1]["has_poll"]
    # Comments; the writer edits; the owner deletes.
    await alice.call("board.comment", post_id=post["post_id"], body="I'm in")
    edited = await bob.call("board.post_edit", post_id=post["post_id"], body="Bukhansan, 9am")
    assert edited["body"] == "Bukhansan, 9am" and len(edited["comments"]) == 1
    for bad in ({"title": "   "}, {"body": "a\x00b"}):
        with pytest.raises(DariError) as e:
            await bob.call("board.post_edit", post_id=post["post_id"], **bad)
        assert e.value.code == "invalid_params"
    assert (await bob.call("board.post", post_id=post["post_id"]))["title"] == edited["title"]
    with pytest.raises(DariError) as e:
        await alice.call("board.post_edit", post_id=post["post_id"], title="mine")
    assert e.value.code == "forbidden"
    await alice.call("board.post_delete", post_id=post["post_id"])
    assert (await bob.call("board.posts", board_id=board["board_id"]))["total"] == 1
    direct = await alice.call("chat.open_direct", user_id=uid(bob))
    with pytest.raises(DariError) as e:
        await alice.call("board.get", chat_id=direct["chat_id"])
    assert e.value.code == "invalid_params"


async def rest(srv: ServerProcess, method: str, token: str | None = None, **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/api/v1/{method}", json=params,
                                                          headers=headers) as resp:
        return resp.status, await resp.json()


async def test_public_board_masked_ip_search_and_moderation(server_factory: Any) -> None:
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op, minji, troll = Client(srv.url), Client(srv.url), Client(srv.url)
    troll_handle = f"troll_{uuid.uuid4().hex[:6]}"
    await op.signup(op_handle, "Operator", PASSWORD)
    await minji.signup(f"minji_{uuid.uuid4().hex[:6]}", "민지", PASSWORD)
    await troll.signup(troll_handle, "Troll", PASSWORD)
    try:
        with pytest.raises(DariError) as e:
            await minji.call("admin.board_create", slug="free", title="자유게시판")
        assert e.value.code == "forbidden"
        board = await op.call("admin.board_create", slug="free", title="자유게시판", show_ip=True)
        titles = ["김치 담그는 법", "오늘 날씨", "김장 후기", "강아지 사진"]
        posts = [await minji.call("board.post_create", board_id=board["board_id"], title=t, body=f"{t} 본문")
                 for t in titles]
        assert [p["number"] for p in posts] == [1, 2, 3, 4]
        # Reading needs no account (REST without a token); the author is a masked IP, not a profile.
        status, body = await rest(srv, "board.posts", board_id=board["board_id"], per_page=3)
        assert status == 200
        page = body["result"]
        assert page["total"] == 4 and page["pages"] == 2 and [p["number"] for p in page["posts"]] == [4, 3, 2]
        assert page["posts"][0]["author"] == {"ip": "127.0.xxx.1", "mine": False}
        status, body = await rest(srv, "board.posts", board_id=board["board_id"], per_page=3, page=2)
        assert [p["number"] for p in body["result"]["posts"]] == [1]
        status, body = await rest(srv, "board.post", post_id=posts[0]["post_id"])
        assert body["result"]["views"] == 1 and "user_id" not in body["result"]["author"]
        status, body = await rest(srv, "board.post", post_id=posts[0]["post_id"])
        assert body["result"]["views"] == 2
        # Search title, body; author search is refused on an IP board (it would unmask writers).
        found = await minji.call("board.posts", board_id=board["board_id"], query="김")
        assert [p["title"] for p in found["posts"]] == ["김장 후기", "김치 담그는 법"]
        found = await minji.call("board.posts", board_id=board["board_id"], query="날씨 본문", search_in="body")
        assert [p["number"] for p in found["posts"]] == [2]
        with pytest.raises(DariError):
            await minji.call("board.posts", board_id=board["board_id"], query="민지", search_in="author")
        # Commenting needs login.
        status, body = await rest(srv, "board.comment", post_id=posts[0]["post_id"], body="좋아요")
        assert status == 401 and body["error"]["code"] == "unauthenticated"
        cm = await troll.call("board.comment", post_id=posts[0]["post_id"], body="spam spam")
        assert cm["author"]["ip"] == "127.0.xxx.1"
        # Profiles instead of IPs when the operator turns it off; author search then works.
        await op.call("admin.board_update", board_id=board["board_id"], show_ip=False)
        listing = await minji.call("board.posts", board_id=board["board_id"], query="민지", search_in="author")
        assert listing["total"] == 4 and listing["posts"][0]["author"]["name"] == "민지"
        assert listing["posts"][0]["author"]["mine"]

        # Moderation: report, hide, suspend, audit.
        rep = await minji.call("report.create", target="board_comment", target_id=str(cm["comment_id"]),
                               reason="spam")
        with pytest.raises(DariError) as e:
            await minji.call("admin.reports")
        assert e.value.code == "forbidden"
        reports = await op.call("admin.reports")
        assert reports[0]["report_id"] == rep["report_id"] and reports[0]["target"] == "board_comment"
        await op.call("admin.hide", target="board_comment", target_id=str(cm["comment_id"]), reason="spam")
        post = await minji.call("board.post", post_id=posts[0]["post_id"])
        assert post["comments"] == []
        assert await op.call("admin.reports") == []
        await op.call("admin.hide", target="board_post", target_id=str(posts[1]["post_id"]), reason="test")
        with pytest.raises(DariError) as e:
            await troll.call("board.post", post_id=posts[1]["post_id"])
        assert e.value.code == "not_found"
        with pytest.raises(DariError) as e:
            await minji.call("report.create", target="board_post", target_id="999999", reason="?")
        assert e.value.code == "not_found"
        await op.call("admin.suspend", user_id=uid(troll), days=3, reason="spam")
        await troll.next_event("session.revoked", timeout=10)
        retry = Client(srv.url)
        try:
            with pytest.raises(DariError) as e:
                await retry.login(troll_handle, PASSWORD)
            assert e.value.code == "forbidden" and "suspended" in e.value.message
        finally:
            await retry.close()
        audit = await op.call("admin.audit")
        assert [a["action"] for a in audit][:3] == ["suspend", "hide", "hide"]
        assert audit[0]["reason"] == "spam" and audit[0]["actor"] == op_handle
        await op.call("admin.suspend", user_id=uid(troll), days=0)
        again = Client(srv.url)
        try:
            await again.login(troll_handle, PASSWORD)
        finally:
            await again.close()
    finally:
        for c in (op, minji, troll):
            await c.close()


async def test_report_message_and_operator_removal(server_factory: Any) -> None:
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op, a, b = Client(srv.url), Client(srv.url), Client(srv.url)
    await op.signup(op_handle, "Operator", PASSWORD)
    await a.signup(f"a_{uuid.uuid4().hex[:6]}", "A", PASSWORD)
    await b.signup(f"b_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
    try:
        chat = await a.call("chat.create_group", title="g", member_ids=[uid(b)])
        msg = await b.call("message.send", chat_id=chat["chat_id"], client_id="m1", text="buy cheap pills")
        ref = f"{chat['chat_id']}:{msg['seq']}"
        with pytest.raises(DariError) as e:    # not a member: cannot report what you were never shown
            await op.call("report.create", target="message", target_id=ref, reason="spam")
        assert e.value.code == "forbidden"
        await a.call("report.create", target="message", target_id=ref, reason="spam")
        await op.call("admin.hide", target="message", target_id=ref, reason="spam")
        ev = await a.next_event("message.unsent")
        assert ev.payload["seq"] == msg["seq"]
        history = await a.call("message.history", chat_id=chat["chat_id"])
        gone = next(m for m in history["messages"] if m["seq"] == msg["seq"])
        assert gone["unsent"] and gone["text"] == ""
    finally:
        for c in (op, a, b):
            await c.close()
