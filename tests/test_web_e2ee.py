"""End-to-end encryption in the web page (docs/e2ee.md) against the Python SDK with E2EE on, in a
real Chromium and a real `dari serve`: texts both ways in a 1:1 and a group chat with no plaintext
in the server's data, encrypted photos both ways, a tampered envelope shown as such, equal safety
numbers, and the local search of an E2EE chat. tests/test_web_e2ee_olm.py covers the crypto
primitives against vodozemac directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.async_api import Browser, BrowserContext, Page, expect

from dari.client import Client
from dari.client.media import download_attachment, send_file
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


async def page_and_sdk_chat(browser: Browser, server: ServerProcess,  # noqa: F811
                            make_user: MakeUser) -> tuple[BrowserContext, Page, Client, int]:
    """Alice signed up in a page, Bob an SDK user, and their encrypted 1:1 chat opened from the page."""
    ctx, page = await new_page(browser)
    await signup(page, server.url, "alice")
    bob: Client = await make_user("bob")
    assert bob.user is not None
    await open_direct_with(page, bob.user["handle"])
    return ctx, page, bob, await chat_id_of(page)


async def sdk_message(c: Client, chat_id: int, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message of the chat's latest page that `pred` accepts, decrypted by the SDK;
    asks again as new messages arrive (bounded by the event wait, not by a sleep)."""
    page: dict[str, Any] = {}
    for _ in range(60):
        page = await c.call("message.history", chat_id=chat_id, limit=50)
        for m in page["messages"]:
            if pred(m):
                return dict(m)
        try:
            await c.next_event(timeout=1.0)
        except TimeoutError:
            pass
    seen = [(m["seq"], m["kind"], m["text"], m.get("e2ee_status")) for m in page.get("messages", [])]
    raise AssertionError(f"no such message in chat {chat_id}: {seen}")


def data_files(server: ServerProcess) -> list[Path]:
    return [p for p in server.data_dir.rglob("*") if p.is_file()]


def assert_no_plaintext(server: ServerProcess, *texts: str) -> None:
    for p in data_files(server):
        data = p.read_bytes()
        for text in texts:
            assert text.encode() not in data, f"{text!r} in {p}"


async def chat_id_of(page: Page) -> int:
    return int(await page.evaluate("dari.chat.chatId"))


