"""The web client's media, stickers, stories and boards (issue 4) in a real Chromium, driven by
Playwright against a real `dari serve` (see tests/test_web.py for the set-up).

Set DARI_SCREENSHOTS=1 to refresh docs/screenshots/ (photo message, sticker picker, stories feed,
public board).
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from playwright.async_api import Browser, FilePayload, expect

from dari.client import Client
from dari.client.media import upload
from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import (
    ROOT,
    T,
    add_friend,
    browser,  # noqa: F401  (the fixture)
    message,
    new_page,
    open_direct_with,
    send,
    signup,
)

MakeUser = Callable[..., Any]
SHOTS = ROOT / "docs" / "screenshots"
WEB = ROOT / "src" / "dari" / "web"


def shots_dir(tmp_path: Path) -> Path:
    out = SHOTS if os.environ.get("DARI_SCREENSHOTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def png_file(name: str, data: bytes, mime: str = "image/png") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def landscape_png(w: int = 800, h: int = 560) -> bytes:
    """A small picture (sky, sun, two mountains, a lake) so a screenshot shows a real photo."""
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h):
        f = y / h
        d.line([(0, y), (w, y)], fill=(int(120 + 100 * f), int(170 + 60 * f), int(235 - 20 * f)))
    d.ellipse([w * 0.68, h * 0.12, w * 0.8, h * 0.12 + w * 0.12], fill=(255, 214, 102))
    d.polygon([(0, h * 0.78), (w * 0.3, h * 0.32), (w * 0.62, h * 0.78)], fill=(70, 110, 90))
    d.polygon([(w * 0.35, h * 0.78), (w * 0.68, h * 0.42), (w, h * 0.78)], fill=(50, 90, 80))
    d.polygon([(w * 0.25, h * 0.42), (w * 0.3, h * 0.32), (w * 0.35, h * 0.42)], fill=(245, 245, 250))
    d.rectangle([0, h * 0.78, w, h], fill=(70, 130, 180))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


async def blob_src(locator: Any) -> str:
    await expect(locator).to_have_attribute("src", re.compile(r"^blob:"), timeout=T)
    ok = await locator.evaluate("img => img.complete && img.naturalWidth > 0")
    assert ok, "the image did not decode"
    return str(await locator.get_attribute("src"))


def test_translations_have_the_same_keys_and_cover_the_markup() -> None:
    langs = {code: json.loads((WEB / "i18n" / f"{code}.json").read_text()) for code in ("en", "ko", "ja", "zh-CN")}
    keys = set(langs["en"])
    for code, strings in langs.items():
        assert set(strings) == keys, f"{code}: {sorted(set(strings) ^ keys)}"
        assert all(isinstance(v, str) and v for v in strings.values()), code
    markup = (WEB / "index.html").read_text()
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', markup))
    for name in ("media", "stickers", "stories", "boards", "voice", "guest_boards"):
        used |= set(re.findall(r'\bt\("([\w.\-]+)"', (WEB / "js" / f"{name}.js").read_text()))
    assert not sorted(used - keys)


async def test_photo_message_thumbnail_viewer_sticker_and_unsend(server: ServerProcess, browser: Browser,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    out = shots_dir(tmp_path)
    _, alice = await new_page(browser)
    _, bob = await new_page(browser)
    alice_handle = await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    await open_direct_with(alice, bob_handle)
    await open_direct_with(bob, alice_handle)
    await send(alice, "Look at this view from the top")
    await expect(message(bob, "Look at this view from the top")).to_be_visible(timeout=T)

    # Alice attaches a photo: a dialog with a preview and a caption, then upload + send.
    await alice.set_input_files("#file-input", files=[png_file("bukhansan.png", landscape_png())])
    dlg = alice.locator("#dialog form")
    await expect(dlg.locator(".send-preview")).to_be_visible(timeout=T)
    await dlg.locator("[name=caption]").fill("Baegundae at sunrise ⛰")
    await dlg.locator("button[type=submit]").click()
    mine = message(alice, "Baegundae at sunrise ⛰")
    await expect(mine.locator(".media-thumb img")).to_be_visible(timeout=T)
    await blob_src(mine.locator(".media-thumb img"))
    await expect(alice.locator("#upload-tray")).to_be_hidden(timeout=T)

    # Bob sees the thumbnail (fetched with his token into a blob: URL) and opens the viewer.
    theirs = message(bob, "Baegundae at sunrise ⛰")
    thumb = theirs.locator(".media-thumb img")
    await blob_src(thumb)
    assert await thumb.evaluate("img => img.naturalWidth") <= 320   # the server's thumbnail, not the photo
    await expect(bob.locator(".chat-item .chat-preview").first).to_contain_text("Baegundae", timeout=T)
    await bob.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
    await bob.wait_for_timeout(300)
    await bob.screenshot(path=str(out / "photo-message.png"))
    await thumb.click()
    viewer = bob.locator("#dialog .viewer-img")
    await blob_src(viewer)
    assert await viewer.evaluate("img => img.naturalWidth") == 800
    await expect(bob.locator("#dialog .viewer-caption")).to_have_text("Baegundae at sunrise ⛰")
    async with bob.expect_download() as dl:
        await bob.locator("#dialog .viewer-download").click()
    download = await dl.value
    assert download.suggested_filename == "bukhansan.png"
    await bob.keyboard.press("Escape")
    await expect(bob.locator("#dialog")).not_to_be_visible()

    # A file that is not a picture is a card with its size and a download button.
    await alice.set_input_files("#file-input", files=[png_file("route.txt", b"Gupabal -> Baegundae\n" * 50,
                                                                   "text/plain")])
    await alice.locator("#dialog form button[type=submit]").click()
    card = bob.locator("li.msg .file-card", has_text="route.txt")
    await expect(card).to_be_visible(timeout=T)
    await expect(card.locator(".file-size")).to_have_text("1.0 KB")

    # Sticker picker: the default pack is installed; a sticker goes out large, without a bubble.
    await alice.click("#btn-sticker")
    panel = alice.locator("#sticker-panel")
    await expect(panel).to_be_visible()
    picks = panel.locator(".sticker-pick")
    await expect(picks.first).to_be_visible(timeout=T)
    await blob_src(picks.first.locator("img"))
    await alice.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
    await alice.wait_for_timeout(200)
    await alice.screenshot(path=str(out / "sticker-picker.png"))
    await expect(picks).to_have_count(16)
    await expect(picks.nth(1)).to_have_attribute("title", "🤣 ㅋㅋㅋ (LOL)")   # each sticker says what it shows
    await picks.nth(1).click()
    await expect(panel).to_be_hidden()
    sticker = bob.locator("li.msg .sticker-msg img.sticker-img")
    await expect(sticker).to_have_count(1, timeout=T)
    await expect(sticker).to_have_attribute("alt", "🤣 ㅋㅋㅋ (LOL)")
    await blob_src(sticker)
    assert await bob.locator("li.msg:has(.sticker-msg) .bubble").count() == 0
    await alice.click("#btn-sticker")
    await panel.locator("[role=tab][aria-label='Recently used']").click()
    await expect(panel.locator(".sticker-pick")).to_have_count(1, timeout=T)
    await alice.keyboard.press("Escape")

    # Edit the photo's caption; unsend the sticker (within the window).
    photo = message(alice, "Baegundae at sunrise ⛰")
    await photo.hover()
    await photo.locator("[data-act=edit]").click()
    await expect(alice.locator("#composer")).to_have_value("Baegundae at sunrise ⛰")
    await alice.locator("#composer").fill("Baegundae at sunrise, 6:02 ⛰")
    await alice.locator("#composer").press("Enter")
    await expect(message(bob, "Baegundae at sunrise, 6:02 ⛰").locator(".edited")).to_be_visible(timeout=T)
    await expect(message(bob, "Baegundae at sunrise, 6:02 ⛰").locator(".media-thumb img")).to_be_visible()
    own_sticker = alice.locator("li.msg:has(.sticker-msg)")
    await own_sticker.hover()
    await own_sticker.locator("[data-act=unsend]").click()
    await alice.locator(".confirm-ok").click()
    await expect(bob.locator("li.msg .sticker-msg")).to_have_count(0, timeout=T)
    await expect(bob.locator("li.msg .bubble.unsent")).to_have_count(1, timeout=T)

    # Blob URLs are released once nothing shows them.
    count = await bob.evaluate("window.dari.media.urls.size")
    assert count >= 1
    await bob.evaluate("window.dari.closeChat()")
    await bob.wait_for_timeout(2300)
    await bob.evaluate("window.dari.media.sweep()")
    assert await bob.evaluate("window.dari.media.urls.size") < count
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_story_with_photo_liked_and_commented(server: ServerProcess, make_user: MakeUser,
                                                   browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    out = shots_dir(tmp_path)
    _, alice = await new_page(browser, height=1000)
    alice_handle = await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    yuna: Client = await make_user("yuna")
    await bob.call("account.update_profile", display_name="Bob 보브")
    await yuna.call("account.update_profile", display_name="Yuna 유나")
    await add_friend(alice, bob.user["handle"])
    await alice.keyboard.press("Escape")
    await add_friend(alice, yuna.user["handle"])
    await alice.keyboard.press("Escape")
    for c in (bob, yuna):
        await c.call("friend.add", handle=alice_handle)
    # Yuna posted earlier (a photo, public): it shows in Alice's feed under hers.
    blob = await upload(yuna, landscape_png(640, 400), name="lake.png")
    await yuna.call("story.create", text="호수 산책 🦆", media=[blob["blob_id"]], visibility="friends")

    await alice.click("[data-tab=stories]")
    feed = alice.locator("#story-feed")
    await expect(feed.locator(".story-card")).to_have_count(1, timeout=T)
    form = alice.locator("#story-form")
    await form.locator("[name=text]").fill("Made it to the top! 🏔")
    await alice.set_input_files("#story-file", files=[png_file("top.png", landscape_png())])
    await expect(form.locator(".story-photo-pick img")).to_have_count(1)
    await form.locator("[name=visibility]").select_option("friends")
    await form.locator("button[type=submit]").click()
    cards = feed.locator(".story-card")
    await expect(cards).to_have_count(2, timeout=T)
    first = cards.first
    await expect(first.locator(".story-text")).to_have_text("Made it to the top! 🏔")
    await blob_src(first.locator(".story-photo img"))
    await blob_src(cards.nth(1).locator(".story-photo img"))

    # Bob sees it in his feed, likes and comments: Alice gets realtime notices and counts.
    bfeed = await bob.call("story.feed")
    story = next(s for s in bfeed["stories"] if s["author"]["handle"] == alice_handle)
    assert [m["width"] for m in story["media"]] == [800]
    await bob.call("story.get", story_id=story["story_id"])
    await bob.call("story.like", story_id=story["story_id"])
    await expect(alice.locator(".toast", has_text="liked your story")).to_be_visible(timeout=T)
    await expect(first.locator(".n-likes")).to_have_text(" 1", timeout=T)
    c = await bob.call("story.comment", story_id=story["story_id"], text="Congrats! Which trail?")
    await expect(alice.locator(".toast", has_text="Congrats! Which trail?")).to_be_visible(timeout=T)
    await expect(first.locator(".n-comments")).to_have_text(" 1", timeout=T)

    # Alice likes her own post too, opens the comments and replies to Bob (one level).
    await first.locator(".story-like").click()
    await expect(first.locator(".n-likes")).to_have_text(" 2", timeout=T)
    await first.locator(".story-comment-btn").click()
    comments = first.locator(".story-comments")
    await expect(comments.locator(".comment-text")).to_have_text(["Congrats! Which trail?"], timeout=T)
    await comments.locator("[data-act=reply]").click()
    await comments.locator("[name=text]").fill("Bukhansan, from Gupabal 🙂")
    await comments.locator("button[type=submit]").click()
    await expect(comments.locator(".replies .comment-text")).to_have_text(["Bukhansan, from Gupabal 🙂"], timeout=T)
    thread = await bob.call("story.comments", story_id=story["story_id"])
    assert thread[0]["comment_id"] == c["comment_id"]
    assert thread[0]["replies"][0]["text"] == "Bukhansan, from Gupabal 🙂"
    await yuna.call("story.like", story_id=story["story_id"])
    await expect(first.locator(".n-likes")).to_have_text(" 3", timeout=T)
    # Views are unique per person (Bob looked twice) and the author's own do not count; a post
    # counts as seen by the page once it is on screen.
    got = await bob.call("story.get", story_id=story["story_id"])
    assert got["views"] == 1
    await cards.nth(1).scroll_into_view_if_needed()
    yuna_story = (await yuna.call("story.profile", user_id=yuna.user["user_id"]))["stories"][0]
    for _ in range(50):
        if (await yuna.call("story.get", story_id=yuna_story["story_id"]))["views"] == 1:
            break
        await alice.wait_for_timeout(100)
    else:
        raise AssertionError("the page did not count its view of Yuna's story")
    await expect(cards.nth(1).locator(".story-views")).to_have_text("Views 1", timeout=T)
    await alice.evaluate("document.querySelector('#stories-body').scrollTop = 0")
    await alice.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
    await alice.wait_for_timeout(300)
    await alice.screenshot(path=str(out / "stories-feed.png"))

    # Yuna's profile page lists the posts Alice may see.
    await cards.nth(1).locator(".story-author").click()
    await expect(alice.locator("#story-profile-head")).to_contain_text("Yuna 유나", timeout=T)
    await expect(feed.locator(".story-card")).to_have_count(1, timeout=T)
    await expect(alice.locator("#story-form")).to_be_hidden()
    await alice.click("#btn-story-feed")
    await expect(feed.locator(".story-card")).to_have_count(2, timeout=T)
    assert not alice.errors  # type: ignore[attr-defined]


async def test_public_board_list_masked_ips_paging_search(server_factory: Callable[..., ServerProcess],
                                                          browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    out = shots_dir(tmp_path)
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op, minji = Client(srv.url), Client(srv.url)
    await op.signup(op_handle, "Operator", PASSWORD)
    await minji.signup(f"minji_{uuid.uuid4().hex[:6]}", "민지", PASSWORD)
    try:
        board = await op.call("admin.board_create", slug="free", title="자유게시판", show_ip=True)
        titles = ["김치 담그는 법 알려주세요", "오늘 날씨 너무 좋네요", "김장 후기입니다", "강아지 사진 자랑",
                  "북한산 등산로 추천", "아이 도시락 메뉴 고민", "전세 계약할 때 주의할 점", "된장찌개 비법"]
        posts = []
        for i in range(23):
            title = titles[i % len(titles)] + ("" if i < len(titles) else f" ({i // len(titles) + 1})")
            posts.append(await minji.call("board.post_create", board_id=board["board_id"], title=title,
                                          body=f"{title} 본문입니다."))
        for body in ("저도 궁금해요", "소금은 천일염으로!"):
            await op.call("board.comment", post_id=posts[-1]["post_id"], body=body)

        _, page = await new_page(browser, locale="ko-KR")
        await signup(page, srv.url, "reader")
        await page.click("[data-tab=boards]")
        table = page.locator("#public-board .board-table")
        await expect(table.locator("tbody tr")).to_have_count(20, timeout=T)
        await expect(page.locator("#boards-title")).to_have_text("자유게시판")
        head = await table.locator("thead th").all_inner_texts()
        assert head == ["번호", "제목", "글쓴이", "날짜", "조회"]
        top = table.locator("tbody tr").first
        await expect(top.locator(".b-num")).to_have_text("23")
        await expect(top.locator(".b-comments")).to_have_text(" [2]")
        authors = set(await table.locator("tbody .b-author").all_inner_texts())
        assert authors == {"127.0.xxx.1"}
        assert "민지" not in await table.inner_text()
        await page.wait_for_timeout(200)
        await page.screenshot(path=str(out / "public-board.png"))

        # Page 2 has the three oldest posts.
        await page.locator(".pager .page-btn", has_text="2").click()
        await expect(table.locator("tbody .b-num")).to_have_text(["3", "2", "1"], timeout=T)
        # Search by title; author search is not offered on an IP board.
        assert "author" not in await page.locator(".board-search select option").evaluate_all(
            "os => os.map(o => o.value)")
        await page.locator(".board-search [name=q]").fill("김장")
        await page.locator(".board-search button[type=submit]").click()
        await expect(table.locator("tbody .b-link")).to_have_text(
            ["김장 후기입니다 (3)", "김장 후기입니다 (2)", "김장 후기입니다"], timeout=T)

        # A post: views count, comments show masked IPs; logged-in readers comment.
        await table.locator(".b-link", has_text=re.compile("^김장 후기입니다$")).click()
        post = page.locator("#public-board .board-post")
        await expect(post.locator(".post-title")).to_contain_text("김장 후기입니다", timeout=T)
        await expect(post.locator(".post-meta")).to_contain_text("127.0.xxx.1")
        await expect(post.locator(".post-meta")).to_contain_text("조회 1")
        await page.locator("#public-board .comment-form [name=body]").fill("잘 읽었습니다")
        await page.locator("#public-board .comment-form button[type=submit]").click()
        await expect(page.locator("#public-board .comment-text")).to_have_text(["잘 읽었습니다"], timeout=T)
        await expect(page.locator("#public-board .comment strong")).to_have_text(["127.0.xxx.1"])
        await page.locator(".post-actions button", has_text="목록").click()
        # Back to the (still searched) list: one comment, one view.
        row = table.locator("tbody tr", has=page.locator(".b-num", has_text=re.compile("^3$")))
        await expect(row.locator(".b-comments")).to_have_text(" [1]", timeout=T)
        await expect(row.locator(".b-views")).to_have_text("1")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        await op.close()
        await minji.close()


async def test_chat_board_notice_poll_and_vote(server: ServerProcess, make_user: MakeUser,
                                               browser: Browser) -> None:  # noqa: F811
    _, alice = await new_page(browser)
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    await add_friend(alice, bob.user["handle"])
    await alice.keyboard.press("Escape")
    me = await alice.evaluate("window.dari.session.user.user_id")
    chat = await bob.call("chat.create_group", title="Hiking club", member_ids=[me])
    board = await bob.call("board.get", chat_id=chat["chat_id"])
    await bob.call("board.post_create", board_id=board["board_id"], title="Rules", body="Be on time.", pinned=True)
    await bob.call("board.post_create", board_id=board["board_id"], title="Saturday?", body="Where to?",
                   poll={"question": "Which mountain?", "options": ["Bukhansan", "Gwanaksan"]})
    await alice.click("[data-tab=chats]")
    await alice.locator(".chat-item", has_text="Hiking club").click()
    await alice.click("#btn-chat-info")
    await alice.locator("#dialog .board-btn").click()
    host = alice.locator("#dialog .board-host")
    rows = host.locator(".board-table tbody tr")
    await expect(rows).to_have_count(3, timeout=T)   # the notice on top, then both posts
    await expect(rows.first).to_have_class(re.compile("notice"))
    await expect(rows.first.locator(".b-link")).to_have_text("Rules")
    await host.locator(".b-link", has_text="Saturday?").click()
    poll = host.locator(".poll")
    await expect(poll.locator(".poll-option")).to_have_count(2, timeout=T)
    await poll.locator(".poll-option", has_text="Bukhansan").locator("input").check()
    await poll.locator("button[type=submit]").click()
    await expect(host.locator(".poll .poll-option.mine")).to_contain_text("Bukhansan", timeout=T)
    await expect(host.locator(".poll .poll-option.mine .poll-count")).to_have_text("1 (100%)")
    # Alice writes a post with a poll of her own from the page.
    await host.locator(".post-actions button", has_text="List").click()
    await host.locator(".board-head button", has_text="Write").click()
    form = host.locator(".board-write")
    await form.locator("[name=title]").fill("Lunch")
    await form.locator("[name=with_poll]").check()
    await form.locator("[name=question]").fill("Kimbap or ramyeon?")
    await form.locator("[name=options]").fill("Kimbap\nRamyeon")
    # A post by Bob arriving while Alice types must not throw her form away for the list.
    await bob.call("board.post_create", board_id=board["board_id"], title="Parking", body="Lot B.")
    await expect(alice.locator(".toast", has_text="Parking")).to_be_visible(timeout=T)
    await expect(form.locator("[name=title]")).to_have_value("Lunch")
    await form.locator("button[type=submit]").click()
    await expect(host.locator(".post-title")).to_contain_text("Lunch", timeout=T)
    posts = await bob.call("board.posts", board_id=board["board_id"])
    assert posts["posts"][0]["title"] == "Lunch" and posts["posts"][0]["has_poll"]
    assert not alice.errors  # type: ignore[attr-defined]


async def test_media_over_the_session_when_plain_http_is_blocked(server: ServerProcess, browser: Browser,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """A route that carries only the WebSocket (a relay, a filtered /media path): the upload goes
    in chunks over the session and pictures are read with media.read."""
    _, alice = await new_page(browser)
    _, bob = await new_page(browser, width=360, height=740)
    for page in (alice, bob):
        await page.route(re.compile(r".*/media/.*"), lambda route: route.abort())
    alice_handle = await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    await open_direct_with(alice, bob_handle)
    await open_direct_with(bob, alice_handle)
    # Grain that does not compress, so that the upload and the download take several chunks.
    img = Image.open(io.BytesIO(landscape_png(1600, 1100)))
    img.paste(Image.frombytes("RGB", (1600, 300), os.urandom(1600 * 300 * 3)), (0, 800))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > 1_000_000
    await alice.set_input_files("#file-input", files=[png_file("wide.png", big)])
    await alice.locator("#dialog form [name=caption]").fill("over the session")
    await alice.locator("#dialog form button[type=submit]").click()
    await blob_src(message(alice, "over the session").locator(".media-thumb img"))
    assert await alice.evaluate("window.dari.media.httpOk") is False
    await blob_src(message(bob, "over the session").locator(".media-thumb img"))
    await message(bob, "over the session").locator(".media-thumb").click()
    viewer = bob.locator("#dialog .viewer-img")
    await blob_src(viewer)
    assert await viewer.evaluate("img => img.naturalWidth") == 1600
    await bob.screenshot(path=str(tmp_path / "viewer-mobile.png"))
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]
