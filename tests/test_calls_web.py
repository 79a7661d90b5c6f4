"""Calls in the web client (issue 12): two Chromium pages with fake camera and microphone call each
other over WebRTC, media flows (getStats), the other device stops ringing, hang-up writes the call's
length; missed and declined calls. Then relay-only through Debian's coturn over TURN-TCP, the path
left when a network blocks UDP."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from dari.bench.turn import start_turn, turnserver_path
from dari.client import Client
from tests.conftest import CHROMIUM_ARGS, PASSWORD, ServerProcess, chromium_path
from tests.test_web import T, new_page, open_chat

WEB = Path(__file__).resolve().parent.parent / "src" / "dari" / "web"
# Fake camera and microphone, no permission prompt; and trust the self-signed certificate of the
# test's coturn TLS listener (the pages themselves are plain http on loopback).
FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--autoplay-policy=no-user-gesture-required", "--ignore-certificate-errors"]
SECRET = "test-turn-secret"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS + FAKE_MEDIA)
        yield b
        await b.close()


def need_turnserver() -> None:
    if turnserver_path() is None:
        msg = "Debian's coturn is not installed: apt-get install -y coturn"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


async def login_page(browser: Browser, url: str, handle: str) -> Page:
    _, page = await new_page(browser)
    await page.goto(url)
    form = page.locator("#login-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    return page


async def media_flows(page: Page, min_bytes: int = 2000) -> dict[str, Any]:
    """Wait until the page's peer connections have received media; returns the last stats."""
    stats: dict[str, Any] = {}
    for _ in range(150):
        stats = await page.evaluate("() => window.dari.calls.stats()")
        if stats["bytes"] >= min_bytes and stats["audioPackets"] > 0:
            return stats
        await asyncio.sleep(0.2)
    raise AssertionError(f"no media arrived: {stats}")


def system_line(page: Page, pattern: str) -> Any:
    return page.locator("li.msg.system", has_text=re.compile(pattern))


async def pair(make_user: Callable[..., Any]) -> tuple[Client, Client, int]:
    alice: Client = await make_user("alice")
    bob: Client = await make_user("bob")
    assert bob.user is not None
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    return alice, bob, int(chat["chat_id"])


@pytest.fixture
def ringing_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory({"DARI_CALL_RING_S": "6"})


@pytest.fixture
async def make_user(ringing_server: ServerProcess) -> AsyncIterator[Callable[..., Any]]:
    import uuid

    clients: list[Client] = []

    async def make(name: str) -> Client:
        c = Client(ringing_server.url)
        await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_video_call_between_two_browsers_then_missed_and_declined(
        ringing_server: ServerProcess, make_user: Callable[..., Any], browser: Browser) -> None:
    alice, bob, _ = await pair(make_user)
    assert alice.user and bob.user
    url = ringing_server.url
    a = await login_page(browser, url, alice.user["handle"])
    b1 = await login_page(browser, url, bob.user["handle"])
    b2 = await login_page(browser, url, bob.user["handle"])
    await open_chat(a, "Bob")

    # Alice calls with video; both of Bob's devices ring; Bob answers on one, the other stops.
    await a.click("#btn-call-video")
    await expect(a.locator("#call-overlay")).to_have_attribute("data-state", "calling", timeout=T)
    for page in (b1, b2):
        await expect(page.locator("#call-accept")).to_be_visible(timeout=T)
        await expect(page.locator("#call-status")).to_have_text("Incoming video call")
    await b1.click("#call-accept")
    await expect(b2.locator("#call-overlay")).to_be_hidden(timeout=T)
    for page in (a, b1):
        await expect(page.locator("#call-overlay")).to_have_attribute("data-state", "active", timeout=T)
    # Media flows both ways, video included (the fake camera's frames are kilobytes each).
    for page in (a, b1):
        stats = await media_flows(page, min_bytes=20000)
        assert stats["paths"], stats
    await expect(a.locator("#call-remote-video")).to_have_js_property("readyState", 4, timeout=T)
    await a.click("#call-mute")
    await expect(a.locator("#call-mute")).to_have_attribute("aria-pressed", "true")
    assert await a.evaluate("() => window.dari.calls.local.getAudioTracks()[0].enabled") is False
    await a.click("#call-camera")
    assert await a.evaluate("() => window.dari.calls.local.getVideoTracks()[0].enabled") is False

    await b1.click("#call-hangup")
    await expect(a.locator("#call-overlay")).to_be_hidden(timeout=T)
    await expect(system_line(a, r"^Video call \d+:\d\d$")).to_be_visible(timeout=T)

    # Nobody answers: after the ring time both sides show a missed call.
    await a.click("#btn-call-voice")
    await expect(b2.locator("#call-accept")).to_be_visible(timeout=T)
    await expect(b2.locator("#call-overlay")).to_be_hidden(timeout=20_000)
    await expect(a.locator("#call-overlay")).to_be_hidden(timeout=T)
    await open_chat(b2, "Alice")
    await expect(system_line(b2, r"^Missed voice call from Alice$")).to_be_visible(timeout=T)

    # Bob declines; Alice's page says so and the line appears.
    await a.click("#btn-call-voice")
    await expect(b1.locator("#call-decline")).to_be_visible(timeout=T)
    await b1.click("#call-decline")
    await expect(b2.locator("#call-overlay")).to_be_hidden(timeout=T)
    await expect(system_line(a, r"^Bob declined the voice call$")).to_be_visible(timeout=T)
    for page in (a, b1, b2):
        assert not page.errors, page.errors  # type: ignore[attr-defined]


