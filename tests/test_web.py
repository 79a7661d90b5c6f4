"""The web client (issue 3) in a real Chromium, driven by Playwright against a real `dari serve`.

Debian's `chromium` package is used through its executable path (Playwright's own browser download
is not available here). Without it these tests skip, except under CI=true where they fail.
Set DARI_SCREENSHOTS=1 to refresh docs/screenshots/ from test_screenshots.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, async_playwright, expect

from dari.client import Client
from tests.conftest import CHROMIUM_ARGS, PASSWORD, ServerProcess, chromium_path

ROOT = Path(__file__).resolve().parent.parent
T = 15_000  # ms: generous waits for a loaded machine

MakeUser = Callable[..., Any]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def new_page(browser: Browser, *, locale: str = "en-US", width: int = 1280,
                   height: int = 800) -> tuple[BrowserContext, Page]:
    ctx = await browser.new_context(locale=locale, viewport={"width": width, "height": height})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    return ctx, page


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:6]}"


async def signup(page: Page, url: str, name: str) -> str:
    """Sign up through the page; returns the handle."""
    handle = unique(name)
    await page.goto(url)
    await page.click("#tab-signup")
    form = page.locator("#signup-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("[name=display_name]").fill(name.title())
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    return handle


async def add_friend(page: Page, handle: str) -> None:
    await page.click("[data-tab=friends]")
    await page.click("#btn-add-friend")
    form = page.locator("#add-friend-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("button[type=submit]").click()
    # Adding opens the new friend's profile card.
    await expect(page.locator(".profile-handle")).to_have_text(f"@{handle}", timeout=T)


async def open_direct_with(page: Page, handle: str) -> None:
    await add_friend(page, handle)
    await page.click(".act-chat")
    await expect(page.locator("#chat")).to_be_visible(timeout=T)


async def send(page: Page, text: str) -> None:
    box = page.locator("#composer")
    await box.fill(text)
    await box.press("Enter")


def message(page: Page, text: str) -> Any:
    return page.locator("li.msg[data-seq]", has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$")))


def chat_row(page: Page, title: str) -> Any:
    return page.locator(".chat-item", has=page.locator(".chat-name", has_text=title))


async def open_chat(page: Page, title: str) -> None:
    await page.click("[data-tab=chats]")
    await chat_row(page, title).click()
    await expect(page.locator("#chat-title")).to_have_text(title, timeout=T)


async def texts(page: Page) -> list[str]:
    return [t for t in await page.locator("li.msg[data-seq] .text").all_inner_texts()]


async def test_two_browsers_direct_and_group_with_sdk_member(server: ServerProcess, make_user: MakeUser,
                                                             browser: Browser) -> None:
    _, alice = await new_page(browser)
    _, bob = await new_page(browser)
    await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")

    # 1:1: Alice adds Bob by handle and writes; Bob's list shows a badge and a preview.
    await open_direct_with(alice, bob_handle)
    await send(alice, "hello bob")
    await expect(message(alice, "hello bob").locator(".unread")).to_have_text("1", timeout=T)
    await expect(alice.locator("#composer")).to_have_value("")
    row = chat_row(bob, "Alice")
    await expect(row.locator(".badge")).to_have_text("1", timeout=T)
    await expect(row.locator(".chat-preview")).to_have_text("hello bob")
    await expect(bob.locator("#total-unread")).to_have_text("1")

    # Bob reads: Alice's counter clears live, Bob's badge goes.
    await open_chat(bob, "Alice")
    await expect(message(bob, "hello bob")).to_be_visible(timeout=T)
    await expect(message(alice, "hello bob").locator(".unread")).to_have_text("", timeout=T)
    await expect(row.locator(".badge")).to_have_count(0)
    await expect(bob.locator("#total-unread")).to_be_hidden()

    # Shift+Enter is a new line, Enter sends; replies arrive live both ways.
    box = bob.locator("#composer")
    await box.fill("line one")
    await box.press("Shift+Enter")
    await box.type("line two")
    await expect(box).to_have_value("line one\nline two")
    await box.press("Enter")
    await expect(alice.locator("li.msg .text", has_text="line two")).to_have_text("line one\nline two", timeout=T)

    # A group with an SDK client as third member.
    carol: Client = await make_user("carol")
    await add_friend(alice, carol.user["handle"])
    await alice.click("[data-close]")
    await alice.click("[data-tab=chats]")
    await alice.click("#btn-new-chat")
    dlg = alice.locator("#dialog form[data-form=group]")
    await dlg.locator("[name=title]").fill("Trio")
    await dlg.locator(".pick", has_text="Bob").locator("input").check()
    await dlg.locator(".pick", has_text="Carol").locator("input").check()
    await dlg.locator("button[type=submit]").click()
    await expect(alice.locator("#chat-title")).to_have_text("Trio", timeout=T)
    await expect(alice.locator("li.msg.system")).to_contain_text("created the group", timeout=T)
    await send(alice, "hi all")
    await expect(message(alice, "hi all").locator(".unread")).to_have_text("2", timeout=T)

    ev = await carol.next_event("message.new")
    while ev.payload["text"] != "hi all":
        ev = await carol.next_event("message.new")
    group_id, seq = ev.payload["chat_id"], ev.payload["seq"]
    # Bob has the system message and Alice's message unread.
    await expect(chat_row(bob, "Trio").locator(".badge")).to_have_text("2", timeout=T)

    await open_chat(bob, "Trio")
    await expect(message(alice, "hi all").locator(".unread")).to_have_text("1", timeout=T)
    await expect(chat_row(bob, "Trio").locator(".badge")).to_have_count(0)
    await carol.call("chat.read", chat_id=group_id, seq=seq)
    await expect(message(alice, "hi all").locator(".unread")).to_have_text("", timeout=T)

    # Carol (SDK) writes: both pages show it; both have the chat open, so it ends up read by all.
    sent = await carol.send_message(group_id, "from the sdk")
    for page in (alice, bob):
        await expect(message(page, "from the sdk")).to_be_visible(timeout=T)
        await expect(message(page, "from the sdk").locator(".sender")).to_have_text("Carol")
    await expect(message(alice, "from the sdk").locator(".unread")).to_have_text("", timeout=T)
    page_ = await carol.call("message.history", chat_id=group_id)
    assert [m["unread"] for m in page_["messages"] if m["seq"] == sent["seq"]] == [0]
    # The chat list is sorted by activity: the group is above the 1:1 chat.
    assert (await alice.locator(".chat-item .chat-name").all_inner_texts())[:2] == ["Trio", "Bob"]
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_server_restart_reconnects_without_loss_or_duplicates(server: ServerProcess,
                                                                   browser: Browser) -> None:
    _, alice = await new_page(browser)
    _, bob = await new_page(browser)
    alice_handle = await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    await open_direct_with(alice, bob_handle)
    await add_friend(bob, alice_handle)
    await bob.click(".act-chat")
    await send(alice, "before restart")
    await expect(message(bob, "before restart")).to_be_visible(timeout=T)

    server.stop()
    for page in (alice, bob):
        await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=T)
        await expect(page.locator("#conn-banner")).to_be_visible()
    # Written while the server is down: shown as pending, in order.
    for text in ("while down 1", "while down 2", "while down 3"):
        await send(alice, text)
    await send(bob, "bob while down")
    await expect(alice.locator("li.msg.pending")).to_have_count(3)
    await expect(bob.locator("li.msg.pending")).to_have_count(1)

    server.start()
    for page in (alice, bob):
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
        await expect(page.locator("li.msg.pending")).to_have_count(0, timeout=T)
    expected = ["before restart", "while down 1", "while down 2", "while down 3", "bob while down"]
    for page in (alice, bob):
        await expect(page.locator("li.msg[data-seq] .text")).to_have_count(5, timeout=T)
        got = await texts(page)
        assert sorted(got) == sorted(expected), got
        assert got.index("while down 1") < got.index("while down 2") < got.index("while down 3")
    # The server stored each exactly once, and both pages show the same order.
    assert await texts(alice) == await texts(bob)
    history = await alice.evaluate(
        "async () => (await window.dari.session.call('message.history', {chat_id: window.dari.chat.chatId}))"
        ".messages.map(m => m.text)")
    assert sorted(history) == sorted(expected)
    # Live traffic works after the restart.
    await send(bob, "after restart")
    await expect(message(alice, "after restart")).to_be_visible(timeout=T)


async def test_offline_outbox_survives_reload(server: ServerProcess, make_user: MakeUser,
                                              browser: Browser) -> None:
    ctx, alice = await new_page(browser)
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    await open_direct_with(alice, bob.user["handle"])
    await send(alice, "online first")
    await expect(message(alice, "online first")).to_be_visible(timeout=T)

    # Cut the page off the server: new WebSockets are refused, the current one drops.
    blocked = True

    async def route(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
        else:
            ws.connect_to_server()

    async def http_route(r: Any) -> None:
        if blocked:
            await r.abort()          # the long-poll fallback is cut off too
        else:
            await r.continue_()

    await alice.route_web_socket(re.compile(r".*/ws$"), route)
    await ctx.route(re.compile(r".*/lp/.*"), http_route)
    await ctx.set_offline(True)
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
    await send(alice, "queued one")
    await send(alice, "queued two")
    await expect(alice.locator("li.msg.pending")).to_have_count(2)
    await ctx.set_offline(False)
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=T)

    # Reload while the server is still unreachable: the queue comes back from IndexedDB.
    await alice.reload()
    await expect(alice.locator("#app")).to_be_visible(timeout=T)
    await expect(alice.locator("#chat")).to_be_visible(timeout=T)
    await expect(alice.locator("li.msg.pending .text")).to_have_text(["queued one", "queued two"], timeout=T)
    assert await alice.locator("#conn").get_attribute("data-state") != "connected"

    blocked = False
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await expect(alice.locator("li.msg.pending")).to_have_count(0, timeout=T)
    got = []
    while len(got) < 3:
        ev = await bob.next_event("message.new")
        got.append(ev.payload["text"])
    assert got == ["online first", "queued one", "queued two"]
    await expect(alice.locator("li.msg[data-seq] .text")).to_have_text(["online first", "queued one", "queued two"])
    history = await bob.call("message.history", chat_id=ev.payload["chat_id"])
    assert [m["text"] for m in history["messages"] if m["kind"] == "text"] == got


async def test_language_auto_detected_and_switchable(server: ServerProcess, browser: Browser) -> None:
    _, ko = await new_page(browser, locale="ko-KR")
    await ko.goto(server.url)
    await expect(ko.locator("#tab-login")).to_have_text("로그인", timeout=T)
    await expect(ko.locator("html")).to_have_attribute("lang", "ko")

    _, page = await new_page(browser, locale="en-US")
    await page.goto(server.url)
    await expect(page.locator("#tab-signup")).to_have_text("Sign up", timeout=T)
    await page.select_option("#auth .lang-select", "ko")
    await expect(page.locator("#tab-signup")).to_have_text("회원가입")
    await page.select_option("#auth .lang-select", "en")
    await signup(page, server.url, "dora")
    await page.click("[data-tab=settings]")
    await page.select_option("#settings-lang", "ko")
    await expect(page.locator("#settings-title")).to_have_text("설정")
    await expect(page.locator("[data-tab=chats]")).to_have_attribute("aria-label", "채팅")
    await expect(page.locator("#conn .conn-label")).to_contain_text("연결됨")
    # The choice sticks across a reload.
    await page.reload()
    await expect(page.locator("[data-tab=friends]")).to_have_attribute("aria-label", "친구", timeout=T)
    for code, word in (("ja", "設定"), ("zh-CN", "设置")):
        await page.click("[data-tab=settings]")
        await page.select_option("#settings-lang", code)
        await expect(page.locator("#settings-title")).to_have_text(word)


async def test_bad_input_shows_the_servers_error(server_factory: Callable[..., ServerProcess],
                                                 browser: Browser) -> None:
    srv = server_factory(extra_env={"DARI_MAX_MESSAGE_CHARS": "500"})
    _, alice = await new_page(browser)
    _, bob = await new_page(browser)
    await signup(alice, srv.url, "alice")
    bob_handle = await signup(bob, srv.url, "bob")

    # An invalid handle: the dialog shows the server's invalid_params error, the page keeps working.
    await alice.click("[data-tab=friends]")
    await alice.click("#btn-add-friend")
    form = alice.locator("#add-friend-form")
    await form.locator("[name=handle]").fill("Not A Handle!")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".form-error")).to_contain_text("Invalid input", timeout=T)
    await expect(form.locator(".form-error")).to_contain_text("handle")
    await form.locator("[name=handle]").fill("nobody_here_x")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".form-error")).to_contain_text("no user with handle", timeout=T)
    await alice.keyboard.press("Escape")
    await open_direct_with(alice, bob_handle)

    # An over-long message: the server refuses it, the page says why and keeps the text.
    await send(alice, "x" * 501)
    failed = alice.locator("li.msg.failed")
    await expect(failed).to_have_count(1, timeout=T)
    await expect(failed.locator(".failed-note")).to_contain_text("the limit is 500")
    await expect(alice.locator("#compose-error")).to_contain_text("Over the limit")
    # Later messages still go out; the failed one can be deleted.
    await send(alice, "short and fine")
    await open_chat(bob, "Alice")
    await expect(message(bob, "short and fine")).to_be_visible(timeout=T)
    await failed.locator("[data-act=discard]").click()
    await expect(alice.locator("li.msg.failed")).to_have_count(0)

    # A taken handle on sign-up.
    _, carol = await new_page(browser)
    await carol.goto(srv.url)
    await carol.click("#tab-signup")
    f = carol.locator("#signup-form")
    await f.locator("[name=handle]").fill(bob_handle)
    await f.locator("[name=display_name]").fill("Imposter")
    await f.locator("[name=password]").fill(PASSWORD)
    await f.locator("button[type=submit]").click()
    await expect(carol.locator("#auth-error")).to_contain_text("Conflict", timeout=T)
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_reply_react_edit_unsend_typing_search(server: ServerProcess, make_user: MakeUser,
                                                     browser: Browser) -> None:
    _, alice = await new_page(browser)
    bob: Client = await make_user("bob")
    await signup(alice, server.url, "alice")
    await open_direct_with(alice, bob.user["handle"])
    chat_id = int(await alice.evaluate("window.dari.chat.chatId"))
    first = await bob.send_message(chat_id, "which trail, Bukhansan or Gwanaksan?")
    await expect(message(alice, first["text"])).to_be_visible(timeout=T)

    # Reply with a quote; clicking the quote jumps to the original.
    target = message(alice, first["text"])
    await target.hover()
    await target.locator("[data-act=reply]").click()
    await expect(alice.locator("#compose-context")).to_be_visible()
    await send(alice, "Bukhansan")
    ev = await bob.next_event("message.new")
    while ev.payload["text"] != "Bukhansan":
        ev = await bob.next_event("message.new")
    assert ev.payload["reply_to"] == first["seq"]
    await expect(message(alice, "Bukhansan").locator(".quote")).to_contain_text("which trail")

    # Reactions from the SDK show live; the page toggles its own.
    await bob.call("message.react", chat_id=chat_id, seq=ev.payload["seq"], emoji="👍")
    await expect(message(alice, "Bukhansan").locator(".reaction")).to_have_text("👍 1", timeout=T)
    await message(alice, "Bukhansan").locator(".reaction").click()
    await expect(message(alice, "Bukhansan").locator(".reaction")).to_have_text("👍 2", timeout=T)

    # Edit (ArrowUp in an empty composer edits the last own message) and unsend.
    await alice.locator("#composer").press("ArrowUp")
    await expect(alice.locator("#composer")).to_have_value("Bukhansan")
    await alice.locator("#composer").fill("Bukhansan at 9")
    await alice.locator("#composer").press("Enter")
    edited = await bob.next_event("message.edited")
    assert edited.payload["text"] == "Bukhansan at 9"
    await expect(message(alice, "Bukhansan at 9").locator(".edited")).to_be_visible()
    await send(alice, "oops wrong chat")
    mine = message(alice, "oops wrong chat")
    await expect(mine).to_be_visible(timeout=T)
    await mine.hover()
    await mine.locator("[data-act=unsend]").click()
    await alice.locator(".confirm-ok").click()
    await expect(alice.locator("li.msg .bubble.unsent")).to_have_count(1, timeout=T)
    unsent = await bob.next_event("message.unsent")
    assert unsent.payload["chat_id"] == chat_id

    # Typing indicator from the SDK user.
    await bob.call("typing.set", chat_id=chat_id, typing=True)
    await expect(alice.locator("#typing")).to_contain_text("Bob", timeout=T)
    await bob.call("typing.set", chat_id=chat_id, typing=False)
    await expect(alice.locator("#typing")).to_have_text("", timeout=T)

    # Search across chats and jump to the hit.
    await alice.fill("#search-input", "Gwanaksan")
    hit = alice.locator("#search-results .hit")
    await expect(hit).to_have_count(1, timeout=T)
    await hit.click()
    await expect(message(alice, first["text"])).to_be_visible(timeout=T)


async def test_long_history_pages_and_stays_windowed(server: ServerProcess, make_user: MakeUser,
                                                     browser: Browser) -> None:
    bob: Client = await make_user("bob")
    _, alice = await new_page(browser)
    await signup(alice, server.url, "alice")
    await open_direct_with(alice, bob.user["handle"])
    chat_id = int(await alice.evaluate("window.dari.chat.chatId"))
    n = 600
    for i in range(n):
        await bob.call("message.send", chat_id=chat_id, client_id=f"h{i}", text=f"history {i}")
    await expect(message(alice, f"history {n - 1}")).to_be_visible(timeout=T)
    # Reopen, then scroll to the very beginning; the DOM never holds more than a window.
    await alice.reload()
    await expect(message(alice, f"history {n - 1}")).to_be_visible(timeout=T)
    most = 0
    for _ in range(60):
        await alice.locator("#messages").evaluate("el => el.scrollTop = 0")
        await alice.wait_for_timeout(120)
        most = max(most, await alice.locator("li.msg[data-seq]").count())
        if await message(alice, "history 0").count():
            break
    await expect(message(alice, "history 0")).to_be_visible(timeout=T)
    await expect(alice.locator(".day-sep.beginning")).to_be_visible()
    assert most <= 200, most
    # And back down to the newest.
    await alice.click("#jump-latest")
    await expect(message(alice, f"history {n - 1}")).to_be_visible(timeout=T)


async def test_open_chat_join_by_code_with_nickname(server: ServerProcess, make_user: MakeUser,
                                                    browser: Browser) -> None:
    owner: Client = await make_user("owner")
    room = await owner.call("chat.create_open", title="Seoul hikers", nickname="TrailBoss")
    _, page = await new_page(browser)
    await signup(page, server.url, "eve")
    await page.click("#btn-new-chat")
    await page.click("[data-mode=join]")
    form = page.locator("#dialog form[data-form=join]")
    await form.locator("[name=link_code]").fill(room["link_code"])
    await form.locator("[name=nickname]").fill("Mountain Goat")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#chat-title")).to_have_text("Seoul hikers", timeout=T)
    await expect(page.locator("li.msg.system", has_text="Mountain Goat joined")).to_be_visible(timeout=T)
    await owner.send_message(room["chat_id"], "welcome!")
    await expect(message(page, "welcome!").locator(".sender")).to_have_text("TrailBoss", timeout=T)


async def test_screenshots(server: ServerProcess, make_user: MakeUser, browser: Browser, tmp_path: Path) -> None:
    """The screens a new user sees first, at desktop size and at 360 px."""
    out = ROOT / "docs" / "screenshots" if os.environ.get("DARI_SCREENSHOTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    for size, (w, h) in {"desktop": (1280, 800), "mobile": (360, 740)}.items():
        minji: Client = await make_user("minji")
        yuki: Client = await make_user("yuki")
        await minji.call("account.update_profile", display_name="Minji 민지", status_message="산이 좋아 ⛰")
        await yuki.call("account.update_profile", display_name="Yuki 由紀")
        _, page = await new_page(browser, width=w, height=h)
        await page.goto(server.url)
        await expect(page.locator("#auth")).to_be_visible(timeout=T)
        await page.screenshot(path=str(out / f"login-{size}.png"))
        handle = await signup(page, server.url, "jisoo")
        await open_direct_with(page, minji.user["handle"])
        direct = int(await page.evaluate("window.dari.chat.chatId"))
        await minji.call("friend.add", handle=handle)
        await minji.call("friend.add", handle=yuki.user["handle"])
        me = await page.evaluate("window.dari.session.user.user_id")
        group = (await minji.call("chat.create_group", title="Weekend hike ⛰",
                                  member_ids=[me, yuki.user["user_id"]]))["chat_id"]
        q = await minji.send_message(group, "Trail options: Bukhansan or Gwanaksan?")
        y = await yuki.send_message(group, "北漢山がいいです！景色が最高 🏔")
        r = await minji.send_message(group, "Bukhansan it is. Meet at Gupabal station, 9:00 🙂", reply_to=y["seq"])
        await yuki.call("message.react", chat_id=group, seq=r["seq"], emoji="👍")
        await minji.call("chat.read", chat_id=group, seq=r["seq"])
        await yuki.call("chat.read", chat_id=group, seq=r["seq"])
        await minji.send_message(direct, "Are you coming on Saturday? 🙂")
        await send(page, "Yes! What time?")
        await expect(message(page, "Yes! What time?")).to_be_visible(timeout=T)
        await minji.call("chat.read", chat_id=direct, seq=10**6)
        await minji.send_message(direct, "9 at the station. I'll bring kimbap 🍙")
        await expect(message(page, "9 at the station. I'll bring kimbap 🍙")).to_be_visible(timeout=T)
        await expect(message(page, "Yes! What time?").locator(".unread")).to_have_text("", timeout=T)
        await page.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
        if size == "mobile":
            await page.click("#btn-back")
        await expect(chat_row(page, "Weekend hike ⛰").locator(".badge")).to_have_text("4", timeout=T)
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(out / f"chats-{size}.png"))
        await open_chat(page, "Weekend hike ⛰")
        await send(page, "I'm in! 🙌")
        await expect(message(page, "I'm in! 🙌").locator(".unread")).to_have_text("2", timeout=T)
        await minji.call("chat.read", chat_id=group, seq=10**6)
        await expect(message(page, "I'm in! 🙌").locator(".unread")).to_have_text("1", timeout=T)
        await yuki.call("typing.set", chat_id=group, typing=True)
        await expect(page.locator("#typing")).not_to_be_empty(timeout=T)
        await page.evaluate("document.querySelectorAll('.toast').forEach(t => t.remove())")
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(out / f"chat-{size}.png"))
        await page.context.close()
        assert q["seq"] < r["seq"]
    assert (out / "chat-mobile.png").stat().st_size > 1000


async def test_friends_and_settings(server: ServerProcess, make_user: MakeUser, browser: Browser) -> None:
    _, page = await new_page(browser)
    handle = await signup(page, server.url, "hana")
    bob: Client = await make_user("bob")
    await bob.call("friend.add", handle=handle)
    await expect(page.locator(".toast", has_text="Bob added you")).to_be_visible(timeout=T)
    await add_friend(page, bob.user["handle"])

    # Favourite, then hide and unhide, from the profile card.
    await page.click(".act-fav")
    await expect(page.locator("#friends-body h3", has_text="Favourites")).to_be_visible(timeout=T)
    await page.click(".act-hide")
    await expect(page.locator("#friends-body h3", has_text="Hidden")).to_be_visible(timeout=T)
    await page.click(".act-hide")
    await expect(page.locator("#friends-body h3", has_text="Hidden")).to_have_count(0, timeout=T)

    # A friend's profile change shows live.
    await page.click("[data-close]")
    await bob.call("account.update_profile", display_name="Bobby", status_message="on a hike")
    await expect(page.locator(".friend-row .friend-name", has_text="Bobby").first).to_be_visible(timeout=T)

    # Block, then unblock from settings; a blocked user's messages never arrive (he is not told).
    await page.locator(".friend-row", has_text="Bobby").first.click()
    await page.click(".act-block")
    await page.click(".confirm-ok")
    await page.click("[data-tab=settings]")
    await expect(page.locator("#blocked-list li", has_text="Bobby")).to_be_visible(timeout=T)
    me = await page.evaluate("window.dari.session.user.user_id")
    chat = await bob.call("chat.open_direct", user_id=me)
    sent = await bob.call("message.send", chat_id=chat["chat_id"], client_id="while-blocked", text="can you see this?")
    assert sent["unread"] == 1
    await page.locator("#blocked-list li", has_text="Bobby").locator("button").click()
    await expect(page.locator("#blocked-list li", has_text="Nobody is blocked")).to_be_visible(timeout=T)
    await bob.send_message(chat["chat_id"], "after the unblock")
    await page.click("[data-tab=chats]")
    await expect(chat_row(page, "Bobby").locator(".chat-preview")).to_have_text("after the unblock", timeout=T)
    await chat_row(page, "Bobby").click()
    await expect(message(page, "after the unblock")).to_be_visible(timeout=T)
    assert await texts(page) == ["after the unblock"]

    # Profile.
    await page.click("[data-tab=settings]")
    form = page.locator("#profile-form")
    await form.locator("[name=display_name]").fill("Hana 하나")
    await form.locator("[name=status_message]").fill("커피 ☕")
    await form.locator("button[type=submit]").click()
    ev = await bob.next_event("profile.updated")
    while ev.payload["user_id"] != me:
        ev = await bob.next_event("profile.updated")
    assert ev.payload["display_name"] == "Hana 하나"

    # Devices: log in the same account from the SDK, see it in the list and log it out from here.
    other = Client(server.url)
    try:
        await other.login(handle, PASSWORD, device_name="phone")
        await other.wait_live()
        # A password login asks this page for the encryption keys (test_web_e2ee_login.py): not now.
        await expect(page.locator("#dialog[data-key-request]")).to_be_visible(timeout=T)
        await page.keyboard.press("Escape")
        await page.click("[data-tab=chats]")
        await page.click("[data-tab=settings]")
        row = page.locator("#device-list li", has_text="phone")
        await expect(row).to_be_visible(timeout=T)
        await row.locator("button", has_text="Log out").click()   # (beside Rename)
        await page.click(".confirm-ok")
        revoked = await other.next_event("session.revoked")
        assert revoked.name == "session.revoked"
        await expect(row).to_have_count(0, timeout=T)
    finally:
        await other.close()

    # Password change, then log out and back in with the new password.
    pw = page.locator("#password-form")
    await pw.locator("[name=old_password]").fill(PASSWORD)
    await pw.locator("[name=new_password]").fill("a whole new password")
    await pw.locator("button[type=submit]").click()
    await expect(page.locator(".toast", has_text="Password changed")).to_be_visible(timeout=T)
    await page.click("#btn-logout")
    await page.click(".confirm-ok")
    await expect(page.locator("#auth")).to_be_visible(timeout=T)
    login = page.locator("#login-form")
    await login.locator("[name=handle]").fill(handle)
    await login.locator("[name=password]").fill("a whole new password")
    await login.locator("button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)


async def test_websocket_blocked_falls_back_to_long_poll_and_comes_back(server: ServerProcess, make_user: MakeUser,
                                                                       browser: Browser) -> None:
    """A network that breaks WebSockets: the page carries on over HTTP long-poll, shows the route,
    loses and doubles nothing, and returns to the WebSocket once it opens again."""
    ctx, alice = await new_page(browser)
    await alice.add_init_script("localStorage.setItem('dari.upgrade_ms', '2000')")
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    await open_direct_with(alice, bob.user["handle"])
    await expect(alice.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)
    blocked = True

    async def route(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
        else:
            ws.connect_to_server()

    await alice.route_web_socket(re.compile(r".*/ws$"), route)
    await alice.evaluate("window.__dariSession?._ws?.close()")
    await alice.reload()
    await expect(alice.locator("#conn .conn-label")).to_contain_text("long-poll", timeout=T)
    await open_chat(alice, "Bob")
    await send(alice, "over long-poll")
    ev = await bob.next_event("message.new", timeout=15)
    assert ev.payload["text"] == "over long-poll"
    await bob.send_message(ev.payload["chat_id"], "reply to long-poll")
    await expect(message(alice, "reply to long-poll")).to_be_visible(timeout=T)
    blocked = False
    await expect(alice.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)
    await send(alice, "back on websocket")
    ev = await bob.next_event("message.new", timeout=15)
    while ev.payload["text"] == "reply to long-poll":     # bob's own message, on his device
        ev = await bob.next_event("message.new", timeout=15)
    assert ev.payload["text"] == "back on websocket"
    await expect(alice.locator("li.msg[data-seq] .text")).to_have_text(
        ["over long-poll", "reply to long-poll", "back on websocket"], timeout=T)
    history = await bob.call("message.history", chat_id=ev.payload["chat_id"])
    assert [m["text"] for m in history["messages"] if m["kind"] == "text"] == [
        "over long-poll", "reply to long-poll", "back on websocket"]
    assert not alice.errors  # type: ignore[attr-defined]
    await ctx.close()
