"""Meeting people in the web client (issue 13), in a real Chromium against a real `dari serve`: a
friend invite's link and QR code, opened logged out and then signed up; the bar above a 1:1 chat
with someone who is not a friend (Add, Block); the open-chat directory searched in Korean, joining
from it and from a join link, and an open chat's link and QR code in its info."""

from __future__ import annotations

import io
import re
from typing import Any

import aiohttp
import segno
from playwright.async_api import Browser, Page, expect

from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import T, chat_row, message, new_page, signup, unique


async def signup_here(page: Page, name: str) -> str:
    """Sign up on the page as it is (the auth screen, with whatever link is in the address)."""
    handle = unique(name)
    await page.click("#tab-signup")
    form = page.locator("#signup-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("[name=display_name]").fill(name.title())
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    return handle


async def qr_matches(url: str, link: str) -> None:
    """The served QR code is segno's drawing of exactly this link (segno is deterministic)."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        served = await resp.read()
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="svg", scale=5, border=2, dark="#1d2430", xmldecl=False)
    assert served == out.getvalue()


async def test_invite_link_and_qr_add_after_signup_and_revoke(server: ServerProcess, browser: Browser) -> None:
    _, ann = await new_page(browser)
    ann_handle = await signup(ann, server.url, "ann")
    await ann.click("[data-tab=friends]")
    await ann.click("#btn-my-invite")
    qr = ann.locator("#dialog img.invite-qr")
    await expect(qr).to_be_visible(timeout=T)
    link = await ann.locator("#dialog input.invite-link").input_value()
    m = re.fullmatch(rf"{re.escape(server.url)}/#/add/([A-Za-z0-9_-]{{12}})", link)
    assert m, link
    assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")
    await qr_matches(server.url + (await qr.get_attribute("src") or ""), link)

    # Ben opens the link logged out, signs up, and the page shows Ann with an Add button.
    _, ben = await new_page(browser)
    await ben.goto(link)
    await expect(ben.locator("#signup-form, #login-form").first).to_be_attached(timeout=T)
    await signup_here(ben, "ben")
    await expect(ben.locator("#dialog .invite-profile .profile-handle")).to_have_text(f"@{ann_handle}", timeout=T)
    await ben.click("#dialog .invite-add")
    await expect(ben.locator("#friends-body .friend-row", has_text="Ann")).to_be_visible(timeout=T)
    await expect(ann.locator(".toast", has_text="Ben added you")).to_be_visible(timeout=T)

    # Opened again, the link says Ann is already a friend: no second Add.
    await ben.goto(link)
    await expect(ben.locator("#dialog .invite-note")).to_have_text("Already in your friends.", timeout=T)
    await expect(ben.locator("#dialog .invite-add")).to_have_count(0)
    await ben.locator("#dialog button", has_text="Close").click()

    # Ann turns the link off: it now says so, and Ann's dialog offers a new one.
    await ann.locator("#dialog button", has_text="Turn off link").click()
    await expect(ann.locator("#dialog .invite-off")).to_be_visible(timeout=T)
    await ann.locator("#dialog button", has_text="New link").click()
    new_link = await ann.locator("#dialog input.invite-link").input_value()
    assert new_link != link and "/#/add/" in new_link
    await ben.goto(link)
    await expect(ben.locator("#dialog .invite-error")).to_contain_text("not valid", timeout=T)
    assert ann.errors == [] and ben.errors == []  # type: ignore[attr-defined]


async def test_stranger_bar_add_and_block(server: ServerProcess, make_user: Any, browser: Browser) -> None:
    _, amy = await new_page(browser)
    await signup(amy, server.url, "amy")
    amy_id = await amy.evaluate("window.dari.session.user.user_id")
    code = (await amy.evaluate("window.dari.session.call('friend.invite')"))["code"]

    # A stranger who got Amy's invite writes to her.
    sid: Client = await make_user("sid")
    await sid.call("friend.add_by_invite", code=code)
    direct = await sid.call("chat.open_direct", user_id=amy_id)
    await sid.send_message(direct["chat_id"], "hi, I scanned your QR")
    await chat_row(amy, "Sid").click()
    bar = amy.locator("#stranger-bar")
    await expect(bar).to_be_visible(timeout=T)
    await expect(bar).to_contain_text("Sid is not in your friends.")
    await bar.locator(".stranger-add").click()
    await expect(bar).to_be_hidden(timeout=T)
    await amy.click("[data-tab=friends]")
    await expect(amy.locator("#friends-body .friend-row", has_text="Sid")).to_be_visible(timeout=T)

    # A stranger from an open chat (where Amy's user id shows behind her nickname) writes too.
    room = await amy.evaluate("window.dari.session.call('chat.create_open', {title: 'Book club', nickname: 'Reader'})")
    tom: Client = await make_user("tom")
    joined = await tom.call("chat.join_open", link_code=room["link_code"], nickname="Tommy")
    assert amy_id in [mb["user_id"] for mb in joined["members"]]
    to_amy = await tom.call("chat.open_direct", user_id=amy_id)
    await tom.send_message(to_amy["chat_id"], "buy cheap watches")
    await amy.click("[data-tab=chats]")
    await chat_row(amy, "Tom").click()
    await expect(message(amy, "buy cheap watches")).to_be_visible(timeout=T)
    await expect(bar).to_contain_text("Tom is not in your friends.", timeout=T)
    await bar.locator(".stranger-block").click()
    await amy.click(".confirm-ok")
    await expect(bar).to_contain_text("You blocked Tom", timeout=T)
    await expect(bar.locator(".stranger-add")).to_have_count(0)

    # Blocked: Tom's next message is not delivered to Amy.
    try:
        await tom.call("message.send", chat_id=to_amy["chat_id"], client_id="after-block", text="are you there?")
    except DariError as exc:
        assert exc.code == ErrorCode.BLOCKED
    history = await amy.evaluate(f"window.dari.session.call('message.history', {{chat_id: {to_amy['chat_id']}}})")
    assert "are you there?" not in [m_["text"] for m_ in history["messages"]]
    assert "buy cheap watches" in [m_["text"] for m_ in history["messages"]]
    blocked = await amy.evaluate("window.dari.session.call('friend.blocked')")
    assert [u["display_name"] for u in blocked] == ["Tom"]
    # Reopening the chat keeps the blocked state in the bar (loaded from the server).
    await amy.reload()
    await chat_row(amy, "Tom").click()
    await expect(bar).to_contain_text("You blocked Tom", timeout=T)
    assert amy.errors == []  # type: ignore[attr-defined]


async def test_directory_search_in_korean_join_and_join_link(server: ServerProcess, make_user: Any,
                                                            browser: Browser) -> None:
    owner: Client = await make_user("owner")
    listed = await owner.call("chat.create_open", title="서울 등산 모임", nickname="대장", listed=True,
                              description="주말마다 북한산에 갑니다", tags=["등산", "hiking"])
    secret = await owner.call("chat.create_open", title="등산 비밀방", nickname="대장")

    _, cho = await new_page(browser)
    await signup(cho, server.url, "cho")
    await cho.click("[data-tab=chats]")
    await cho.click("#btn-directory")
    items = cho.locator("#dialog .dir-item")
    await expect(items.first).to_be_visible(timeout=T)
    await cho.fill("#dir-query", "등산")
    await cho.press("#dir-query", "Enter")
    await expect(items).to_have_count(1, timeout=T)
    await expect(items.first.locator(".dir-title")).to_have_text("서울 등산 모임")
    await expect(items.first).to_contain_text("1 / ")
    await expect(items.first).to_contain_text("#hiking")
    await expect(cho.locator("#dialog", has_text="비밀방")).to_have_count(0)   # unlisted: never shown
    await cho.fill("#dir-query", "북한산")
    await cho.press("#dir-query", "Enter")
    await expect(items).to_have_count(1, timeout=T)
    await cho.fill("#dir-query", "없는방이름")
    await cho.press("#dir-query", "Enter")
    await expect(cho.locator("#dialog .dir-status")).to_have_text("No open chats found.", timeout=T)
    await expect(items).to_have_count(0)

    # Join from the directory with a nickname.
    await cho.fill("#dir-query", "등산")
    await cho.press("#dir-query", "Enter")
    await expect(items).to_have_count(1, timeout=T)
    await items.first.locator(".dir-join").click()
    await expect(cho.locator("#dialog .join-title")).to_have_text("서울 등산 모임", timeout=T)
    await cho.fill("#dialog .join-form [name=nickname]", "산토끼")
    await cho.click("#dialog .join-form button[type=submit]")
    await expect(cho.locator("#chat-title")).to_have_text("서울 등산 모임", timeout=T)
    await expect(cho.locator("li.msg.system", has_text="산토끼 joined")).to_be_visible(timeout=T)
    detail = await owner.call("chat.get", chat_id=listed["chat_id"])
    assert "산토끼" in [mb["display_name"] for mb in detail["members"]]

    # The chat's info shows its join link and QR code.
    await cho.click("#btn-chat-info")
    join_link = await cho.locator("#dialog .open-link-box input.invite-link").input_value()
    assert join_link == f"{server.url}/#/join/{listed['link_code']}"
    qr = cho.locator("#dialog .open-link-box img.invite-qr")
    await expect(qr).to_be_visible(timeout=T)
    await qr_matches(server.url + (await qr.get_attribute("src") or ""), join_link)
    await cho.locator("#dialog button[data-close]").last.click()

    # The unlisted room's link works: title and member count, then Join asks for a nickname.
    await cho.goto(f"{server.url}/#/join/{secret['link_code']}")
    await expect(cho.locator("#dialog .join-title")).to_have_text("등산 비밀방", timeout=T)
    await expect(cho.locator("#dialog .join-count")).to_contain_text("1 / ")
    await cho.fill("#dialog .join-form [name=nickname]", "비밀손님")
    await cho.click("#dialog .join-form button[type=submit]")
    await expect(cho.locator("#chat-title")).to_have_text("등산 비밀방", timeout=T)
    await cho.goto(f"{server.url}/#/join/nosuchroom1")
    await expect(cho.locator("#dialog .invite-error")).to_contain_text("no open chat", timeout=T)

    # Creating a listed open chat from the page puts it in the directory.
    await cho.locator("#dialog button", has_text="Cancel").click()
    await cho.click("#btn-new-chat")
    await cho.click("[data-mode=open]")
    form = cho.locator("#dialog form[data-form=open]")
    await form.locator("[name=title]").fill("제주 올레길")
    await form.locator("[name=nickname]").fill("걷는사람")
    await form.locator("[name=listed]").check()
    await form.locator("[name=description]").fill("올레길 같이 걸어요")
    await form.locator("[name=tags]").fill("제주 #walking")
    await form.locator("button[type=submit]").click()
    await expect(cho.locator("#chat-title")).to_have_text("제주 올레길", timeout=T)
    found = await owner.call("chat.directory", query="walking")
    assert [c["title"] for c in found["chats"]] == ["제주 올레길"]
    assert found["chats"][0]["tags"] == ["제주", "walking"]
    assert cho.errors == []  # type: ignore[attr-defined]