@pytest.mark.parametrize("over", ["tcp", "tls"])
async def test_relay_only_over_turn_tcp_when_udp_is_blocked(server_factory: Callable[..., ServerProcess],
                                                            browser: Browser, tmp_path: Path, over: str) -> None:
    need_turnserver()
    turn = start_turn(tmp_path / "turn", SECRET, verbose=True)
    try:
        # Only a turn:...?transport=tcp (or turns: over TLS, port 443 in production) server, and every
        # candidate must be relayed: that is the only path the pages may use, as on a network that
        # drops all UDP. coturn has no UDP listener at all.
        srv = server_factory({"DARI_TURN_URLS": turn.tcp_url if over == "tcp" else turn.tls_url,
                              "DARI_TURN_SECRET": SECRET, "DARI_CALL_RELAY_ONLY": "1"})
        alice, bob = Client(srv.url), Client(srv.url)
        try:
            import uuid

            for c, n in ((alice, "alice"), (bob, "bob")):
                await c.signup(f"{n}_{uuid.uuid4().hex[:6]}", n.title(), PASSWORD)
            assert alice.user and bob.user
            await alice.call("chat.open_direct", user_id=bob.user["user_id"])
            a = await login_page(browser, srv.url, alice.user["handle"])
            b = await login_page(browser, srv.url, bob.user["handle"])
            await open_chat(a, "Bob")
            await a.click("#btn-call-voice")
            await b.click("#call-accept", timeout=T)
            for page in (a, b):
                await expect(page.locator("#call-overlay")).to_have_attribute("data-state", "active", timeout=T)
                stats = await media_flows(page)
                assert stats["paths"] and all(p == {"local": "relay", "protocol": over} for p in stats["paths"]), stats
            await a.click("#call-hangup")
            await open_chat(b, "Alice")
            await expect(system_line(b, r"^Voice call \d+:\d\d$")).to_be_visible(timeout=T)
        finally:
            await alice.close()
            await bob.close()
    finally:
        turn.stop()
    # coturn's side of it: the pages' credentials (signed by dari) were accepted over TCP.
    # coturn's side: allocations under dari-signed usernames (expiry:user_id), and media relayed.
    log = turn.log()
    assert re.search(r"user <\d+:\d+>: incoming packet ALLOCATE processed, success", log), log[-3000:]
    assert re.search(r"usage: realm=<dari>, username=<\d+:\d+>, rp=[1-9]", log), log[-3000:]


