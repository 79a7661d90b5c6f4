"""The page speaks its user's language all the way through: system lines (from the structured events
the server sends) and server errors (from their codes and details), in Chromium against a real server."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.async_api import Browser, Page, expect

from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import T, add_friend, browser, chat_row, new_page, send, signup  # noqa: F401

MakeUser = Callable[..., Any]
# Words of the server's English system lines and error messages: none may show on a translated page.
ENGLISH = re.compile(r"created the group|invited|renamed|left\b|joined|removed|no user with|the limit is|Expected")


async def system_lines(page: Page) -> list[str]:
    return await page.locator("li.msg.system").all_inner_texts()


async def test_korean_page_shows_korean_system_lines_and_errors(server_factory: Callable[..., ServerProcess],
                                                                make_user: MakeUser, browser: Browser) -> None:  # noqa: F811
    srv = server_factory(extra_env={"DARI_MAX_MESSAGE_CHARS": "500"})
    _, alice = await new_page(browser, locale="ko-KR")
    await signup(alice, srv.url, "alice")
    bob = await make_user("bob", url=srv.url)
    carol = await make_user("carol", url=srv.url)
    try:
        # An unknown ID: the error says so in Korean, no English from the server.
        await alice.click("[data-tab=friends]")
        await alice.click("#btn-add-friend")
        form = alice.locator("#add-friend-form")
        await form.locator("[name=handle]").fill("nobody_here_x")
        await form.locator("button[type=submit]").click()
        await expect(form.locator(".form-error")).to_have_text(
            "찾을 수 없습니다: ID가 “nobody_here_x”인 사용자가 없습니다", timeout=T)
        # A malformed ID: the field to fix, named in Korean.
        await form.locator("[name=handle]").fill("Not A Handle!")
        await form.locator("button[type=submit]").click()
        await expect(form.locator(".form-error")).to_have_text("입력이 올바르지 않습니다: “ID” 항목을 확인하세요",
                                                               timeout=T)
        await alice.keyboard.press("Escape")

        for friend in (bob, carol):
            await add_friend(alice, friend.user["handle"])
            await alice.click("[data-close]")

        # Alice creates a group with Bob on the page; Bob invites Carol and renames it over the SDK.
        await alice.click("[data-tab=chats]")
        await alice.click("#btn-new-chat")
        dlg = alice.locator("#dialog form[data-form=group]")
        await dlg.locator("[name=title]").fill("우리 셋")
        await dlg.locator(".pick", has_text="Bob").locator("input").check()
        await dlg.locator("button[type=submit]").click()
        await expect(alice.locator("#chat-title")).to_have_text("우리 셋", timeout=T)
        created = alice.locator("li.msg.system", has_text="Alice님이 그룹 “우리 셋”을(를) 만들었습니다")
        await expect(created).to_be_visible(timeout=T)
        group_id = (await bob.call("chat.list"))[0]["chat_id"]
        await bob.call("chat.invite", chat_id=group_id, user_ids=[carol.user["user_id"]])
        await expect(alice.locator("li.msg.system", has_text="Bob님이 Carol님을 초대했습니다")).to_be_visible(timeout=T)
        await bob.call("chat.rename", chat_id=group_id, title="주말 모임")
        renamed = "Bob님이 채팅방 이름을 “주말 모임”(으)로 바꿨습니다"
        await expect(alice.locator("li.msg.system", has_text=renamed)).to_be_visible(timeout=T)
        await expect(chat_row(alice, "주말 모임").locator(".chat-preview")).to_have_text(renamed, timeout=T)
        await carol.call("chat.leave", chat_id=group_id)
        await expect(alice.locator("li.msg.system", has_text="Carol님이 나갔습니다")).to_be_visible(timeout=T)
        lines = await system_lines(alice)
        assert len(lines) == 4 and not any(ENGLISH.search(t) for t in lines), lines

        # The same lines after a reload, rebuilt from history (structure stored, not just live).
        await alice.reload()
        await chat_row(alice, "주말 모임").click()
        await expect(alice.locator("li.msg.system")).to_have_count(4, timeout=T)
        assert await system_lines(alice) == lines

        # A message over the server's limit: the failure is explained in Korean.
        await send(alice, "가" * 501)
        failed = alice.locator("li.msg.failed")
        await expect(failed).to_have_count(1, timeout=T)
        reason = "메시지가 501자입니다. 최대 500자까지 보낼 수 있습니다"
        await expect(failed.locator(".failed-note")).to_contain_text(reason, timeout=T)
        await expect(alice.locator("#compose-error")).to_have_text(f"한도를 넘었습니다: {reason}")
        assert not ENGLISH.search(await alice.locator("#chat").inner_text())
        assert not alice.errors  # type: ignore[attr-defined]
    finally:
        await alice.context.close()


async def test_japanese_page_renders_system_lines_from_the_event(server: ServerProcess, make_user: MakeUser,
                                                                 browser: Browser) -> None:  # noqa: F811
    _, dora = await new_page(browser, locale="ja-JP")
    dora_handle = await signup(dora, server.url, "dora")
    erin = await make_user("erin")
    frank = await make_user("frank")
    dora_id = (await erin.call("user.get", handle=dora_handle))["user_id"]
    # erin (SDK) makes a group with the page's user and frank, renames it and removes frank.
    group = await erin.call("chat.create_group", title="週末", member_ids=[dora_id, frank.user["user_id"]])
    await erin.call("chat.rename", chat_id=group["chat_id"], title="旅行")
    await frank.send_message(group["chat_id"], "こんにちは")
    await erin.call("chat.remove_member", chat_id=group["chat_id"], user_id=frank.user["user_id"])
    await frank.call("account.delete", password=PASSWORD)
    await dora.click("[data-tab=chats]")
    row = chat_row(dora, "旅行")
    await expect(row.locator(".chat-preview")).to_have_text("ErinさんがFrankさんを退出させました", timeout=T)
    await row.click()
    await expect(dora.locator("li.msg.system")).to_have_text([
        "Erinさんがグループ「週末」を作成しました", "Erinさんがチャット名を「旅行」に変更しました",
        "ErinさんがFrankさんを退出させました"], timeout=T)
    # The server's placeholder for a deleted account's name is shown in Japanese too.
    hello = dora.locator("li.msg[data-seq]", has=dora.locator(".text", has_text="こんにちは"))
    await expect(hello.locator(".sender")).to_have_text("（退会したユーザー）", timeout=T)

    # A server error in Japanese too.
    await dora.click("[data-tab=friends]")
    await dora.click("#btn-add-friend")
    form = dora.locator("#add-friend-form")
    await form.locator("[name=handle]").fill("nobody_here_y")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".form-error")).to_have_text("見つかりません: ID「nobody_here_y」のユーザーはいません",
                                                           timeout=T)
    assert not dora.errors  # type: ignore[attr-defined]


async def test_chinese_page_shows_the_e2ee_system_line(server: ServerProcess, make_user: MakeUser,
                                                       browser: Browser) -> None:  # noqa: F811
    _, page = await new_page(browser, locale="zh-CN")
    handle = await signup(page, server.url, "gina")
    hana = await make_user("hana")
    gina_id = (await hana.call("user.get", handle=handle))["user_id"]
    group = await hana.call("chat.create_group", title="小组", member_ids=[gina_id])
    await hana.call("chat.enable_e2ee", chat_id=group["chat_id"])
    await page.click("[data-tab=chats]")
    row = chat_row(page, "小组")
    await expect(row.locator(".chat-preview")).to_have_text("此聊天中的消息现已端到端加密", timeout=T)
    await row.click()
    await expect(page.locator("li.msg.system")).to_have_text(["Hana 创建了群聊“小组”", "此聊天中的消息现已端到端加密"],
                                                             timeout=T)
    assert not page.errors  # type: ignore[attr-defined]
