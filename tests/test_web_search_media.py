"""The web page's search finds a file by its name and a photo by its Korean caption (issue 13), in a
real Chromium against a real `dari serve`."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from dari.client import Client
from dari.client.media import send_file
from tests.conftest import ServerProcess
from tests.test_web import T, browser, new_page, open_direct_with, signup  # noqa: F401  (browser: fixture)
from tests.test_web_content import landscape_png

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


async def test_web_search_finds_file_names_and_captions(server: ServerProcess, browser: Browser,  # noqa: F811
                                                        make_user: Any) -> None:
    _, page = await new_page(browser)
    await signup(page, server.url, "alice")
    bob: Client = await make_user("bob")
    assert bob.user is not None
    await open_direct_with(page, bob.user["handle"])
    chat_id = await page.evaluate("window.dari.chat.chatId")
    await send_file(bob, chat_id, PDF, name="seoul-trip-budget.pdf")
    await send_file(bob, chat_id, landscape_png(), name="IMG_0001.png", caption="설악산 단풍 구경")

    await page.click("[data-tab=chats]")
    results = page.locator("#search-results .hit-text")
    await page.fill("#search-input", "trip-budget")
    await expect(results).to_have_text(["📄 seoul-trip-budget.pdf"], timeout=T)
    await page.fill("#search-input", "단풍")
    await expect(results).to_have_text(["🖼 설악산 단풍 구경 · IMG_0001.png"], timeout=T)
    # A hit opens the chat at the message.
    await page.locator("#search-results button.hit").first.click()
    await expect(page.locator("li.msg[data-seq] .media-thumb img")).to_be_visible(timeout=T)
    assert not page.errors  # type: ignore[attr-defined]
