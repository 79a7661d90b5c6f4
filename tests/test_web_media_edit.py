"""The web client edits and deletes your own stories and board posts, and plays video and voice
messages inline (issue 4), in a real Chromium driven by Playwright against a real `dari serve`
(see tests/test_web.py for the set-up).
"""

from __future__ import annotations

import base64
import io
import math
import re
import struct
import uuid
import wave
from collections.abc import Callable
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, expect

from dari.client import Client
from tests.conftest import PASSWORD, ServerProcess
from tests.test_web import (
    T,
    add_friend,
    browser,  # noqa: F401  (the fixture)
    message,
    new_page,
    open_direct_with,
    send,
    signup,
)
from tests.test_web_content import blob_src, landscape_png, png_file

MakeUser = Callable[..., Any]


def wav_tone(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A short voice note: a 440 Hz tone as 16-bit mono PCM in a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return out.getvalue()


async def webm_clip(page: Page) -> bytes:
    """A real VP8 WebM clip of about 0.8 s, recorded from a canvas by the browser's MediaRecorder."""
    data = await page.evaluate("""async () => {
      const c = document.createElement("canvas");
      c.width = 64; c.height = 48;
      const g = c.getContext("2d");
      const rec = new MediaRecorder(c.captureStream(25), { mimeType: "video/webm;codecs=vp8" });
      const parts = [];
      rec.ondataavailable = (e) => parts.push(e.data);
      const stopped = new Promise((r) => { rec.onstop = r; });
      rec.start();
      for (let i = 0; i < 20; i++) {
        g.fillStyle = `hsl(${i * 18}, 80%, 50%)`;
        g.fillRect(0, 0, 64, 48);
        await new Promise((r) => setTimeout(r, 40));
      }
      rec.stop();
      await stopped;
      const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
      let s = "";
      for (const b of bytes) s += String.fromCharCode(b);
      return btoa(s);
    }""")
    clip = base64.b64decode(data)
    assert clip.startswith(b"\x1a\x45\xdf\xa3"), "not a WebM (EBML) file"
    return clip


def watch_csp(page: Page) -> list[str]:
    """Collect Content-Security-Policy violations: the DOM event and Chromium's console error."""
    found: list[str] = []
    page.on("console", lambda m: found.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda exc: found.append(str(exc)) if "Content Security Policy" in str(exc) else None)
    return found


async def csp_events(page: Page) -> list[str]:
    return list(await page.evaluate("window.__csp || []"))


CSP_HOOK = ("document.addEventListener('securitypolicyviolation', (e) =>"
            " (window.__csp ||= []).push(e.violatedDirective + ' ' + e.blockedURI));")


async def wait_media_loaded(locator: Any) -> dict[str, Any]:
    """Wait until the <video>/<audio> has a blob: source and its metadata (duration) is loaded."""
    await expect(locator).to_have_attribute("src", re.compile(r"^blob:"), timeout=T)
    handle = await locator.element_handle()
    page = locator.page
    await page.wait_for_function("m => m.readyState >= 1 || m.error", arg=handle, timeout=T)
    state: dict[str, Any] = await locator.evaluate(
        "m => ({ready: m.readyState, duration: m.duration, error: m.error && m.error.message,"
        " width: m.videoWidth || 0})")
    assert state["error"] is None, state
    assert state["ready"] >= 1 and state["duration"] > 0, state
    return state


async def test_video_and_voice_messages_play_inline(server: ServerProcess, browser: Browser) -> None:  # noqa: F811
    # The page may play media from blob: URLs (and nothing else from outside).
    async with aiohttp.ClientSession() as http, http.get(server.url + "/") as res:
        csp = res.headers["Content-Security-Policy"]
    assert "media-src 'self' blob:" in csp
    ctx_a, alice = await new_page(browser)
    ctx_b, bob = await new_page(browser)
    for ctx in (ctx_a, ctx_b):
        await ctx.add_init_script(CSP_HOOK)
    alice_csp, bob_csp = watch_csp(alice), watch_csp(bob)
    alice_handle = await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    await open_direct_with(alice, bob_handle)
    await open_direct_with(bob, alice_handle)

    clip = await webm_clip(alice)
    await alice.set_input_files("#file-input", files=[png_file("hike.webm", clip, "video/webm")])
    await alice.locator("#dialog form [name=caption]").fill("The summit, moving")
    await alice.locator("#dialog form button[type=submit]").click()
    await alice.set_input_files("#file-input", files=[png_file("voice.wav", wav_tone(1.0), "audio/wav")])
    await alice.locator("#dialog form [name=caption]").fill("Listen to this")
    await alice.locator("#dialog form button[type=submit]").click()

    # Both ends play them inline: the server detected video/webm and audio/wav, the page fetched
    # them with the token into blob: URLs and the media elements loaded their metadata.
    for page in (alice, bob):
        video = message(page, "The summit, moving").locator("video.media-video")
        state = await wait_media_loaded(video)
        assert state["width"] == 64
        assert await video.evaluate("v => v.controls")
        dur = message(page, "The summit, moving").locator(".media-duration")
        await expect(dur).to_have_text(re.compile(r"^0:0[01]$"), timeout=T)
        audio = message(page, "Listen to this").locator("audio.media-audio")
        state = await wait_media_loaded(audio)
        assert abs(state["duration"] - 1.0) < 0.05, state
        # The voice message's length comes from the server (it parsed the WAV header).
        await expect(message(page, "Listen to this").locator(".media-duration")).to_have_text("0:01")
    msgs = await bob.evaluate("[...window.dari.chat.timeline(window.dari.chat.chatId).msgs.values()]"
                              ".filter(m => m.attachment)"
                              ".map(m => [m.kind, m.attachment.type, m.attachment.duration_ms])")
    # The recorded clip's header has no length: the server reads it from the last block's time.
    video_ms = next(ms for kind, _, ms in msgs if kind == "video")
    assert 400 <= video_ms <= 3000, msgs
    assert sorted(map(tuple, msgs)) == [("video", "video/webm", video_ms), ("voice", "audio/wav", 1000)]

    # A new message rebuilds the list: the players are carried over, position and all.
    audio = message(bob, "Listen to this").locator("audio.media-audio")
    await audio.evaluate("a => { a.currentTime = 0.5; a.dataset.marked = 'yes'; }")
    await send(alice, "did it play?")
    await expect(message(bob, "did it play?")).to_be_visible(timeout=T)
    assert await audio.evaluate("a => [a.dataset.marked, a.currentTime]") == ["yes", 0.5]

    # The download button still saves the original file.
    async with bob.expect_download() as dl:
        await message(bob, "Listen to this").locator("[data-act=download-media]").click()
    assert (await dl.value).suggested_filename == "voice.wav"

    for page, found in ((alice, alice_csp), (bob, bob_csp)):
        assert not found and not await csp_events(page), (found, await csp_events(page))
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_story_edit_and_delete_seen_by_a_friend(server: ServerProcess, browser: Browser) -> None:  # noqa: F811
    _, alice = await new_page(browser, height=1000)
    _, bob = await new_page(browser, height=1000)
    alice_handle = await signup(alice, server.url, "alice")
    bob_handle = await signup(bob, server.url, "bob")
    await add_friend(alice, bob_handle)
    await alice.keyboard.press("Escape")
    await add_friend(bob, alice_handle)
    await bob.keyboard.press("Escape")

    await alice.click("[data-tab=stories]")
    form = alice.locator("#story-form")
    await form.locator("[name=text]").fill("Packing for Jirisan")
    await alice.set_input_files("#story-file", files=[png_file("bag.png", landscape_png(400, 300))])
    await form.locator("button[type=submit]").click()
    card = alice.locator("#story-feed .story-card").first
    await expect(card.locator(".story-text")).to_have_text("Packing for Jirisan", timeout=T)

    await bob.click("[data-tab=stories]")
    bcard = bob.locator("#story-feed .story-card", has=bob.locator(".story-author", has_text="Alice"))
    await expect(bcard.locator(".story-text")).to_have_text("Packing for Jirisan", timeout=T)
    assert await bcard.locator("[data-act=edit]").count() == 0   # not Bob's to edit
    assert await bcard.locator("[data-act=delete]").count() == 0

    # Alice edits in place: new text, the old photo replaced by two new ones, public.
    await card.locator("[data-act=edit]").click()
    editor = card.locator(".story-edit")
    await expect(editor.locator("[name=text]")).to_have_value("Packing for Jirisan")
    await expect(editor.locator("[name=visibility]")).to_have_value("friends")
    await expect(editor.locator(".story-photo-pick")).to_have_count(1)
    # Emptying it is refused with a message, before anything is sent.
    await editor.locator("[name=text]").fill("  ")
    await editor.locator("[data-act=edit-remove]").click()
    await editor.locator("button[type=submit]").click()
    await expect(editor.locator(".form-error")).to_have_text("Write something or add a photo.")
    await editor.locator("[name=text]").fill("Packed! Leaving for Jirisan at 5am 🎒")
    await alice.set_input_files(".story-edit input[type=file]", files=[
        png_file("map.png", landscape_png(500, 300)), png_file("boots.png", landscape_png(300, 300))])
    await expect(editor.locator(".story-photo-pick img")).to_have_count(2)
    await editor.locator("[name=visibility]").select_option("public")
    await editor.locator("button[type=submit]").click()
    await expect(card.locator(".story-edit")).to_have_count(0, timeout=T)
    await expect(card.locator(".story-text")).to_have_text("Packed! Leaving for Jirisan at 5am 🎒")
    await expect(card.locator(".story-photo img")).to_have_count(2)
    await blob_src(card.locator(".story-photo img").first)
    await expect(card.locator(".story-head")).to_contain_text("Public")
    await expect(card.locator(".story-head")).to_contain_text("edited")

    # Bob's page shows the edit once it reloads the feed: text, both photos, public, edited.
    await bob.reload()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await bob.click("[data-tab=stories]")
    await expect(bcard.locator(".story-text")).to_have_text("Packed! Leaving for Jirisan at 5am 🎒", timeout=T)
    await expect(bcard.locator(".story-photo img")).to_have_count(2)
    for i in range(2):
        await blob_src(bcard.locator(".story-photo img").nth(i))
    await expect(bcard.locator(".story-head")).to_contain_text("edited")
    await expect(bcard.locator(".story-head")).to_contain_text("Public")

    # Only me: it leaves Bob's feed. Alice's own page still has it after a reload.
    await card.locator("[data-act=edit]").click()
    await card.locator(".story-edit [name=visibility]").select_option("only_me")
    await card.locator(".story-edit button[type=submit]").click()
    await expect(card.locator(".story-head")).to_contain_text("Only me", timeout=T)
    await bob.locator("[data-tab=chats]").click()
    await bob.reload()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await bob.click("[data-tab=stories]")
    await expect(bob.locator("#story-empty")).to_be_visible(timeout=T)
    await expect(bcard).to_have_count(0)
    await alice.reload()
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await alice.click("[data-tab=stories]")
    await expect(card.locator(".story-text")).to_have_text("Packed! Leaving for Jirisan at 5am 🎒", timeout=T)
    await expect(card.locator(".story-head")).to_contain_text("Only me")

    # Delete: after confirming, the card is gone, and stays gone after a reload.
    await card.locator("[data-act=delete]").click()
    await alice.locator(".confirm-ok").click()
    await expect(alice.locator("#story-feed .story-card")).to_have_count(0, timeout=T)
    await alice.reload()
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await alice.click("[data-tab=stories]")
    await expect(alice.locator("#story-empty")).to_be_visible(timeout=T)
    await expect(alice.locator("#story-feed .story-card")).to_have_count(0)
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


async def test_board_post_edit_and_delete(server_factory: Callable[..., ServerProcess],
                                          browser: Browser) -> None:  # noqa: F811
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op, bob = Client(srv.url), Client(srv.url)
    await op.signup(op_handle, "Operator", PASSWORD)
    await bob.signup(f"bob_{uuid.uuid4().hex[:6]}", "Bob", PASSWORD)
    try:
        board = await op.call("admin.board_create", slug="free", title="Free board")
        _, alice = await new_page(browser)
        alice_handle = await signup(alice, srv.url, "alice")

        # A public board: Alice writes, edits (an empty title is refused), and deletes her post.
        await alice.click("[data-tab=boards]")
        host = alice.locator("#public-board")
        await host.locator(".board-head button", has_text="Write").click()
        await host.locator(".board-write [name=title]").fill("Jirisan in one day?")
        await host.locator(".board-write [name=body]").fill("Is it possible by bus from Seoul?")
        await host.locator(".board-write button[type=submit]").click()
        post = host.locator(".board-post")
        await expect(post.locator(".post-title")).to_have_text("Jirisan in one day?", timeout=T)
        await host.locator(".post-actions .post-edit").click()
        form = host.locator(".board-write")
        await expect(form.locator("h3")).to_have_text("Edit post")
        await expect(form.locator("[name=title]")).to_have_value("Jirisan in one day?")
        await expect(form.locator("[name=body]")).to_have_value("Is it possible by bus from Seoul?")
        assert await form.locator("[name=with_poll]").count() == 0   # a poll is not edited afterwards
        await form.locator("[name=title]").fill("   ")
        await form.locator("button[type=submit]").click()
        await expect(form.locator(".form-error")).to_have_text("Write a title.")
        await form.locator("[name=title]").fill("Jirisan in one day? (solved)")
        await form.locator("[name=body]").fill("Yes: the 23:00 night bus to Baengmudong.")
        await form.locator("button[type=submit]").click()
        await expect(post.locator(".post-title")).to_have_text("Jirisan in one day? (solved)", timeout=T)
        await expect(post.locator(".post-body")).to_have_text("Yes: the 23:00 night bus to Baengmudong.")
        await expect(post.locator(".post-meta")).to_contain_text("edited")
        listing = await bob.call("board.posts", board_id=board["board_id"])
        assert [p["title"] for p in listing["posts"]] == ["Jirisan in one day? (solved)"]
        seen = await bob.call("board.post", post_id=listing["posts"][0]["post_id"])
        assert seen["body"] == "Yes: the 23:00 night bus to Baengmudong." and seen["edited_at"]
        # Bob's own post shows no edit or delete buttons to Alice, only a report link.
        other = await bob.call("board.post_create", board_id=board["board_id"], title="Bob's question", body="?")
        await host.locator(".post-actions button", has_text="List").click()
        await host.locator(".b-link", has_text="Bob's question").click()
        await expect(post.locator(".post-title")).to_have_text("Bob's question", timeout=T)
        await expect(host.locator(".post-actions .post-edit")).to_have_count(0)
        await expect(host.locator(".post-actions .post-delete")).to_have_count(0)
        await host.locator(".post-actions button", has_text="List").click()
        await host.locator(".b-link", has_text="Jirisan in one day? (solved)").click()
        await expect(post.locator(".post-title")).to_have_text("Jirisan in one day? (solved)", timeout=T)
        await host.locator(".post-actions .post-delete").click()
        await host.locator(".post-confirm .confirm-cancel").click()     # changed her mind: nothing happens
        await expect(host.locator(".post-confirm")).to_have_count(0)
        await expect(post.locator(".post-title")).to_have_text("Jirisan in one day? (solved)")
        await host.locator(".post-actions .post-delete").click()
        await host.locator(".post-confirm .confirm-ok").click()
        await expect(host.locator(".board-table .b-link")).to_have_text(["Bob's question"], timeout=T)
        listing = await bob.call("board.posts", board_id=board["board_id"])
        assert [p["post_id"] for p in listing["posts"]] == [other["post_id"]]

        # A chat's board: Alice owns the chat, so she may delete Bob's post there (not edit it).
        me = await alice.evaluate("window.dari.session.user.user_id")
        await add_friend(alice, bob.user["handle"])
        await alice.keyboard.press("Escape")
        await bob.call("friend.add", handle=alice_handle)
        chat = await alice.evaluate("(ids) => window.dari.session.call('chat.create_group',"
                                    " {title: 'Jirisan trip', member_ids: ids})", [bob.user["user_id"]])
        assert chat["owner_id"] == me
        cboard = await bob.call("board.get", chat_id=chat["chat_id"])
        await bob.call("board.post_create", board_id=cboard["board_id"], title="Bus tickets", body="I'll buy them")
        await alice.click("[data-tab=chats]")
        await alice.locator(".chat-item", has_text="Jirisan trip").click()
        await alice.click("#btn-chat-info")
        await alice.locator("#dialog .board-btn").click()
        chost = alice.locator("#dialog .board-host")
        await chost.locator(".b-link", has_text="Bus tickets").click()
        await expect(chost.locator(".post-title")).to_have_text("Bus tickets", timeout=T)
        await expect(chost.locator(".post-actions .post-edit")).to_have_count(0)
        # Alice's own post in the chat board: edit it from the page.
        await chost.locator(".post-actions button", has_text="List").click()
        await chost.locator(".board-head button", has_text="Write").click()
        await chost.locator(".board-write [name=title]").fill("Meeting point")
        await chost.locator(".board-write button[type=submit]").click()
        await expect(chost.locator(".post-title")).to_have_text("Meeting point", timeout=T)
        await chost.locator(".post-actions .post-edit").click()
        await chost.locator(".board-write [name=body]").fill("Dong Seoul bus terminal, gate 3")
        await chost.locator(".board-write button[type=submit]").click()
        await expect(chost.locator(".post-body")).to_have_text("Dong Seoul bus terminal, gate 3", timeout=T)
        posts = await bob.call("board.posts", board_id=cboard["board_id"])
        mine = next(p for p in posts["posts"] if p["title"] == "Meeting point")
        assert (await bob.call("board.post", post_id=mine["post_id"]))["body"] == "Dong Seoul bus terminal, gate 3"
        # Back to Bob's post: the owner deletes it.
        await chost.locator(".post-actions button", has_text="List").click()
        await chost.locator(".b-link", has_text="Bus tickets").click()
        await expect(chost.locator(".post-title")).to_have_text("Bus tickets", timeout=T)
        await chost.locator(".post-actions .post-delete").click()
        await chost.locator(".post-confirm .confirm-ok").click()
        await expect(chost.locator(".board-table .b-link")).to_have_text(["Meeting point"], timeout=T)
        assert [p["title"] for p in (await bob.call("board.posts", board_id=cboard["board_id"]))["posts"]] == [
            "Meeting point"]
        assert not alice.errors  # type: ignore[attr-defined]
    finally:
        await op.close()
        await bob.close()