async def test_page_and_sdk_talk_encrypted_in_direct_and_group_chats(server: ServerProcess, make_user: MakeUser,
                                                                      browser: Browser) -> None:  # noqa: F811
    _, alice = await new_page(browser)
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    carol: Client = await make_user("carol")
    assert bob.user is not None and carol.user is not None

    # 1:1: the page creates an E2EE chat; the SDK reads what the page typed and answers.
    await open_direct_with(alice, bob.user["handle"])
    badge = alice.locator("#chat-e2ee")
    await expect(badge).to_have_attribute("data-e2ee", "true", timeout=T)
    await expect(badge).to_contain_text("End-to-end encrypted")
    direct = await chat_id_of(alice)
    await send(alice, "안녕 밥, 비밀 이야기야")
    got = await sdk_message(bob, direct, lambda m: m["text"] == "안녕 밥, 비밀 이야기야")
    assert got["e2ee_status"] == "ok" and got["e2ee"]["alg"] == "megolm.v1"
    await bob.send_message(direct, "잘 받았어, 앨리스")
    await expect(message(alice, "잘 받았어, 앨리스")).to_be_visible(timeout=T)
    # An edit and a reply with a quote, both encrypted.
    await message(alice, "안녕 밥, 비밀 이야기야").hover()
    await message(alice, "안녕 밥, 비밀 이야기야").locator("[data-act=edit]").click()
    await alice.locator("#composer").fill("안녕 밥, 고친 비밀")
    await alice.locator("#composer").press("Enter")
    await expect(message(alice, "안녕 밥, 고친 비밀")).to_be_visible(timeout=T)
    await sdk_message(bob, direct, lambda m: m["text"] == "안녕 밥, 고친 비밀")
    await message(alice, "잘 받았어, 앨리스").hover()
    await message(alice, "잘 받았어, 앨리스").locator("[data-act=reply]").click()
    await send(alice, "reply under seal")
    mine = message(alice, "reply under seal")
    await expect(mine.locator(".quote-text")).to_have_text("잘 받았어, 앨리스", timeout=T)
    reply = await sdk_message(bob, direct, lambda m: m["text"] == "reply under seal")
    assert reply["reply_to"] is not None
    # The chat list's preview is decrypted too.
    row = alice.locator(".chat-item", has=alice.locator(".chat-name", has_text="Bob"))
    await expect(row.locator(".chat-preview")).to_have_text("reply under seal", timeout=T)

    # Group: created by the page with two SDK members; everyone reads everyone.
    await add_friend(alice, carol.user["handle"])
    await alice.keyboard.press("Escape")
    await alice.click("[data-tab=chats]")
    await alice.click("#btn-new-chat")
    dlg = alice.locator("#dialog form[data-form=group]")
    await dlg.locator("[name=title]").fill("Sealed trio")
    await dlg.locator(".pick", has_text="Bob").locator("input").check()
    await dlg.locator(".pick", has_text="Carol").locator("input").check()
    await dlg.locator("button[type=submit]").click()
    await expect(alice.locator("#chat-title")).to_have_text("Sealed trio", timeout=T)
    await expect(badge).to_have_attribute("data-e2ee", "true", timeout=T)
    group = await chat_id_of(alice)
    await send(alice, "@Carol 모두 안녕")
    for c in (bob, carol):
        await sdk_message(c, group, lambda m: m["text"] == "@Carol 모두 안녕")
    await carol.send_message(group, "캐럴도 안녕")
    await bob.send_message(group, "밥도 왔어")
    await expect(message(alice, "캐럴도 안녕")).to_be_visible(timeout=T)
    await expect(message(alice, "밥도 왔어")).to_be_visible(timeout=T)
    # The SDK members read each other too (their sessions are shared with each other's devices).
    await sdk_message(carol, group, lambda m: m["text"] == "밥도 왔어")
    # Carol is removed: the page's next message starts a new Megolm session (she never gets its key).
    await alice.click("#btn-chat-info")
    await alice.locator("#dialog .member-list li", has_text="Carol").get_by_role("button", name="Remove").click()
    await expect(alice.locator("li.msg.system", has_text="removed")).to_be_visible(timeout=T)
    await send(alice, "after carol left")
    await sdk_message(bob, group, lambda m: m["text"] == "after carol left")
    with sqlite3.connect(server.data_dir / "dari.db") as db:
        sessions = [json.loads(e)["session_id"] for (e,) in db.execute(
            "SELECT e2ee FROM messages WHERE chat_id = ? AND sender_id = ? AND kind = 'encrypted' ORDER BY seq",
            (group, int(await alice.evaluate("dari.session.user.user_id"))))]
    assert len(sessions) == 2 and sessions[0] != sessions[1]

    # What the server keeps is ciphertext only.
    assert_no_plaintext(server, "비밀 이야기", "고친 비밀", "잘 받았어", "reply under seal", "모두 안녕", "캐럴도 안녕",
                        "밥도 왔어", "after carol left")
    with sqlite3.connect(server.data_dir / "dari.db") as db:
        rows = db.execute("SELECT kind, text, e2ee FROM messages WHERE chat_id IN (?, ?) AND kind <> 'system'",
                          (direct, group)).fetchall()
    assert rows and all(k == "encrypted" and t == "" and json.loads(e)["alg"] == "megolm.v1" for k, t, e in rows)
    assert not alice.errors  # type: ignore[attr-defined]


def jpeg_with_gps() -> bytes:
    img = Image.open(io.BytesIO(landscape_png(640, 480))).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"   # Make
    exif[0x8825] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 40.0)}   # GPS
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


