"""Public boards for people without an account, and who may create boards: the read-only GET routes
(public boards only, paged, no user ids, rate-limited), writes needing a login, the operator's
grant/revoke of the board-creation right through the SDK and the CLI, and the demo's free board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dari.client import Client
from dari.protocol.errors import DariError
from tests.conftest import PASSWORD, ServerProcess


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


async def get(srv: ServerProcess, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(f"{srv.url}{path}", headers=headers) as resp:
        return resp.status, await resp.json()


async def post(srv: ServerProcess, method: str, **params: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/api/v1/{method}", json=params) as resp:
        return resp.status, await resp.json()


async def _client(srv: ServerProcess, handle: str, name: str) -> Client:
    c = Client(srv.url)
    await c.signup(handle, name, PASSWORD)
    return c


async def test_rights_grant_revoke_and_anonymous_reading(server_factory: Any) -> None:
    op_handle, writer_handle = f"op_{uuid.uuid4().hex[:6]}", f"w_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op = await _client(srv, op_handle, "Operator")
    writer = await _client(srv, writer_handle, "글쓴이")
    other = await _client(srv, f"o_{uuid.uuid4().hex[:6]}", "Other")
    try:
        # Without the right: told so, and nothing is created.
        assert await writer.call("board.rights") == {"can_create": False, "operator": False}
        with pytest.raises(DariError) as e:
            await writer.call("board.create", title="내 게시판")
        assert e.value.code == "forbidden" and e.value.details == {"reason": "no_board_right"}
        assert await writer.call("board.public") == []
        with pytest.raises(DariError) as e:   # only operators grant
            await other.call("admin.board_grant", handle=writer_handle)
        assert e.value.code == "forbidden"
        with pytest.raises(DariError) as e:
            await op.call("admin.board_grant", handle="nobody_here")
        assert e.value.code == "not_found"
        assert (await op.call("board.rights"))["can_create"]

        granted = await op.call("admin.board_grant", handle=writer_handle)
        assert granted["can_create"] and granted["handle"] == writer_handle
        ev = await writer.next_event("board.rights")
        assert ev.payload == {"can_create": True}
        assert [c["handle"] for c in await op.call("admin.board_creators")] == [writer_handle]
        board = await writer.call("board.create", title="  맛집 게시판  ")
        assert board["kind"] == "public" and board["title"] == "맛집 게시판" and board["slug"].startswith("b-")
        with pytest.raises(DariError) as e:
            await writer.call("board.create", title="again", slug=board["slug"])
        assert e.value.code == "conflict"
        await op.call("admin.board_revoke", handle=writer_handle)
        with pytest.raises(DariError) as e:
            await writer.call("board.create", title="one more")
        assert e.value.code == "forbidden"
        assert [b["board_id"] for b in await other.call("board.public")] == [board["board_id"]]
        audit = [a["action"] for a in await op.call("admin.audit")]
        assert audit[:3] == ["board_revoke", "board_create", "board_grant"]

        # Posts, comments and a named poll on the public board; a group chat's board beside it.
        posts = [await writer.call("board.post_create", board_id=board["board_id"], title=f"글 {i}", body=f"본문 {i}")
                 for i in range(3)]
        poll = await other.call("board.post_create", board_id=board["board_id"], title="투표",
                                poll={"question": "언제?", "options": ["토", "일"]})
        await writer.call("board.vote", post_id=poll["post_id"], options=[0])
        await other.call("board.comment", post_id=posts[0]["post_id"], body="첫 댓글")
        chat = await writer.call("chat.create_group", title="secret club", member_ids=[other.user["user_id"]])  # type: ignore[index]
        chat_board = await writer.call("board.get", chat_id=chat["chat_id"])
        secret = await writer.call("board.post_create", board_id=chat_board["board_id"], title="members only")

        # Anonymous GET: the board list, pages, a post with comments; a token is ignored (always anonymous).
        status, body = await get(srv, "/api/v1/public/boards")
        assert status == 200 and [b["board_id"] for b in body["result"]] == [board["board_id"]]
        status, body = await get(srv, f"/api/v1/public/boards/{board['board_id']}/posts?per_page=2")
        page = body["result"]
        assert status == 200 and page["total"] == 4 and page["pages"] == 2
        assert [p["title"] for p in page["posts"]] == ["투표", "글 2"]
        status, body = await get(srv, f"/api/v1/public/boards/{board['board_id']}/posts?per_page=2&page=2")
        assert [p["title"] for p in body["result"]["posts"]] == ["글 1", "글 0"]
        status, body = await get(srv, f"/api/v1/public/boards/{board['board_id']}/posts?q=%EA%B8%80%202")
        assert [p["title"] for p in body["result"]["posts"]] == ["글 2"]
        status, body = await get(srv, f"/api/v1/public/posts/{posts[0]['post_id']}", token=writer.token)
        read = body["result"]
        assert status == 200 and read["body"] == "본문 0" and read["author"]["name"] == "글쓴이"
        assert read["author"]["handle"] == writer_handle and not read["author"]["mine"]
        assert [c["body"] for c in read["comments"]] == ["첫 댓글"] and read["comments"][0]["author"]["name"] == "Other"
        status, body = await get(srv, f"/api/v1/public/posts/{poll['post_id']}")
        assert body["result"]["poll"]["options"][0]["votes"] == 1
        everything = [page, read, body["result"]]
        assert "user_id" not in _keys(everything) and "voters" not in _keys(body["result"]["poll"]["options"])
        # The logged-in view of the same poll still names voters (for members of the board's audience).
        assert (await other.call("board.post", post_id=poll["post_id"]))["poll"]["options"][0]["voters"]

        # Not public, or not there: 404 either way; bad paging: 400.
        for path in (f"/api/v1/public/boards/{chat_board['board_id']}/posts",
                     f"/api/v1/public/posts/{secret['post_id']}", "/api/v1/public/posts/999999",
                     "/api/v1/public/boards/999999/posts"):
            status, body = await get(srv, path)
            assert status == 404 and body["error"]["code"] == "not_found", path
        for query in ("per_page=1000", "page=0", "page=abc", "in=everything"):
            status, body = await get(srv, f"/api/v1/public/boards/{board['board_id']}/posts?{query}")
            assert status == 400 and body["error"]["code"] == "invalid_params", query

        # Writing needs a login, over any route.
        for method, params in (("board.comment", {"post_id": posts[0]["post_id"], "body": "익명"}),
                               ("board.post_create", {"board_id": board["board_id"], "title": "익명 글"}),
                               ("board.vote", {"post_id": poll["post_id"], "options": [1]}),
                               ("board.create", {"title": "x"}),
                               ("admin.board_grant", {"handle": writer_handle})):
            status, body = await post(srv, method, **params)
            assert status == 401 and body["error"]["code"] == "unauthenticated", method
        assert (await writer.call("board.posts", board_id=board["board_id"]))["total"] == 4
        status, spec = await get(srv, "/openapi.json")
        assert {"/api/v1/public/boards", "/api/v1/public/boards/{board_id}/posts",
                "/api/v1/public/posts/{post_id}"} <= set(spec["paths"])
    finally:
        for c in (op, writer, other):
            await c.close()


async def test_public_reads_are_rate_limited(server_factory: Any) -> None:
    srv = server_factory(extra_env={"DARI_RATE_PER_S": "0.5", "DARI_RATE_BURST": "3"})
    codes = [(await get(srv, "/api/v1/public/boards"))[0] for _ in range(6)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]


def test_cli_grant_create_and_demo_free_board(tmp_path: Path, server_factory: Any) -> None:
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": "boss"}, args=["--demo"])
    env = {**os.environ, "DARI_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    def dari(*args: str, ok: bool = True, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "dari.cli.main", *args], capture_output=True, text=True,
                              env={**env, "DARI_PASSWORD": password}, timeout=60)
        assert (proc.returncode == 0) == ok, f"dari {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc

    dari("account", "signup", "boss", "--server", srv.url, "--profile", "boss")
    dari("account", "signup", "newbie", "--server", srv.url, "--profile", "newbie")
    # The demo's free board: posts and comments in Korean and English, readable by anyone. (The
    # demo is seeded after the server listens: wait for it.)
    for _ in range(100):
        boards = json.loads(dari("board", "list", "--profile", "newbie", "--json").stdout)
        free = next((b for b in boards if b["slug"] == "free" and b["posts"] == 4), None)
        if free is not None:
            break
        time.sleep(0.2)
    assert free is not None, srv.log()
    listing = dari("board", "posts", str(free["board_id"]), "--profile", "newbie").stdout
    assert "김치찌개" in listing and "Welcome to the free board" in listing
    refused = dari("board", "create", "Newbie's board", "--profile", "newbie", ok=False)
    assert "permission" in refused.stderr + refused.stdout
    assert "may not create" in dari("board", "list", "--rights", "--profile", "newbie").stdout
    out = dari("admin", "board", "grant", "newbie", "--profile", "boss").stdout
    assert "newbie" in out and "may create" in out
    made = json.loads(dari("board", "create", "Newbie's board", "--slug", "newbie", "--profile", "newbie",
                           "--json").stdout)
    assert made["slug"] == "newbie" and made["title"] == "Newbie's board"
    assert "newbie" in dari("admin", "board", "creators", "--profile", "boss").stdout
    dari("admin", "board", "revoke", "newbie", "--profile", "boss")
    dari("board", "create", "Another", "--profile", "newbie", ok=False)
    # The demo lets minji create boards of her own.
    dari("account", "login", "minji", "--server", srv.url, "--profile", "minji", password="dari-demo-pass")
    assert "you may create boards" in dari("board", "list", "--rights", "--profile", "minji").stdout
