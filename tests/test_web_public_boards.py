"""Public boards in a real Chromium: a visitor without an account reads the demo's free board and a
post's comments (from the sign-in screen or from a link), the comment box asks them to log in, and
after logging in the same post opens and the comment goes through. Board creation: without the
right there is no button and the server refuses; an operator grants it, the button appears, and the
user makes a board from the page; a revoke mid-way shows the localized refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from playwright.async_api import Browser, expect

from dari.client import Client
from dari.server.demo import DEMO_PASSWORD
from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import (
    T,
    browser,  # noqa: F401  (the fixture)
    new_page,
    signup,
)


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["result"]


async def demo_board(srv: ServerProcess) -> dict[str, Any]:
    """The demo's free board, once `dari serve --demo` has seeded it (that runs after it listens)."""
    for _ in range(300):
        boards = await get(f"{srv.url}/api/v1/public/boards")
        free = [b for b in boards if b["slug"] == "free" and b["posts"] == 4]
        if free:
            listing = await get(f"{srv.url}/api/v1/public/boards/{free[0]['board_id']}/posts")
            if all(p["comment_count"] for p in listing["posts"]):
                return dict(free[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"the demo board did not appear:\n{srv.log()}")


async def test_logged_out_visitor_reads_the_free_board_then_logs_in_to_comment(
        server_factory: Callable[..., ServerProcess], browser: Browser) -> None:  # noqa: F811
    srv = server_factory(args=["--demo"])
    free = await demo_board(srv)
    listing = await get(f"{srv.url}/api/v1/public/boards/{free['board_id']}/posts")
    kimchi = next(p for p in listing["posts"] if p["title"].startswith("김치찌개"))

    _, page = await new_page(browser)
    await page.goto(srv.url)
    await expect(page.locator("#auth")).to_be_visible(timeout=T)
    await page.locator("#btn-guest-boards").click()
    guest = page.locator("#guest")
    await expect(guest).to_be_visible(timeout=T)
    await expect(page.locator("#guest-title")).to_have_text("자유게시판 Free board")
    table = guest.locator(".board-table")
    await expect(table.locator("tbody tr")).to_have_count(4, timeout=T)
    await expect(guest.locator(".board-head .login-to-write")).to_have_text("Log in to write")
    await table.locator(".b-link", has_text="김치찌개").click()
    post = guest.locator(".board-post")
    await expect(post.locator(".post-title")).to_contain_text("김치찌개 맛있게 끓이는 법", timeout=T)
    await expect(post.locator(".post-body")).to_contain_text("fry the sour kimchi")
    await expect(post.locator(".b-author")).to_have_text("Minji 민지")
    await expect(guest.locator(".comment-text")).to_have_text(["I tried it yesterday, 太好吃了!",
                                                               "Rice water, really? Trying it tonight."])
    # No comment box for a visitor: an invitation to log in instead, and no report links.
    await expect(guest.locator(".comment-form")).to_have_count(0)
    await expect(guest.locator(".comment-login button")).to_have_text("Log in to comment")
    assert "report" not in (await guest.inner_text()).lower()
    assert page.url.endswith(f"#/board/{free['board_id']}/post/{kimchi['post_id']}")
    assert await page.evaluate("localStorage.getItem('dari.token')") is None

    # The same link, opened fresh, shows the post straight away.
    _, linked = await new_page(browser, locale="ko-KR")
    await linked.goto(f"{srv.url}/#/board/{free['board_id']}/post/{kimchi['post_id']}")
    await expect(linked.locator("#guest .post-title")).to_contain_text("김치찌개", timeout=T)
    await expect(linked.locator("#guest .comment-login button")).to_have_text("로그인하고 댓글 쓰기")
    await expect(linked.locator("#auth")).to_be_hidden()

    # Log in from the comment box: back on this post, in the Boards tab, where commenting works.
    await guest.locator(".comment-login button").click()
    form = page.locator("#login-form")
    await expect(form).to_be_visible(timeout=T)
    await form.locator("[name=handle]").fill("wei")
    await form.locator("[name=password]").fill(DEMO_PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    await expect(page.locator("#guest")).to_be_hidden()
    board = page.locator("#public-board")
    await expect(board.locator(".post-title")).to_contain_text("김치찌개", timeout=T)
    await board.locator(".comment-form [name=body]").fill("Second time even better 👍")
    await board.locator(".comment-form button[type=submit]").click()
    await expect(board.locator(".comment-text")).to_have_count(3, timeout=T)
    read = await get(f"{srv.url}/api/v1/public/posts/{kimchi['post_id']}")
    assert read["comments"][-1]["body"] == "Second time even better 👍"
    assert read["comments"][-1]["author"]["name"] == "Wei 伟"
    assert not page.errors and not linked.errors  # type: ignore[attr-defined]


async def test_board_creation_right_granted_in_the_page(server_factory: Callable[..., ServerProcess],
                                                        browser: Browser) -> None:  # noqa: F811
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op = Client(srv.url)
    await op.signup(op_handle, "Operator", PASSWORD)
    try:
        _, page = await new_page(browser, locale="ko-KR")
        handle = await signup(page, srv.url, "writer")
        await page.click("[data-tab=boards]")
        await expect(page.locator("#public-board .empty-note")).to_be_visible(timeout=T)
        new_btn = page.locator("#btn-board-new")
        await expect(new_btn).to_be_hidden()
        # The server refuses the method too, whatever the page shows.
        status, body = await page.evaluate("""async () => {
            const r = await fetch('/api/v1/board.create', {method: 'POST', headers: {'Content-Type': 'application/json',
              Authorization: 'Bearer ' + localStorage.getItem('dari.token')}, body: JSON.stringify({title: 'x'})});
            return [r.status, await r.json()];
        }""")
        assert status == 403 and body["error"]["details"] == {"reason": "no_board_right"}

        # Granted: the button appears without a reload; the user makes a board from the page.
        await op.call("admin.board_grant", handle=handle)
        await expect(new_btn).to_be_visible(timeout=T)
        await expect(new_btn).to_have_text("게시판 만들기")
        await new_btn.click()
        dlg = page.locator("#dialog form")
        await dlg.locator("[name=title]").fill("우리 동네 게시판")
        await dlg.locator("[name=slug]").fill("Bad Slug!")
        await dlg.locator("button[type=submit]").click()
        await expect(dlg.locator(".form-error")).to_contain_text("주소는", timeout=T)
        await dlg.locator("[name=slug]").fill("dongne")
        await dlg.locator("button[type=submit]").click()
        await expect(page.locator("#dialog")).to_be_hidden(timeout=T)
        await expect(page.locator("#boards-title")).to_have_text("우리 동네 게시판", timeout=T)
        boards = await op.call("board.public")
        assert [(b["slug"], b["title"]) for b in boards] == [("dongne", "우리 동네 게시판")]
        await page.locator("#public-board .board-head button", has_text="글쓰기").click()
        write = page.locator("#public-board .board-write")
        await write.locator("[name=title]").fill("첫 글")
        await write.locator("button[type=submit]").click()
        await expect(page.locator("#public-board .post-title")).to_contain_text("첫 글", timeout=T)

        # Revoked while the dialog is open: the refusal is explained, and the button goes away.
        await page.locator(".post-actions button", has_text="목록").click()
        await new_btn.click()
        await dlg.locator("[name=title]").fill("두 번째 게시판")
        await op.call("admin.board_revoke", handle=handle)
        await dlg.locator("button[type=submit]").click()
        await expect(dlg.locator(".form-error")).to_have_text(
            "운영자와 운영자가 허락한 사람만 게시판을 만들 수 있어요.", timeout=T)
        await expect(new_btn).to_be_hidden(timeout=T)
        assert len(await op.call("board.public")) == 1
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        await op.close()