async def test_encrypted_photos_both_ways_and_a_tampered_envelope(server: ServerProcess, make_user: MakeUser,
                                                                  browser: Browser) -> None:  # noqa: F811
    _, alice, bob, chat_id = await page_and_sdk_chat(browser, server, make_user)

    # Page -> SDK: the photo is re-encoded (EXIF and GPS gone), encrypted, uploaded as random bytes.
    photo = jpeg_with_gps()
    assert Image.open(io.BytesIO(photo)).getexif()
    await alice.set_input_files("#file-input", files=[png_file("summit.jpg", photo, "image/jpeg")])
    await alice.locator("#dialog form [name=caption]").fill("정상에서")
    await alice.locator("#dialog form button[type=submit]").click()
    sent = message(alice, "정상에서")
    await blob_src(sent.locator(".media-thumb img"))
    got = await sdk_message(bob, chat_id, lambda m: m["kind"] == "image")
    assert got["text"] == "정상에서"
    att = got["attachment"]
    data = await download_attachment(bob, att)
    assert hashlib.sha256(data).hexdigest() == att["sha256"]
    img = Image.open(io.BytesIO(data))
    assert img.size == (640, 480) and not img.getexif()
    assert att["size"] == len(data) and att["mime"] == "image/jpeg"

    # SDK -> page.
    png = landscape_png(300, 200)
    sdk_sent = await send_file(bob, chat_id, png, name="from-sdk.png", caption="SDK photo", kind="image")
    theirs = message(alice, "SDK photo")
    await blob_src(theirs.locator(".media-thumb img"))
    assert await theirs.locator(".media-thumb img").evaluate("img => img.naturalWidth") == 300
    assert_no_plaintext(server, "정상에서", "SDK photo", "SpyCam")
    # The two photos' blobs on the server's disk are random bytes (sticker packs' pictures are not ours).
    for blob_id in (att["blob_id"], sdk_sent["attachment"]["blob_id"]):
        [stored] = [p for p in data_files(server) if p.name == blob_id]
        head = stored.read_bytes()[:8]
        assert not head.startswith(b"\x89PNG") and not head.startswith(b"\xff\xd8\xff")

    # A stored envelope altered on the server: the page says the message could not be decrypted, and why.
    await bob.send_message(chat_id, "this one gets altered")
    await expect(message(alice, "this one gets altered")).to_be_visible(timeout=T)
    seq = (await sdk_message(bob, chat_id, lambda m: m["text"] == "this one gets altered"))["seq"]
    with sqlite3.connect(server.data_dir / "dari.db", timeout=30) as db:
        row = db.execute("SELECT e2ee FROM messages WHERE chat_id = ? AND seq = ?", (chat_id, seq)).fetchone()
        env = json.loads(row[0])
        ct = env["ciphertext"]
        env["ciphertext"] = ct[:20] + ("A" if ct[20] != "A" else "B") + ct[21:]
        db.execute("UPDATE messages SET e2ee = ? WHERE chat_id = ? AND seq = ?", (json.dumps(env), chat_id, seq))
    await alice.reload()
    bad = alice.locator(f'li.msg[data-seq="{seq}"] .e2ee-failed')
    await expect(bad).to_contain_text("This message could not be decrypted", timeout=T)
    await expect(bad).to_have_attribute("data-reason", "tampered")
    await expect(message(alice, "this one gets altered")).to_have_count(0)
    # A corrupted envelope sent by a client that does not encrypt: the same notice.
    raw = Client(server.url, e2ee=False)
    try:
        await raw.login(bob.user["handle"], "correct horse battery", device_name="raw")
        forged = {**env, "ciphertext": "AwgAEiD" + "x" * 60}
        await raw.call("message.send", chat_id=chat_id, client_id="forged-1", e2ee=forged)
    finally:
        await raw.close()
    forged_row = alice.locator("li.msg[data-seq] .e2ee-failed").last
    await expect(alice.locator("li.msg[data-seq] .e2ee-failed")).to_have_count(2, timeout=T)
    await expect(forged_row).to_have_attribute("data-reason", re.compile("tampered|wrong_sender"))
    assert not alice.errors  # type: ignore[attr-defined]