def test_call_strings_exist_in_every_language() -> None:
    import json

    langs = {code: json.loads((WEB / "i18n" / f"{code}.json").read_text()) for code in ("en", "ko", "ja", "zh-CN")}
    used = set(re.findall(r'\bt\("([\w.\-]+)"', (WEB / "js" / "calls.js").read_text()))
    used |= {f"call.state_{s}" for s in ("calling", "ringing", "connecting", "active", "failed")}
    used |= {f"system.{e}{v}" for e in ("call_ended", "call_missed", "call_declined", "call_busy")
             for v in ("", "_video")}
    for code, strings in langs.items():
        assert not sorted(used - set(strings)), code


async def test_browser_calls_the_sdk_and_audio_frames_arrive(ringing_server: ServerProcess,
                                                              make_user: Callable[..., Any], browser: Browser,
                                                              tmp_path: Path) -> None:
    from dari.client.calls import CallAgent, wait_connected

    alice, bob, _ = await pair(make_user)
    assert alice.user and bob.user
    await bob.wait_live()
    agent = CallAgent(bob, record=str(tmp_path / "heard.wav"))
    try:
        a = await login_page(browser, ringing_server.url, alice.user["handle"])
        await open_chat(a, "Bob")
        await a.click("#btn-call-voice")
        ring = await agent.wait_ringing(timeout=15)
        assert ring["caller_id"] == alice.user["user_id"] and ring["video"] is False
        await agent.answer(ring)
        await wait_connected(agent, 20)
        for _ in range(150):   # Chromium's fake microphone beeps; aiortc decodes its Opus frames
            if agent.received["audio"] >= 50:
                break
            await asyncio.sleep(0.1)
        assert agent.received["audio"] >= 50, agent.received
        await media_flows(a, min_bytes=500)   # and the SDK's audio reaches the page
        await a.click("#call-hangup")
        await asyncio.wait_for(agent.ended.wait(), 15)
        assert agent.end_reason == "hangup"
    finally:
        await agent.close()
    import wave

    with wave.open(str(tmp_path / "heard.wav")) as w:
        assert w.getnframes() > 0 and w.getframerate() > 0


async def test_group_voice_call_is_a_mesh_of_three_browsers(ringing_server: ServerProcess,
                                                           make_user: Callable[..., Any], browser: Browser) -> None:
    alice, bob, _ = await pair(make_user)
    carol: Client = await make_user("carol")
    assert alice.user and bob.user and carol.user
    await alice.call("chat.create_group", title="Trio", member_ids=[bob.user["user_id"], carol.user["user_id"]])
    url = ringing_server.url
    pages = [await login_page(browser, url, c.user["handle"]) for c in (alice, bob, carol)]  # type: ignore[index]
    a, b, c = pages
    await open_chat(a, "Trio")
    await expect(a.locator("#btn-call-video")).to_be_hidden()   # groups: voice only
    await a.click("#btn-call-voice")
    for page in (b, c):
        await expect(page.locator("#call-status")).to_have_text("Group call: join?", timeout=T)
        await page.click("#call-accept")
    # Everyone hears both others: two peer connections each, audio arriving on both.
    for page in pages:
        await expect(page.locator("#call-overlay")).to_have_attribute("data-state", "active", timeout=T)
        for _ in range(100):
            stats = await media_flows(page)
            if len(stats["peers"]) == 2 and all(p["audioPackets"] > 0 for p in stats["peers"]):
                break
            await asyncio.sleep(0.2)
        assert len(stats["peers"]) == 2 and all(p["audioPackets"] > 0 for p in stats["peers"]), stats
    await b.click("#call-hangup")
    await expect(b.locator("#call-overlay")).to_be_hidden(timeout=T)
    await expect(a.locator("#call-overlay")).to_have_attribute("data-state", "active")
    await c.click("#call-hangup")   # Alice is left alone: the call ends for her too
    await expect(a.locator("#call-overlay")).to_be_hidden(timeout=T)
    await expect(system_line(a, r"^Alice started a group call$")).to_be_visible(timeout=T)
    await expect(system_line(a, r"^Voice call \d+:\d\d$")).to_be_visible(timeout=T)
    for page in pages:
        assert not page.errors, page.errors  # type: ignore[attr-defined]
