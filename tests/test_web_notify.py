"""Issue 3 in a real Chromium: browser notifications for background tabs (mute, own devices, click to open)
and @mentions in group chats (suggestion box, the `mentions` field, the `mentions-me` highlight).

Headless tabs are always visible, so an init script puts `document.hidden`/`visibilityState` behind a
switch (`window.__setHidden(bool)`, which also dispatches `visibilitychange`), and wraps
`window.Notification` so every notification the page makes is logged in `window.__notes` before the real
one is constructed with the same arguments.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, expect

from dari.client import Client
from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import MakeUser, T, chat_row, message, new_page, open_chat, signup

SPY = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event("visibilitychange")); };

  const Real = window.Notification;
  if (!Real) return;
  window.__notes = [];
  window.__noteObjs = [];
  function Spy(title, options = {}) {
    window.__notes.push({ title, body: options.body ?? null, tag: options.tag ?? null });
    const n = new Real(title, options);
    window.__noteObjs.push(n);
    return n;
  }
  Spy.prototype = Real.prototype;
  Object.defineProperty(Spy, "permission", { get: () => Real.permission });
  Object.defineProperty(Spy, "maxActions", { get: () => Real.maxActions });
  Spy.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Spy;
})();
"""


async def notes(page: Page) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.__notes"))


async def wait_notes(page: Page, n: int) -> None:
    await page.wait_for_function("(n) => window.__notes.length >= n", arg=n, timeout=T)


async def set_hidden(page: Page, hidden: bool) -> None:
    await page.evaluate("(h) => window.__setHidden(h)", hidden)
    assert await page.evaluate("document.hidden") is hidden


async def preview_shown(page: Page, title: str, text: str) -> None:
    """The page has handled the message.new (the chat list preview and notify() run in the same handler)."""
    await expect(chat_row(page, title).locator(".chat-preview")).to_have_text(text, timeout=T)


async def spied_page(browser: Browser, url: str, *, grant: bool = True) -> tuple[BrowserContext, Page]:
    ctx, page = await new_page(browser)
    if grant:
        await ctx.grant_permissions(["notifications"], origin=url)
    await ctx.add_init_script(SPY)
    return ctx, page


async def test_background_notifications_respect_setting_mute_visibility_and_own_devices(
        server: ServerProcess, make_user: MakeUser, browser: Browser) -> None:
    _, page = await spied_page(browser, server.url)
    handle = await signup(page, server.url, "alice")
    me = await page.evaluate("window.dari.session.user.user_id")
    assert await page.evaluate("Notification.permission") == "granted"
    bob: Client = await make_user("bob")
    carol: Client = await make_user("carol")
    bob_chat = (await bob.call("chat.open_direct", user_id=me))["chat_id"]
    carol_chat = (await carol.call("chat.open_direct", user_id=me))["chat_id"]

    # Settings: with the permission granted the toggle offers "Turn off"; the user turns it off...
    await page.click("[data-tab=settings]")
    toggle = page.locator("#btn-notify")
    await expect(toggle).to_have_text("Turn off", timeout=T)
    await toggle.click()
    await expect(toggle).to_have_text("Turn on")
    await set_hidden(page, True)
    await bob.send_message(bob_chat, "while switched off")
    await preview_shown(page, "Bob", "while switched off")
    assert await notes(page) == []

    # ...and on again (the button asks the browser, which answers "granted").
    await toggle.click()
    await expect(toggle).to_have_text("Turn off")
    assert await page.evaluate("localStorage.getItem('dari.notify')") is None

    # Hidden tab, a friend writes: exactly one notification with the sender's name and the text.
    await bob.send_message(bob_chat, "hello alice")
    await wait_notes(page, 1)
    await preview_shown(page, "Bob", "hello alice")
    assert await notes(page) == [{"title": "Bob", "body": "hello alice", "tag": f"dari-chat-{bob_chat}"}]

    # Mute Bob's chat through the chat's info dialog: his next message makes none.
    await open_chat(page, "Bob")
    await page.click("#btn-chat-info")
    mute = page.locator("#dialog .mute-btn")
    await expect(mute).to_have_text("Mute notifications", timeout=T)
    await mute.click()
    await expect(chat_row(page, "Bob").locator(".muted-icon")).to_be_visible(timeout=T)
    await bob.send_message(bob_chat, "you muted me")
    await preview_shown(page, "Bob", "you muted me")
    assert len(await notes(page)) == 1

    # A visible tab makes none.
    await set_hidden(page, False)
    await carol.send_message(carol_chat, "while you look")
    await preview_shown(page, "Carol", "while you look")
    assert len(await notes(page)) == 1

    # Hidden again: my own message from another device makes none; Carol's next one does.
    await set_hidden(page, True)
    phone = Client(server.url)
    try:
        await phone.login(handle, PASSWORD, device_name="phone")
        await phone.wait_live()
        # A password login asks this page for the encryption keys (test_web_e2ee_login.py): not now.
        await expect(page.locator("#dialog[data-key-request]")).to_be_visible(timeout=T)
        await page.keyboard.press("Escape")
        await phone.send_message(carol_chat, "sent from my phone")
        await preview_shown(page, "Carol", "sent from my phone")
        assert len(await notes(page)) == 1
    finally:
        await phone.close()
    await carol.send_message(carol_chat, "carol here")
    await wait_notes(page, 2)
    assert (await notes(page))[1] == {"title": "Carol", "body": "carol here", "tag": f"dari-chat-{carol_chat}"}

    # Clicking Carol's notification (from the settings tab, Bob's chat open) opens Carol's chat.
    await page.click("[data-tab=settings]")
    await expect(page.locator("#chat-title")).to_have_text("Bob")
    has_onclick = await page.evaluate("typeof window.__noteObjs[1].onclick === 'function'")
    assert has_onclick, "the notification has no click handler"
    await page.evaluate("window.__noteObjs[1].onclick(new Event('click'))")
    await expect(page.locator("#chat-title")).to_have_text("Carol", timeout=T)
    await expect(page.locator("#app")).to_have_attribute("data-tab", "chats")
    await expect(message(page, "carol here")).to_be_visible(timeout=T)
    assert len(await notes(page)) == 2
    assert not page.errors  # type: ignore[attr-defined]