async def test_safety_numbers_match_the_sdk_and_local_search_finds_korean(server: ServerProcess, make_user: MakeUser,
                                                                         browser: Browser) -> None:  # noqa: F811
    _, alice, bob, chat_id = await page_and_sdk_chat(browser, server, make_user)
    await bob.send_message(chat_id, "내일 한강공원에서 만나요")
    await expect(message(alice, "내일 한강공원에서 만나요")).to_be_visible(timeout=T)

    # Safety numbers: the page and the SDK show the same 60 digits.
    await alice.click("#chat-e2ee")
    digits = alice.locator("#dialog .safety-digits")
    await expect(digits.locator(".safety-group")).to_have_count(12, timeout=T)
    shown = await digits.get_attribute("data-digits")
    alice_id = int(await alice.evaluate("dari.session.user.user_id"))
    sdk = await bob.safety_number(alice_id)
    assert shown == re.sub(r"\D", "", str(sdk["safety_number"]))
    assert len(shown or "") == 60
    await expect(alice.locator("#dialog .safety-qr")).to_have_attribute(
        "src", re.compile(r"^/qr/verify\.svg\?d=dari-verify"))
    qr = await alice.evaluate("async () => (await fetch(document.querySelector('#dialog .safety-qr').src))"
                              ".status")
    assert qr == 200
    await expect(alice.locator("#dialog .safety-status")).to_have_text("Not verified yet")
    await alice.locator("#dialog .safety-verify").click()
    await expect(alice.locator("#dialog .safety-status")).to_have_text("Verified")
    await alice.keyboard.press("Escape")

    # Bob signs in by password on a new device and resets his encryption there (no device to share
    # the keys from): a new master key. The chat says his security code changed, and he is no longer
    # verified. (A password login alone no longer makes a new master key: test_web_e2ee_login.py.)
    again = Client(server.url)
    try:
        await again.login(bob.user["handle"], PASSWORD, device_name="new phone")
        await again.reset_e2ee()
        await expect(alice.locator("li.key-change")).to_have_text("Bob's security code changed", timeout=T)
        await alice.click("#chat-e2ee")
        await expect(alice.locator("#dialog .safety-status")).to_have_text("Not verified yet", timeout=T)
        assert await alice.locator("#dialog .safety-digits").get_attribute("data-digits") != shown
        await alice.keyboard.press("Escape")
    finally:
        await again.close()

    # Local search: the server cannot search this chat; the page's own index finds a substring.
    await alice.locator("#search-input").fill("한강공원")
    hits = alice.locator("#search-results .hit")
    await expect(hits).to_have_count(1, timeout=T)
    await expect(hits.first.locator(".hit-text")).to_have_text("내일 한강공원에서 만나요")
    assert_no_plaintext(server, "한강공원")   # nor could the server's index have found it
    await hits.first.click()
    await expect(message(alice, "내일 한강공원에서 만나요")).to_be_visible(timeout=T)

    # Logging out removes this device's keys, sessions and index from the browser.
    dbs = "async () => (await indexedDB.databases()).map(d => d.name).filter(n => n.startsWith('dari-e2ee-'))"
    assert len(await alice.evaluate(dbs)) == 1
    await alice.click("[data-tab=settings]")
    await alice.click("#btn-logout")
    await alice.click(".confirm-ok")
    await expect(alice.locator("#auth")).to_be_visible(timeout=T)
    await alice.wait_for_function(f"({dbs})().then(n => n.length === 0)", timeout=T)
    assert not alice.errors  # type: ignore[attr-defined]


