"""Recording a voice message in the web page (issue 13), in a real Chromium whose fake microphone
(--use-fake-device-for-media-stream: a beeping tone) is allowed without a prompt
(--use-fake-ui-for-media-stream), against a real `dari serve`; the receiver is another page and the
SDK, which downloads the bytes and checks they are a real WebM/Ogg Opus recording."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright, expect

from dari.client import Client
from dari.client.media import download_attachment
from dari.services import containers
from tests.conftest import CHROMIUM_ARGS, PASSWORD, ServerProcess, chromium_path
from tests.test_web import T, new_page, open_direct_with, send, signup
from tests.test_web_media_edit import wait_media_loaded

MIC_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture
async def mic_browser() -> AsyncIterator[Browser]:
    exe = chromium_path()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, args=[*CHROMIUM_ARGS, *MIC_ARGS])
        yield b
        await b.close()


def voice_items(page: Page) -> Any:
    return page.locator("li.msg[data-seq]:has(.media-player.is-voice)")


async def record(page: Page, *, until: str = "0:01") -> None:
    """Tap the microphone, wait for the timer to pass `until`, press Send."""
    await page.click("#btn-voice")
    await expect(page.locator("#voice-bar")).to_be_visible(timeout=T)
    await expect(page.locator("#btn-voice")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#voice-timer")).to_have_text(re.compile(rf"^{until}|^0:0[2-9] / 5:00$"), timeout=T)
    await page.click("#voice-send")


def is_opus_recording(data: bytes) -> bool:
    if data.startswith(b"\x1a\x45\xdf\xa3"):      # EBML: WebM with an Opus track
        return b"webm" in data[:64] and b"A_OPUS" in data[:4096]
    return data.startswith(b"OggS") and b"OpusHead" in data[:512]


async def test_record_send_and_play_a_voice_message(server: ServerProcess, mic_browser: Browser) -> None:
    _, alice = await new_page(mic_browser)
    _, bob = await new_page(mic_browser)
    await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    alice_handle = await alice.evaluate("window.dari.session.user.handle")
    await open_direct_with(alice, bob_handle)
    await open_direct_with(bob, alice_handle)
    await send(alice, "listen to this")

    # Tap to record, tap Send: the message goes out through the upload tray and plays at both ends.
    await record(alice)
    await expect(alice.locator("#voice-bar")).to_be_hidden(timeout=T)
    await expect(alice.locator("#btn-voice")).to_have_attribute("aria-pressed", "false")
    for page in (alice, bob):
        await expect(voice_items(page)).to_have_count(1, timeout=T)
        state = await wait_media_loaded(voice_items(page).first.locator("audio.media-audio"))
        assert state["duration"] > 0.5
        await expect(voice_items(page).first.locator(".media-duration")).to_have_text(re.compile(r"^0:0[1-9]$"))
    await expect(alice.locator("#upload-tray")).to_be_hidden(timeout=T)

    # Hold to talk: press, speak, let go, and it is sent at once.
    await alice.hover("#btn-voice")
    await alice.mouse.down()
    await expect(alice.locator("#voice-bar")).to_be_visible(timeout=T)
    await expect(alice.locator("#voice-timer")).to_have_text(re.compile(r"^0:0[1-9] / 5:00$"), timeout=T)
    await alice.mouse.up()
    await expect(voice_items(bob)).to_have_count(2, timeout=T)

    # Cancel throws the recording away.
    await alice.click("#btn-voice")
    await expect(alice.locator("#voice-bar")).to_be_visible(timeout=T)
    await alice.click("#voice-cancel")
    await expect(alice.locator("#voice-bar")).to_be_hidden(timeout=T)
    await send(alice, "that was all")
    await expect(bob.locator("li.msg[data-seq] .text", has_text="that was all")).to_be_visible(timeout=T)
    await expect(voice_items(bob)).to_have_count(2)

    # The SDK sees voice messages whose bytes are a real Opus recording of the length stored. The
    # chat is end-to-end encrypted: the SDK is a device Bob links from his page (Settings, approve
    # a new device), which hands it the chat's keys; a device logged in by password could not read
    # what was sent before it existed.
    sdk = Client(server.url)
    try:
        link = await sdk.link_start("sdk")
        await bob.click("[data-tab=settings]")
        approve = bob.locator("#approve-form")
        await approve.locator("[name=code]").fill(link["code"])
        await approve.locator("button[type=submit]").click()
        await sdk.link_wait(link["secret"], timeout=30)
        chat_id = await bob.evaluate("window.dari.chat.chatId")
        history = await sdk.call("message.history", chat_id=chat_id)
        voices = [m for m in history["messages"] if m["kind"] == "voice"]
        assert len(voices) == 2
        for msg in voices:
            att = msg["attachment"]
            assert att["mime"] in ("audio/webm", "audio/ogg"), att
            assert att["size"] > 0 and 500 <= att["duration_ms"] <= 30000, att
            assert re.fullmatch(r"voice-\d{8}-\d{6}\.(webm|ogg)", att["name"]), att
            data = await download_attachment(sdk, att)
            assert len(data) == att["size"] and is_opus_recording(data), data[:64]
            with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
                fh.write(data)
                fh.flush()
                probed = containers.webm_info(fh.name) or containers.ogg_info(fh.name)
            assert probed is not None and probed.kind == "audio" and probed.duration_ms, probed
        # The message's length is the recording's (the page read it from the blocks).
        assert abs(probed.duration_ms - voices[-1]["attachment"]["duration_ms"]) < 50
    finally:
        await sdk.close()
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_blocked_or_missing_microphone_is_explained_in_the_page_language(server: ServerProcess) -> None:
    """A fake microphone the user did not allow (Playwright answers the prompt "block"), and a
    machine with no microphone at all (this container has none)."""
    exe = chromium_path()
    friend = Client(server.url)
    await friend.signup(f"mina_{os.urandom(3).hex()}", "Mina", PASSWORD)
    assert friend.user is not None
    cases = [(["--use-fake-device-for-media-stream"], "ko-KR", "^마이크가 차단되어"),
             ([], "ja-JP", "^マイクが見つかりません")]
    try:
        async with async_playwright() as p:
            for extra, locale, expected in cases:
                b = await p.chromium.launch(executable_path=exe, args=[*CHROMIUM_ARGS, *extra])
                try:
                    _, page = await new_page(b, locale=locale)
                    await signup(page, server.url, "jiwoo")
                    await open_direct_with(page, friend.user["handle"])
                    await page.click("#btn-voice")
                    await expect(page.locator("#compose-error")).to_have_text(re.compile(expected), timeout=T)
                    await expect(page.locator("#voice-bar")).to_be_hidden()
                    await expect(page.locator("#btn-voice")).to_have_attribute("aria-pressed", "false")
                    assert not page.errors  # type: ignore[attr-defined]
                finally:
                    await b.close()
    finally:
        await friend.close()


# Flaked 2 in ~15 runs under a loaded suite (a reconnect racing the route switch back to the
# WebSocket); the send is now retried by client_id. One rerun until it is traced further.
@pytest.mark.flaky(reruns=1)
async def test_voice_message_recorded_offline_is_sent_when_back(server: ServerProcess, mic_browser: Browser,
                                                                make_user: Any) -> None:
    """Like an attached file: the upload job waits for the connection and then goes out."""
    ctx, alice = await new_page(mic_browser)
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    assert bob.user is not None
    await open_direct_with(alice, bob.user["handle"])
    blocked = True

    async def ws_route(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
        else:
            ws.connect_to_server()

    async def http_route(r: Any) -> None:
        await (r.abort() if blocked else r.continue_())

    await alice.route_web_socket(re.compile(r".*/ws$"), ws_route)
    await ctx.route(re.compile(r".*/lp/.*"), http_route)
    await ctx.set_offline(True)
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
    await record(alice)
    row = alice.locator("#upload-tray .upload-row")
    await expect(row.locator(".upload-name")).to_have_text(re.compile(r"^voice-.*\.(webm|ogg)$"), timeout=T)
    await ctx.set_offline(False)
    blocked = False
    ev = await bob.next_event("message.new", timeout=60)
    assert ev.payload["kind"] == "voice" and ev.payload["attachment"]["duration_ms"] >= 500, ev.payload
    await expect(alice.locator("li.msg[data-seq]:has(.media-player.is-voice)")).to_have_count(1, timeout=T)
    await expect(alice.locator("#upload-tray")).to_be_hidden(timeout=T)
