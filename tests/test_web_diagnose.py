"""The web page explains a failing connection (diagnose.js, diag_panel.js) and works as an installed,
offline-capable app (sw.js, manifest.webmanifest) (issue 13). Real `dari serve`, Debian's Chromium
through Playwright; routes are blocked with Playwright's routing, the server is really stopped."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, Route, WebSocketRoute, async_playwright, expect

from dari.client import Client
from tests.conftest import CHROMIUM_ARGS, PASSWORD, ServerProcess, chromium_path
from tests.test_web import T, new_page, signup

ADMIN_ENV = {"DARI_ADMIN_HANDLES": "operator"}


async def reach_table(srv: ServerProcess) -> dict[str, Any]:
    """admin.reach's table for region ZZ (the page declares no region), as the operator sees it."""
    ops = Client(srv.url, reconnect=False)
    try:
        try:
            await ops.login("operator", PASSWORD)
        except Exception:
            await ops.signup("operator", "Operator", PASSWORD)
        got = await ops.call("admin.reach", minutes=60)
        return dict(got["table"].get("ZZ", {}))
    finally:
        await ops.close()


async def wait_reach(srv: ServerProcess, check: Callable[[dict[str, Any]], bool],
                     timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    table: dict[str, Any] = {}
    while time.monotonic() < deadline:
        table = await reach_table(srv)
        if check(table):
            return table
        await asyncio.sleep(0.5)
    raise AssertionError(f"reach reports never arrived as expected: {table}")


def panel(page: Page) -> Any:
    return page.locator("#conn-diag")


async def test_websocket_blocked_is_explained_and_reported_over_long_poll(
        server_factory: Callable[..., ServerProcess], browser: Browser) -> None:
    srv = server_factory(extra_env=ADMIN_ENV)
    ctx, page = await new_page(browser)
    await signup(page, srv.url, "alice")
    await expect(page.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)
    await expect(panel(page)).to_be_hidden()   # nothing to explain on the preferred route

    blocked = True

    async def route_ws(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
        else:
            ws.connect_to_server()

    await page.route_web_socket(re.compile(r".*/ws$"), route_ws)
    await page.reload()
    await expect(page.locator("#conn .conn-label")).to_contain_text("long-poll", timeout=T)
    box = panel(page)
    await expect(box).to_be_visible(timeout=T)
    await expect(box.locator(".diag-head")).to_have_text(
        "WebSocket is blocked on this network; plain HTTP to the server works.", timeout=T)
    await expect(box.locator(".diag-doing")).to_contain_text("Using long-poll")
    verdict = await box.get_attribute("data-verdict")
    assert verdict in ("http-filter", "dpi-reset"), verdict
    await expect(box.locator(".diag-why")).to_contain_text(f"({verdict})")
    await expect(box.locator(".diag-routes li[data-route=websocket]")).to_have_attribute("data-ok", "false")
    await expect(box.locator(".diag-routes li[data-route=long-poll]")).to_have_attribute("data-ok", "true")

    # The diagnosis went to the server over the route that works (long-poll): operators see it.
    table = await wait_reach(srv, lambda t: t.get("websocket", {}).get("fail", 0) >= 1)
    assert verdict in table["websocket"]["classes"], table
    assert table["long-poll"]["ok"] >= 1, table

    # Dismissed, it stays away while nothing changes (the countdown keeps re-rendering it).
    await box.locator(".diag-close").click()
    await expect(box).to_be_hidden()
    await page.wait_for_timeout(1500)
    await expect(box).to_be_hidden()

    # Unblocked: the session goes back to the WebSocket and the panel goes away.
    blocked = False
    await page.evaluate("localStorage.setItem('dari.upgrade_ms', '1500')")
    await page.reload()
    await expect(page.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)
    await expect(box).to_be_hidden(timeout=T)
    assert not page.errors  # type: ignore[attr-defined]
    await ctx.close()


async def test_server_stopped_is_explained_with_retries_and_reported_when_back(
        server_factory: Callable[..., ServerProcess], browser: Browser) -> None:
    srv = server_factory(extra_env=ADMIN_ENV)
    ctx, page = await new_page(browser)
    await signup(page, srv.url, "alice")
    srv.stop()
    box = panel(page)
    await expect(box.locator(".diag-head")).to_have_text("The server cannot be reached by any route.", timeout=T)
    await expect(box).to_have_attribute("data-verdict", "tcp-reset")
    await expect(box.locator(".diag-why")).to_contain_text("refused or reset")
    await expect(box.locator(".diag-doing")).to_have_text(re.compile(r"^(Retrying in \d+ s\.|Retrying now…)"))
    await expect(box.locator(".diag-doing")).to_contain_text("Retrying in", timeout=T)
    await expect(box.locator(".diag-routes li[data-ok=false]")).to_have_count(2)
    queued = await page.evaluate("JSON.parse(localStorage.getItem('dari.reach_queue') || '[]')")
    assert {(s["route"], s["class"]) for s in queued} == {("websocket", "tcp-reset"), ("long-poll", "tcp-reset")}

    srv.start()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=T)
    await expect(box).to_be_hidden(timeout=T)
    table = await wait_reach(srv, lambda t: t.get("websocket", {}).get("classes", {}).get("tcp-reset", 0) >= 1
                             and t["websocket"].get("ok", 0) >= 1)
    assert table["long-poll"]["classes"].get("tcp-reset", 0) >= 1, table
    await page.wait_for_function("() => localStorage.getItem('dari.reach_queue') === '[]'", timeout=T)
    assert not page.errors  # type: ignore[attr-defined]
    await ctx.close()


async def test_server_answering_5xx_is_server_trouble_not_a_block(server: ServerProcess, browser: Browser) -> None:
    """A reverse proxy in front of a broken server: HTTP answers 503 and neither realtime route
    opens. The page says the server is in trouble, which is not a block, in Korean."""
    ctx, page = await new_page(browser, locale="ko-KR")
    await signup(page, server.url, "alice")

    async def trouble(route: Route) -> None:
        await route.fulfill(status=503, body="upstream unavailable")

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close()

    await page.route(re.compile(r".*/(healthz|lp/.*)$"), trouble)
    await page.route_web_socket(re.compile(r".*/ws$"), refuse)
    await page.evaluate("window.dari.session._ws?.close()")
    box = panel(page)
    await expect(box).to_have_attribute("data-verdict", "server-down", timeout=T)
    await expect(box.locator(".diag-head")).to_have_text("서버에 문제가 있습니다(HTTP 503). 네트워크 차단이 아닙니다.")
    await expect(box.locator(".diag-doing")).to_contain_text("다시 시도", timeout=T)
    await ctx.close()


async def test_offline_reopen_shows_the_cached_shell_and_chats(server: ServerProcess, make_user: Any,
                                                              browser: Browser) -> None:
    ctx, page = await new_page(browser)
    await signup(page, server.url, "alice")
    bob: Client = await make_user("bob")
    alice_id = await page.evaluate("window.dari.session.user.user_id")
    chat = await bob.call("chat.open_direct", user_id=alice_id)
    await bob.send_message(chat["chat_id"], "hello from bob")
    row = page.locator(".chat-item", has=page.locator(".chat-name", has_text="Bob"))
    await expect(row.locator(".chat-preview")).to_have_text("hello from bob", timeout=T)

    # The service worker is installed and controls the page; the shell is in its cache.
    await page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=T)
    cached = await page.evaluate("""async () => {
      const keys = await caches.keys();
      const cache = await caches.open(keys.find((k) => k.startsWith('dari-shell-')));
      return (await cache.keys()).map((r) => new URL(r.url).pathname);
    }""")
    shell = {"/", "/static/js/app.js", "/static/js/diagnose.js", "/static/app.css", "/static/i18n/en.json"}
    assert shell <= set(cached), cached
    assert not [p for p in cached if p.startswith(("/api/", "/ws", "/lp/", "/media"))], cached
    await page.wait_for_function(
        "() => (JSON.parse(localStorage.getItem('dari.cache') || '{}').chats || []).length > 0", timeout=T)

    # The tab is closed, the network goes (and the server too: nothing can come from it), and the
    # page is opened again.
    await ctx.set_offline(True)
    server.stop()
    await page.close()
    again = await ctx.new_page()
    errors: list[str] = []
    again.on("pageerror", lambda exc: errors.append(str(exc)))
    await again.goto(server.url)
    await expect(again.locator("#app")).to_be_visible(timeout=T)
    row = again.locator(".chat-item", has=again.locator(".chat-name", has_text="Bob"))
    await expect(row.locator(".chat-preview")).to_have_text("hello from bob", timeout=T)
    await expect(again.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
    box = panel(again)
    await expect(box).to_have_attribute("data-verdict", "offline", timeout=T)
    await expect(box.locator(".diag-head")).to_have_text("You are offline: this device has no network connection.")
    await expect(box.locator(".diag-doing")).to_contain_text("Waiting for the network")
    assert not errors, errors
    await ctx.close()


async def test_the_page_is_installable(server: ServerProcess, tmp_path: Path) -> None:
    """Chromium's own installability check. A persistent profile: Playwright's usual contexts are
    off the record, where Chromium never offers installing ("in-incognito")."""
    exe = chromium_path()
    async with async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe,
                                                         args=CHROMIUM_ARGS)
        page = await ctx.new_page()
        await page.goto(server.url)
        await expect(page.locator("#auth")).to_be_visible(timeout=T)
        await page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=T)
        cdp = await ctx.new_cdp_session(page)
        manifest = await cdp.send("Page.getAppManifest")
        assert manifest["url"].endswith("/manifest.webmanifest"), manifest
        assert not manifest.get("errors"), manifest["errors"]
        result = await cdp.send("Page.getInstallabilityErrors")
        assert result["installabilityErrors"] == [], result
        await ctx.close()