async def login_page(browser: Browser, url: str, handle: str) -> Page:
    _, page = await new_page(browser)
    await page.goto(url)
    form = page.locator("#login-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    return page


async def test_group_mention_suggest_insert_payload_and_highlight(server: ServerProcess, make_user: MakeUser,
                                                                  browser: Browser) -> None:
    alice: Client = await make_user("alice")
    bob: Client = await make_user("bob")
    carol: Client = await make_user("carol")
    bob_id, carol_id = bob.user["user_id"], carol.user["user_id"]
    group = await alice.call("chat.create_group", title="Trio", member_ids=[bob_id, carol_id])
    pages = {name: await login_page(browser, server.url, c.user["handle"])
             for name, c in (("alice", alice), ("bob", bob), ("carol", carol))}
    for p in pages.values():
        await open_chat(p, "Trio")
    a = pages["alice"]

    # "@" plus the start of a name: the box suggests that member only (not the sender, not Carol).
    box = a.locator("#composer")
    suggest = a.locator("#mention-suggest")
    await box.click()
    names = ".suggest[data-name]"
    await box.type("hey @")
    await expect(suggest).to_be_visible(timeout=T)
    assert sorted(await suggest.locator(names).evaluate_all("els => els.map((e) => e.dataset.name)")) == [
        "Bob", "Carol"]
    await box.type("bo")
    await expect(suggest.locator(names)).to_have_count(1, timeout=T)
    assert await suggest.locator(".suggest").evaluate_all("els => els.map((e) => e.dataset.name)") == ["Bob"]
    await suggest.locator(".suggest", has_text="Bob").click()
    await expect(suggest).to_be_hidden()
    await expect(box).to_have_value("hey @Bob ")
    await box.type("lunch?")
    await box.press("Enter")
    await expect(box).to_have_value("")

    # The message carries Bob's id in `mentions` (Bob's SDK device sees the message.new payload).
    ev = await bob.next_event("message.new")
    while ev.payload.get("text") != "hey @Bob lunch?":
        ev = await bob.next_event("message.new")
    assert ev.payload["chat_id"] == group["chat_id"]
    assert ev.payload["mentions"] == [bob_id]

    # Bob's page highlights it; Carol's and the sender's do not.
    text = "hey @Bob lunch?"
    for p in pages.values():
        await expect(message(p, text)).to_be_visible(timeout=T)
    await expect(message(pages["bob"], text).locator(".bubble.mentions-me")).to_have_count(1, timeout=T)
    await expect(message(pages["carol"], text).locator(".bubble.mentions-me")).to_have_count(0)
    await expect(message(pages["carol"], text).locator(".bubble")).to_have_count(1)
    await expect(message(a, text).locator(".bubble.mentions-me")).to_have_count(0)

    # Keyboard: "@ca" then Tab picks Carol; Carol's page highlights that one, Bob's does not.
    await box.type("@ca")
    await expect(suggest.locator(".suggest.active")).to_have_attribute("data-name", "Carol", timeout=T)
    await box.press("Tab")
    await expect(box).to_have_value("@Carol ")
    await box.type("too")
    await box.press("Enter")
    ev = await carol.next_event("message.new")
    while ev.payload.get("text") != "@Carol too":
        ev = await carol.next_event("message.new")
    assert ev.payload["mentions"] == [carol_id]
    await expect(message(pages["carol"], "@Carol too").locator(".bubble.mentions-me")).to_have_count(1, timeout=T)
    await expect(message(pages["bob"], "@Carol too")).to_be_visible(timeout=T)
    await expect(message(pages["bob"], "@Carol too").locator(".bubble.mentions-me")).to_have_count(0)
    for p in pages.values():
        assert not p.errors  # type: ignore[attr-defined]
