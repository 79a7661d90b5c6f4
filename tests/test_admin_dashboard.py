"""The operator dashboard in Chromium: a block reported by clients shows up as it happens."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from playwright.async_api import Browser, expect

from dari.client import Client
from dari.client.reach_reports import ReportQueue
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent




async def test_operator_sees_a_block_on_the_dashboard(server_factory, browser: Browser) -> None:
    env = {"DARI_REACH_WINDOW_S": "120", "DARI_REACH_RECENT_S": "5", "DARI_REACH_EVAL_S": "0.5",
           "DARI_CONTROL_PROBE_S": "0.5", "DARI_ADMIN_HANDLES": "operator"}
    srv = server_factory(extra_env=env)
    ops, user = Client(srv.url), Client(srv.url)
    reporters = [Client(srv.url) for _ in range(6)]
    try:
        await ops.signup("operator", "Operator", PASSWORD)
        await user.signup("plain_user", "User", PASSWORD)
        for i in range(6):
            region = "CN" if i < 3 else "KR"
            q = ReportQueue(region=region, asn="AS4134" if region == "CN" else "AS4766")
            for _ in range(2):
                q.add("websocket", region == "KR", "tls", "ok" if region == "KR" else "sni-filter")
                q.add("relay:r1", True)
            await q.flush(lambda method, _c=reporters[i], **params: _c.call(method, **params))

        ctx = await browser.new_context(viewport={"width": 1200, "height": 900})
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{srv.url}/admin")
        # a plain user is refused with the server's message
        await page.get_by_label("Handle").fill("plain_user")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#login-error")).to_contain_text("operator", timeout=10_000)
        await page.get_by_label("Handle").fill("operator")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        incident = page.locator('#incidents li.open[data-region="CN"]')
        await expect(incident).to_be_visible(timeout=15_000)
        await expect(incident).to_contain_text("sni-filter")
        await expect(incident).to_contain_text("relay:r1")
        await expect(page.locator('td.cell.bad[data-region="CN"][data-route="websocket"]')).to_be_visible()
        await expect(page.locator('td.cell.ok[data-region="KR"][data-route="websocket"]')).to_be_visible()
        await expect(page.locator("#control li.ok").first).to_be_visible()
        await expect(page.locator("#charts figure")).to_have_count(4)
        await expect(page.locator("#charts svg rect.span").first).to_be_attached()
        if os.environ.get("DARI_SCREENSHOTS") == "1":   # refresh docs/screenshots only when asked
            await page.screenshot(path=str(ROOT / "docs" / "screenshots" / "admin-dashboard.png"), full_page=True)
        # the block is lifted: the incident closes on the page by itself
        for i in range(3):
            q = ReportQueue(region="CN", asn="AS4134")
            q.add("websocket", True)
            await q.flush(lambda method, _c=reporters[i], **params: _c.call(method, **params))
        await expect(page.locator('#incidents li.closed[data-region="CN"]')).to_be_visible(timeout=15_000)
        assert not errors, errors
        await ctx.close()
    finally:
        for c in (ops, user, *reporters):
            await c.close()
        await asyncio.sleep(0)