async def test_service_worker_and_manifest_are_served_for_the_root_scope(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/sw.js") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/javascript"
            assert resp.headers["Service-Worker-Allowed"] == "/"
            assert resp.headers["Cache-Control"] == "no-cache"
            text = await resp.text()
        assert "__VERSION__" not in text and "__SHELL__" not in text
        shell = re.search(r"const SHELL = (\[.*?\]);", text)
        assert shell is not None
        urls = set(re.findall(r'"([^"]+)"', shell.group(1)))
        assert {"/", "/static/js/app.js", "/static/icons/icon-192.png", "/static/i18n/ko.json"} <= urls
        assert not [u for u in urls if not (u == "/" or u.startswith("/static/") or u == "/manifest.webmanifest")]
        async with http.get(f"{server.url}/manifest.webmanifest") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/manifest+json"
            manifest = await resp.json(content_type=None)
        assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
        sizes = {i["sizes"] for i in manifest["icons"] if i["type"] == "image/png"}
        assert {"192x192", "512x512"} <= sizes
        for icon in manifest["icons"]:
            async with http.get(f"{server.url}{icon['src']}") as resp:
                assert resp.status == 200 and resp.content_type == icon["type"], icon


def test_every_diagnosis_string_is_translated() -> None:
    web = Path(__file__).resolve().parent.parent / "src" / "dari" / "web"
    panel_js = (web / "js" / "diag_panel.js").read_text()
    used = set(re.findall(r'\bt\("([\w.\-]+)"', panel_js)) | set(re.findall(r'key: "(diag\.[\w.\-]+)"', panel_js))
    explained = re.search(r"const EXPLAINED = new Set\((\[.*?\])\)", panel_js)
    assert explained is not None
    used |= {f"diag.cls.{c}" for c in re.findall(r'"([a-z-]+)"', explained.group(1))}
    assert len(used) >= 20, used
    for code in ("en", "ko", "ja", "zh-CN"):
        strings = json.loads((web / "i18n" / f"{code}.json").read_text())
        assert not sorted(used - set(strings)), code
        if code != "en":   # translated, not copied
            en = json.loads((web / "i18n" / "en.json").read_text())
            assert all(strings[k] != en[k] for k in used), code


def test_a_deploy_changes_the_service_worker_version(tmp_path: Path) -> None:
    """The worker's version is a hash of the shell: any changed file gives a new worker (which
    re-caches), and files outside the shell are never listed."""
    from dari.server.pwa import shell

    (tmp_path / "js").mkdir()
    (tmp_path / "i18n").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "manifest.webmanifest").write_text("{}")
    (tmp_path / "app.css").write_text("body {}")
    (tmp_path / "js" / "app.js").write_text("1")
    (tmp_path / "i18n" / "en.json").write_text("{}")
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "admin.js").write_text("admin")
    urls, v1 = shell(tmp_path)
    assert urls == ["/", "/manifest.webmanifest", "/static/app.css", "/static/i18n/en.json", "/static/js/app.js"]
    assert shell(tmp_path)[1] == v1
    (tmp_path / "js" / "app.js").write_text("2")
    assert shell(tmp_path)[1] != v1
    (tmp_path / "js" / "app.js").write_text("1")
    (tmp_path / "index.html").write_text("<!doctype html><title>new</title>")
    assert shell(tmp_path)[1] != v1
