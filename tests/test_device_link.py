"""Linking a new device (a browser) from a logged-in one: code + QR, approval by SDK, CLI or phone,
token handed over once. In Chromium: the page shows the code, the CLI approves, the page is in."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD


async def test_link_approve_poll_once(server, make_user) -> None:
    alice = await make_user("alice")
    pc = Client(server.url)
    try:
        start = await pc.call("device.link_start", device_name="Office PC")
        assert len(start["code"]) == 9 and start["code"][4] == "-"
        assert (await pc.call("device.link_poll", secret=start["secret"]))["status"] == "pending"
        async with aiohttp.ClientSession() as http, http.get(server.url + start["qr"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/svg+xml"
            assert b"<svg" in await resp.read()
        approved = await alice.call("device.link_approve", code=start["code"].lower().replace("-", ""))
        assert approved["name"] == "Office PC"
        ev = await alice.next_event("device.added")
        assert ev.payload["device_id"] == approved["device_id"]
        res = await pc.call("device.link_poll", secret=start["secret"])
        assert res["status"] == "approved" and res["user"]["user_id"] == alice.user["user_id"]
        # handed over once only
        assert (await pc.call("device.link_poll", secret=start["secret"]))["status"] == "expired"
        linked = Client(server.url, token=res["token"])
        try:
            await linked.connect()
            me = await linked.call("account.me")
            assert me["user_id"] == alice.user["user_id"]
            names = {d["name"] for d in await alice.call("device.list")}
            assert "Office PC" in names
        finally:
            await linked.close()
        with pytest.raises(DariError) as info:
            await alice.call("device.link_approve", code=start["code"])
        assert info.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(DariError) as info:
            await alice.call("device.link_approve", code="AAAA-AAAA")
        assert info.value.code == ErrorCode.NOT_FOUND and "5 minutes" in info.value.message
        with pytest.raises(DariError) as info:
            await pc.call("device.link_approve", code="AAAA-AAAA")
        assert info.value.code == ErrorCode.UNAUTHENTICATED
        assert (await pc.call("device.link_poll", secret="x" * 32))["status"] == "expired"
    finally:
        await pc.close()




async def test_browser_linked_by_cli_approval(server, tmp_path, browser: Browser) -> None:
    home = tmp_path / "cli-home"
    env = {**os.environ, "DARI_HOME": str(home), "DARI_PASSWORD": PASSWORD}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dari.cli.main", *args, "--server", server.url],
                              capture_output=True, text=True, env=env, timeout=60)

    assert cli("account", "signup", "linkowner", "--name", "Link Owner").returncode == 0, "signup failed"
    ctx = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(server.url)
    await page.locator("#tab-link").click()
    await page.locator("#link-form button[type=submit]").click()
    code_box = page.locator("#link-code")
    await expect(code_box).to_have_text(re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$"), timeout=10_000)
    await expect(page.locator("#link-qr")).to_have_attribute("src", re.compile(r"/link/qr/.+\.svg"))
    code = await code_box.text_content()
    assert code
    done = cli("device", "approve", code)
    assert done.returncode == 0, done.stderr
    assert "now logged in" in done.stdout
    # the page is logged in as the CLI's account without a password
    await expect(page.locator("#app")).to_be_visible(timeout=15_000)
    owner = Client(server.url)
    try:
        await owner.login("linkowner", PASSWORD)
        devices = await owner.call("device.list")
        assert len(devices) == 3   # the CLI, the browser, this check
    finally:
        await owner.close()
    assert not errors, errors
    await ctx.close()