async def test_a_page_linked_from_the_sdk_reads_the_encrypted_history(server: ServerProcess, make_user: MakeUser,
                                                                     browser: Browser) -> None:  # noqa: F811
    bob: Client = await make_user("bob")
    carol: Client = await make_user("carol")
    assert bob.user is not None and carol.user is not None
    chat = await carol.open_direct(bob.user["user_id"])
    await carol.send_message(chat["chat_id"], "before the browser existed")
    await sdk_message(bob, chat["chat_id"], lambda m: m["text"] == "before the browser existed")

    # The page links itself to Bob's account with a code the SDK approves; the SDK then hands it the
    # master key and the chat's keys (link_request, link_transfer).
    _, page = await new_page(browser)
    await page.goto(server.url)
    await page.click("#tab-link")
    await page.locator("#link-form [name=device_name]").fill("Bob's browser")
    await page.locator("#link-form button[type=submit]").click()
    code = page.locator("#link-code")
    await expect(code).to_have_text(re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$"), timeout=T)
    await bob.call("device.link_approve", code=await code.inner_text())
    await expect(page.locator("#app")).to_be_visible(timeout=T)
    await page.locator(".chat-item", has=page.locator(".chat-name", has_text="Carol")).click()
    await expect(message(page, "before the browser existed")).to_be_visible(timeout=T)

    # Its bundle is signed by Bob's master key: Carol and Bob's SDK get its room keys and read it.
    await send(page, "hello from the linked browser")
    for c in (carol, bob):
        await sdk_message(c, chat["chat_id"], lambda m: m["text"] == "hello from the linked browser")
    await carol.send_message(chat["chat_id"], "hi, browser")
    await expect(message(page, "hi, browser")).to_be_visible(timeout=T)
    assert not page.errors  # type: ignore[attr-defined]


async def test_a_message_whose_key_comes_late_is_decrypted_when_it_arrives(server: ServerProcess, make_user: MakeUser,
                                                                          browser: Browser) -> None:  # noqa: F811
    _, alice = await new_page(browser)
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    assert bob.user is not None and bob.e2ee is not None
    await open_direct_with(alice, bob.user["handle"])
    chat_id = await chat_id_of(alice)

    # Bob's room key is held back (the real to-device send, called later): the page gets the message
    # first and says its key has not arrived.
    held: list[tuple[Any, ...]] = []
    send_olm = bob.e2ee._send_olm

    async def hold(*args: Any) -> Any:
        held.append(args)
        return args[0]

    bob.e2ee._send_olm = hold  # type: ignore[method-assign]
    await bob.send_message(chat_id, "the key comes later")
    bob.e2ee._send_olm = send_olm  # type: ignore[method-assign]
    assert held
    waiting = alice.locator("li.msg[data-seq] .e2ee-failed")
    await expect(waiting).to_have_attribute("data-reason", "unknown_session", timeout=T)
    await expect(waiting).to_contain_text("its key has not arrived yet")
    for args in held:
        await send_olm(*args)
    await expect(message(alice, "the key comes later")).to_be_visible(timeout=T)
    await expect(waiting).to_have_count(0)
    row = alice.locator(".chat-item", has=alice.locator(".chat-name", has_text="Bob"))
    await expect(row.locator(".chat-preview")).to_have_text("the key comes later", timeout=T)
    assert not alice.errors  # type: ignore[attr-defined]


async def test_open_chats_say_they_are_not_end_to_end_encrypted(server: ServerProcess, make_user: MakeUser,
                                                                browser: Browser) -> None:  # noqa: F811
    owner: Client = await make_user("owner")
    room = await owner.call("chat.create_open", title="Busan cyclists", nickname="Captain")
    _, page = await new_page(browser)
    await signup(page, server.url, "eve")
    await page.click("#btn-new-chat")
    await page.click("[data-mode=join]")
    form = page.locator("#dialog form[data-form=join]")
    await form.locator("[name=link_code]").fill(room["link_code"])
    await form.locator("[name=nickname]").fill("Wheelie")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#chat-title")).to_have_text("Busan cyclists", timeout=T)
    badge = page.locator("#chat-e2ee")
    await expect(badge).to_have_text("Not end-to-end encrypted", timeout=T)
    await expect(badge).to_have_attribute("data-e2ee", "false")
    await expect(badge).to_be_disabled()
    await send(page, "plain as day")
    await sdk_message(owner, room["chat_id"], lambda m: m["text"] == "plain as day")
    assert [h["text"] for h in await owner.call("message.search", query="plain")] == ["plain as day"]
    assert not page.errors  # type: ignore[attr-defined]


async def test_two_tabs_of_one_device_take_turns_with_its_keys(server: ServerProcess, make_user: MakeUser,
                                                               browser: Browser) -> None:  # noqa: F811
    ctx, first, bob, chat_id = await page_and_sdk_chat(browser, server, make_user)
    second = await ctx.new_page()   # the same browser: the same token, device and key database
    await second.goto(f"{server.url}/#chat={chat_id}")
    await expect(second.locator("#chat-e2ee")).to_have_attribute("data-e2ee", "true", timeout=T)

    # Each tab sends in turn; each must continue the Megolm session the other one advanced, or Bob
    # would see one index used twice (and reject a message as replayed).
    for i, tab in enumerate((second, first, second, first)):
        await send(tab, f"turn {i}")
        await expect(message(tab, f"turn {i}")).to_be_visible(timeout=T)
    await sdk_message(bob, chat_id, lambda m: m["text"] == "turn 3")
    page = await bob.call("message.history", chat_id=chat_id, limit=10)
    assert [(m["text"], m["e2ee_status"]) for m in page["messages"]] == [(f"turn {i}", "ok") for i in range(4)]
    await bob.send_message(chat_id, "both tabs read this")
    for tab in (first, second):
        await expect(message(tab, "both tabs read this")).to_be_visible(timeout=T)
