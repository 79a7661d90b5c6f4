"""Devices (distinct and editable names, "online" from live connections) and phone numbers that
match across formats (phonenumbers, E.164), over the SDK, the CLI and in Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from dari.client import Client
from dari.client.client import phone_hash
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD, ServerProcess
from tests.test_scaleout import nodes  # noqa: F401  (fixture)
from tests.test_storage_contract import pg_url  # noqa: F401  (fixture used by nodes)

T = 20_000   # ms: generous waits on a loaded machine


async def _devices(c: Client) -> dict[int, dict[str, Any]]:
    return {d["device_id"]: d for d in await c.call("device.list")}


async def _wait_for(pred: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_distinct_names_rename_and_live_online(server: ServerProcess) -> None:
    handle = f"dana_{uuid.uuid4().hex[:6]}"
    first, second = Client(server.url), Client(server.url)
    try:
        await first.signup(handle, "Dana", PASSWORD, device_name="Chrome on Linux", device_kind="browser")
        await first.wait_live()
        await second.login(handle, PASSWORD, device_name="Chrome on Linux", device_kind="cli")
        await second.wait_live()
        devs = await _devices(first)
        assert devs[first.device_id]["name"] == "Chrome on Linux"
        assert devs[second.device_id]["name"] == "Chrome on Linux (2)"    # distinct default
        assert devs[second.device_id]["kind"] == "cli" and devs[first.device_id]["kind"] == "browser"
        assert devs[first.device_id]["current"] and not devs[second.device_id]["current"]
        assert devs[first.device_id]["online"] and devs[second.device_id]["online"]
        added = await first.next_event("device.added")
        assert added.payload == {"device_id": second.device_id, "name": "Chrome on Linux (2)"}

        # Rename: validated, bounded, unique in the account, and told to the other devices.
        for name, code in (("   ", ErrorCode.INVALID_PARAMS), ("x" * 65, ErrorCode.INVALID_PARAMS),
                           ("Chrome on Linux", ErrorCode.CONFLICT)):
            with pytest.raises(DariError) as info:
                await second.call("device.rename", device_id=second.device_id, name=name)
            assert info.value.code == code, name
        res = await second.call("device.rename", device_id=second.device_id, name="  Dana's\nlaptop ")
        assert res["name"] == "Dana's laptop" and res["current"] and res["online"]
        ev = await first.next_event("device.renamed")
        assert ev.payload == {"device_id": second.device_id, "name": "Dana's laptop"}
        assert (await _devices(first))[second.device_id]["name"] == "Dana's laptop"

        # Someone else's device is not yours to rename.
        other = Client(server.url)
        try:
            await other.signup(f"eve_{uuid.uuid4().hex[:6]}", "Eve", PASSWORD)
            with pytest.raises(DariError) as info:
                await other.call("device.rename", device_id=first.device_id, name="mine now")
            assert info.value.code == ErrorCode.NOT_FOUND
        finally:
            await other.close()
        assert (await _devices(first))[first.device_id]["name"] == "Chrome on Linux"

        # "online" is the server's live connection, not a recent last_seen_at: it goes at once.
        second_id = second.device_id
        await asyncio.sleep(0.05)
        left_after = int(time.time() * 1000)
        await second.close()
        ev = await first.next_event("device.presence", timeout=T / 1000)
        while ev.payload["device_id"] != second_id or ev.payload["online"]:
            ev = await first.next_event("device.presence", timeout=T / 1000)
        gone = (await _devices(first))[second_id]
        assert not gone["online"]
        assert gone["last_seen_at"] >= left_after    # when it left, not when it connected
    finally:
        await first.close()
        await second.close()


async def test_phone_formats_match_and_bad_numbers_are_refused(server: ServerProcess) -> None:
    carol, dave = Client(server.url), Client(server.url)
    try:
        await carol.signup(f"carol_{uuid.uuid4().hex[:6]}", "Carol", PASSWORD)
        await dave.signup(f"dave_{uuid.uuid4().hex[:6]}", "Dave", PASSWORD)
        # What the web page does: the raw number and its region, normalized by the server.
        me = await carol.call("account.set_phone_number", phone="010-1234-5678", region="kr")
        assert me["has_phone"] is True
        key = (await dave.call("server.info"))["contact_key"]
        # The SDK's hash of the international form equals what the server stored.
        assert phone_hash(key, "+82 10-1234-5678", "US") == phone_hash(key, "010 1234 5678", "KR")
        for number, region in (("+82 10-1234-5678", "US"), ("+821012345678", "JP"), ("01012345678", "KR")):
            hashes = await dave.contact_hashes([number], region=region)
            found = await dave.call("friend.find_by_contacts", phone_hashes=hashes)
            assert [u["user_id"] for u in found] == [carol.user["user_id"]], number
        found = await dave.call("friend.find_by_phones", phones=["+82 10 1234 5678"], region="JP")
        assert [u["user_id"] for u in found] == [carol.user["user_id"]]
        # A Korean mobile number read as a US one is another number.
        assert phone_hash(key, "010-1234-5678", "KR") != phone_hash(key, "+1 650-253-0000", "US")

        for params, words in (({"phone": "12", "region": "KR"}, "not a valid phone number"),
                              ({"phone": "hello", "region": "KR"}, "not a phone number"),
                              ({"phone": "010-1234-5678", "region": "QQ"}, "unknown region")):
            with pytest.raises(DariError) as info:
                await carol.call("account.set_phone_number", **params)
            assert info.value.code == ErrorCode.INVALID_PARAMS and words in info.value.message, params
        with pytest.raises(DariError) as info:
            await dave.contact_hashes(["555"], region="KR")
        assert info.value.code == ErrorCode.INVALID_PARAMS
        # Refused numbers changed nothing: Carol is still found.
        found = await dave.call("friend.find_by_phones", phones=["010-1234-5678"], region="KR")
        assert [u["user_id"] for u in found] == [carol.user["user_id"]]
        assert (await carol.call("account.set_phone", phone_hash=None))["has_phone"] is False
        assert await dave.call("friend.find_by_phones", phones=["010-1234-5678"], region="KR") == []
    finally:
        await carol.close()
        await dave.close()


async def test_device_online_across_nodes(nodes: Any) -> None:  # noqa: F811
    """With several processes, a device connected to another node is online too (Redis presence)."""
    n1, n2 = nodes(2)
    handle = f"jun_{uuid.uuid4().hex[:6]}"
    here, there = Client(n1.url), Client(n2.url)
    try:
        await here.signup(handle, "Jun", PASSWORD, device_name="here")
        await here.wait_live()
        await there.login(handle, PASSWORD, device_name="there")
        await there.wait_live()
        ev = await here.next_event("device.presence", timeout=T / 1000)     # over the bus
        while ev.payload["device_id"] != there.device_id:                     # (here's own came first)
            ev = await here.next_event("device.presence", timeout=T / 1000)
        assert ev.payload["online"] is True

        async def there_online() -> bool:
            return bool((await _devices(here))[there.device_id]["online"])
        await _wait_for(there_online, "the other node's device to be listed online")
        there_id = there.device_id
        await there.close()

        async def there_offline() -> bool:
            return not (await _devices(here))[there_id]["online"]
        await _wait_for(there_offline, "the other node's device to go offline")
    finally:
        await here.close()
        await there.close()


# -- the CLI ----------------------------------------------------------------------------------------
def _cli(home: Path, server: ServerProcess, *args: str, ok: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dari.cli.main", *args, "--server", server.url],
                          capture_output=True, text=True, timeout=90,
                          env={**os.environ, "DARI_HOME": str(home), "DARI_PASSWORD": PASSWORD, "COLUMNS": "200",
                               "LANG": "C.UTF-8", "LC_ALL": "", **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, f"dari {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_cli_device_rename_list_and_phone_formats(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    handle = f"frank_{uuid.uuid4().hex[:6]}"
    _cli(home, server, "account", "signup", handle, "--device", "office", "--profile", "a")
    _cli(home, server, "account", "login", handle, "--device", "office", "--profile", "b")
    devices = json.loads(_cli(home, server, "device", "list", "--json", "--profile", "a").stdout)
    by_name = {d["name"]: d for d in devices}
    assert set(by_name) == {"office", "office (2)"} and {d["kind"] for d in devices} == {"cli"}
    second = by_name["office (2)"]["device_id"]

    out = _cli(home, server, "device", "rename", str(second), "home PC", "--profile", "a").stdout
    assert "now named home PC" in out
    bad = _cli(home, server, "device", "rename", str(second), "office", "--profile", "a", ok=False)
    assert bad.returncode != 0 and "already named 'office'" in bad.stdout + bad.stderr
    table = _cli(home, server, "device", "list", "--profile", "a").stdout
    # Profile b is not connected now: it was last seen; profile a is this very connection.
    assert re.search(r"home PC\s+cli\s+last seen \d", table), table
    assert re.search(r"office\s+cli\s+this device\s+online", table), table

    # Phone numbers: set in Korean national format, found in international format (and back).
    other = f"grace_{uuid.uuid4().hex[:6]}"
    _cli(home, server, "account", "signup", other, "--profile", "g", "--phone", "+82 10-9876-5432")
    _cli(home, server, "account", "phone", "010-1234-5678", "--region", "KR", "--profile", "a")
    found = json.loads(_cli(home, server, "friend", "find", "+82 10-1234-5678", "010-9876-5432",
                            "--region", "KR", "--json", "--profile", "g").stdout)
    assert [u["handle"] for u in found] == [handle]
    found = json.loads(_cli(home, server, "friend", "find", "010 9876 5432", "--json", "--profile", "a",
                            env={"DARI_REGION": "KR"}).stdout)
    assert [u["handle"] for u in found] == [other]

    bad = _cli(home, server, "account", "phone", "12345", "--region", "KR", "--profile", "a", ok=False)
    assert bad.returncode != 0 and "not a valid phone number in region KR" in bad.stdout + bad.stderr
    bad = _cli(home, server, "friend", "find", "010-1234-5678", "--region", "XX", "--profile", "g", ok=False)
    assert bad.returncode != 0 and "unknown region 'XX'" in bad.stdout + bad.stderr


# -- Chromium ---------------------------------------------------------------------------------------
async def _page(browser: Browser) -> tuple[Any, Page, list[str]]:
    ctx = await browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return ctx, page, errors


def _row(page: Page, name: str) -> Any:
    return page.locator("#device-list li.device-row").filter(
        has=page.locator(".device-name", has_text=re.compile(f"^{re.escape(name)}$")))


async def test_browser_approves_browser_rename_and_phone(server: ServerProcess, browser: Browser) -> None:
    ctx_a, a, errors_a = await _page(browser)
    ctx_b, b, errors_b = await _page(browser)
    handle = f"hana_{uuid.uuid4().hex[:6]}"
    await a.goto(server.url)
    await a.click("#tab-signup")
    form = a.locator("#signup-form")
    await form.locator("[name=handle]").fill(handle)
    await form.locator("[name=display_name]").fill("Hana")
    await form.locator("[name=password]").fill(PASSWORD)
    device_name = await form.locator("[name=device_name]").input_value()
    assert device_name == "Chrome on Linux"
    await form.locator("button[type=submit]").click()
    await expect(a.locator("#app")).to_be_visible(timeout=T)

    # The second browser shows a code; the first approves it from Settings, typing the code.
    await b.goto(server.url)
    await b.click("#tab-link")
    await b.locator("#link-form button[type=submit]").click()
    await expect(b.locator("#link-code")).to_have_text(re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$"), timeout=T)
    code = await b.locator("#link-code").text_content()
    assert code
    await a.click("[data-tab=settings]")
    approve = a.locator("#approve-form")
    await approve.locator("[name=code]").fill("ABCD-2345")
    await approve.locator("button[type=submit]").click()
    await expect(approve.locator(".form-error")).to_contain_text("5 minutes", timeout=T)
    await approve.locator("[name=code]").fill(code.lower())
    await approve.locator("button[type=submit]").click()
    await expect(approve.locator(".approve-done")).to_contain_text("Chrome on Linux (2)", timeout=T)
    await expect(b.locator("#app")).to_be_visible(timeout=T)

    # Both browsers list both devices as online, live.
    for page in (a, b):
        if page is b:
            await b.click("[data-tab=settings]")
        await expect(page.locator("#device-list li.device-row")).to_have_count(2, timeout=T)
        for name in ("Chrome on Linux", "Chrome on Linux (2)"):
            await expect(_row(page, name)).to_have_attribute("data-online", "true", timeout=T)
            await expect(_row(page, name).locator(".device-status")).to_have_text(" · Online")
        await expect(_row(page, "Chrome on Linux").locator(".device-kind")).to_have_text(" · Browser")

    # A renames the new browser; B's list follows without a reload.
    await _row(a, "Chrome on Linux (2)").locator(".device-rename-btn").click()
    rename = a.locator("#device-list form.device-rename input")
    await rename.fill("Chrome on Linux")
    await rename.press("Enter")
    await expect(a.locator("#device-list .form-error")).to_contain_text("already named", timeout=T)
    await rename.fill("Hana's office PC")
    await rename.press("Enter")
    await expect(_row(a, "Hana's office PC")).to_have_count(1, timeout=T)
    await expect(_row(b, "Hana's office PC")).to_have_count(1, timeout=T)
    await expect(_row(b, "Hana's office PC")).to_contain_text("this device")

    # B goes away: A shows "Last seen" for it at once, not "Online".
    await ctx_b.close()
    await expect(_row(a, "Hana's office PC")).to_have_attribute("data-online", "false", timeout=T)
    await expect(_row(a, "Hana's office PC").locator(".device-status")).to_contain_text("Last seen")

    # Phone number from the page, national format; another user's SDK finds it in international form.
    phone = a.locator("#phone-form")
    await expect(a.locator("#phone-status")).to_have_attribute("data-set", "false")
    await phone.locator("[name=phone]").fill("12345")
    await phone.locator("[name=region]").fill("KR")
    await phone.locator("button[type=submit]").click()
    await expect(phone.locator(".form-error")).to_contain_text("not a valid phone number", timeout=T)
    await expect(a.locator("#phone-status")).to_have_attribute("data-set", "false")
    await phone.locator("[name=phone]").fill("010-1234-5678")
    await phone.locator("button[type=submit]").click()
    await expect(a.locator("#phone-status")).to_have_attribute("data-set", "true", timeout=T)
    await expect(a.locator("#btn-phone-clear")).to_be_visible()
    finder = Client(server.url)
    try:
        await finder.signup(f"ian_{uuid.uuid4().hex[:6]}", "Ian", PASSWORD)
        hashes = await finder.contact_hashes(["+82 10-1234-5678"], region="US")
        found = await finder.call("friend.find_by_contacts", phone_hashes=hashes)
        assert [u["handle"] for u in found] == [handle]
        # The browser's contact search (server-side normalization) finds the SDK-set number too.
        await a.click("[data-tab=friends]")
        await a.click("#btn-contacts")
        dlg = a.locator("dialog form").filter(has=a.locator("textarea[name=phones]"))
        await finder.call("account.set_phone_number", phone="+82 10-2222-3333", region="US")
        await dlg.locator("textarea[name=phones]").fill("010-2222-3333")
        await dlg.locator("button[type=submit]").click()
        await expect(dlg.locator(".contact-results")).to_contain_text("Ian", timeout=T)
        await dlg.locator("[data-close]").click()
        # Clearing from the page: nobody finds Hana any more.
        await a.click("[data-tab=settings]")
        await a.locator("#btn-phone-clear").click()
        await expect(a.locator("#phone-status")).to_have_attribute("data-set", "false", timeout=T)
        assert await finder.call("friend.find_by_contacts", phone_hashes=hashes) == []
    finally:
        await finder.close()
    assert not errors_a and not errors_b, (errors_a, errors_b)
    await ctx_a.close()


def test_device_strings_are_translated() -> None:
    """Every key devices.js uses, the kinds included, is in all four languages and the markup's too."""
    from typing import get_args

    from dari.protocol.methods import DeviceKind

    web = Path(__file__).resolve().parent.parent / "src" / "dari" / "web"
    used = set(re.findall(r'\bt\("([\w.\-]+)"', (web / "js" / "devices.js").read_text()))
    used |= {f"devices.kind_{k}" for k in get_args(DeviceKind)}
    used |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="(devices\.[^"]+)"', (web / "index.html").read_text()))
    assert "devices.approve_title" in used and "devices.kind_browser" in used
    for code in ("en", "ko", "ja", "zh-CN"):
        strings = json.loads((web / "i18n" / f"{code}.json").read_text())
        assert not sorted(used - set(strings)), code
