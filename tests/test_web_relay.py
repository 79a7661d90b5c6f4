"""The web client through a relay (issue 5): when WebSocket and long-poll to the page's own origin
both fail, the page reaches the server through a WebSocket to a relay the server vouches for, and
comes back to its origin when that works again. Real `dari serve`, a real `dari relay` process and
Debian's Chromium through Playwright (see tests/test_web.py).

The server and the relay run without TLS here (the relay's HTTPS listener is a byte passthrough,
so plain WebSocket goes through it the same way); the descriptor checks are the browser's own
(WebCrypto Ed25519).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from dari.client import Client
from dari.relay.descriptor import b64u, unb64u
from dari.relay.registry import RelayRegistry
from tests.conftest import ServerProcess, free_port
from tests.relayutil import dari_cli, relay_factory
from tests.test_web import T, new_page, open_chat, open_direct_with, send, signup

__all__ = ["relay_factory"]

PIN = "sha256/" + "A" * 43 + "="   # the server's pin in the descriptor; plain HTTP here, so unused


def forged_blobs(genuine: str, other_dir: Path, address: str) -> list[str]:
    """Two descriptors the page must refuse: one signed by another key (a relay that would work,
    were it trusted), and the genuine one with its id changed after signing."""
    other = RelayRegistry(str(other_dir))
    _, foreign = other.add(addresses=[address], pin=PIN, kind="https", relay_id="r-forged")
    raw = unb64u(genuine)
    assert b'"id":"r-web"' in raw
    tampered = b64u(raw.replace(b'"id":"r-web"', b'"id":"r-evil"'))
    return [foreign, tampered]


async def relay_accepted(admin: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    assert "dari_relay_connections_accepted_total" in text, text
    # One sample per listener label, none before the first connection.
    return sum(int(float(v)) for v in re.findall(r"^dari_relay_connections_accepted_total(?:\{[^}]*\})? (\S+)",
                                                 text, re.M))


async def texts(page: Page) -> list[str]:
    return await page.locator("li.msg[data-seq] .text").all_inner_texts()


async def next_text(client: Client, skip: set[str]) -> str:
    while True:
        ev = await client.next_event("message.new", timeout=15)
        if ev.payload["text"] not in skip:
            return str(ev.payload["text"])


async def test_web_client_falls_back_to_a_relay_and_comes_back(server: ServerProcess, make_user: Any,
                                                               browser: Browser, relay_factory: Any,
                                                               tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    relay = relay_factory("--https-upstream", f"127.0.0.1:{server.port}", "--https-listen", "127.0.0.1:0",
                          "--admin", admin)
    relay_address = f"127.0.0.1:{relay.port('https')}"
    origin_ws = re.compile(rf"^ws://127\.0\.0\.1:{server.port}/ws$")

    ctx, alice = await new_page(browser)
    await alice.add_init_script("localStorage.setItem('dari.upgrade_ms', '2000')")
    await signup(alice, server.url, "alice")
    bob: Client = await make_user("bob")
    await open_direct_with(alice, bob.user["handle"])
    await expect(alice.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)

    # The server vouches for the relay (for browsers: kind https).
    out = dari_cli("admin", "relay", "add", "--data-dir", str(server.data_dir), "--address", relay_address,
                   "--kind", "https", "--pin", PIN, "--id", "r-web")
    assert "dari://relay?d=" in out.stdout
    genuine = RelayRegistry(str(server.data_dir)).get("r-web")
    forged = forged_blobs(genuine, tmp_path / "other-server", relay_address)

    # The origin's WebSocket, through Playwright: the test can add forged descriptors to relay.list
    # answers, cut the page's socket, and refuse new ones while "blocked".
    blocked = False
    live: list[WebSocketRoute] = []
    injected: list[int] = []

    def tamper(message: str | bytes) -> str | bytes:
        if isinstance(message, str) and '"relays"' in message:
            frame = json.loads(message)
            if isinstance(frame.get("result"), dict) and "relays" in frame["result"]:
                frame["result"]["relays"] = forged + frame["result"]["relays"]
                injected.append(1)
                return json.dumps(frame)
        return message

    async def route_ws(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
            return
        upstream = ws.connect_to_server()
        ws.on_message(lambda m: upstream.send(m))
        upstream.on_message(lambda m: ws.send(tamper(m)))
        live.append(ws)

    await alice.route_web_socket(origin_ws, route_ws)
    await alice.reload()   # a new session over the routed socket, which fetches relay.list
    await expect(alice.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)

    # Settings: the relay with its link and QR code; the forged ones are nowhere.
    await alice.click("[data-tab=settings]")
    item = alice.locator("#relay-list li[data-relay=r-web]")
    await expect(item).to_be_visible(timeout=T)
    assert injected, "relay.list was never answered over the routed socket"
    await expect(item.locator("input.relay-link")).to_have_value(f"dari://relay?d={genuine}")
    qr = item.locator("img.relay-qr")
    await expect(qr).to_have_attribute("src", re.compile(r"^/relay/qr\.svg\?d="))
    await alice.wait_for_function("() => { const i = document.querySelector('img.relay-qr');"
                                  " return i && i.complete && i.naturalWidth > 0; }", timeout=T)
    assert await alice.locator("#relay-list li[data-relay]").count() == 1
    stored = json.loads(await alice.evaluate("localStorage.getItem('dari.relays')"))
    assert list(stored["relays"]) == ["r-web"]
    assert stored["key"] == RelayRegistry(str(server.data_dir)).public_key()
    before = await relay_accepted(admin)

    # Block both routes to the origin, then cut the live socket: the page must move to the relay
    # and resume by cursor. A message queued and one received meanwhile arrive exactly once.
    blocked = True

    async def abort(route: Route) -> None:
        await route.abort()

    await alice.route(re.compile(rf"^http://127\.0\.0\.1:{server.port}/lp/"), abort)
    await open_chat(alice, "Bob")
    for ws in live:
        with contextlib.suppress(Exception):   # an earlier one may be gone already
            await ws.close()
    await send(alice, "queued while cut off")
    chat_id = (await bob.call("chat.list"))[0]["chat_id"]
    await bob.send_message(chat_id, "sent while alice switches")
    await expect(alice.locator("#conn .conn-label")).to_contain_text("relay r-web", timeout=T)
    # The page says why (diagnose.js): HTTP answers, both routes to the origin fail, the relay works.
    diag = alice.locator("#conn-diag")
    await expect(diag.locator(".diag-head")).to_have_text("The direct route to the server is blocked on this network.",
                                                          timeout=T)
    await expect(diag.locator(".diag-doing")).to_contain_text("Using relay r-web")
    await expect(diag.locator(".diag-routes li[data-route='relay-ws:r-web']")).to_have_attribute("data-ok", "true")
    await expect(diag.locator(".diag-routes li[data-route=long-poll]")).to_have_attribute("data-ok", "false")
    assert await next_text(bob, {"sent while alice switches"}) == "queued while cut off"
    await send(alice, "through the relay")
    assert await next_text(bob, {"sent while alice switches"}) == "through the relay"
    await bob.send_message(chat_id, "reply through the relay")
    expected = ["queued while cut off", "sent while alice switches", "through the relay", "reply through the relay"]
    await shows_exactly(alice, expected)
    assert await relay_accepted(admin) > before
    await expect(alice.locator("#conn .conn-label")).to_contain_text("relay r-web")

    # Unblocked: the page's probes find the origin's WebSocket again and move back to it.
    blocked = False
    await alice.unroute(re.compile(rf"^http://127\.0\.0\.1:{server.port}/lp/"))
    await expect(alice.locator("#conn .conn-label")).to_contain_text("websocket", timeout=T)
    await expect(diag).to_be_hidden(timeout=T)
    await send(alice, "back on the origin")
    assert await next_text(bob, {"reply through the relay"}) == "back on the origin"
    expected.append("back on the origin")
    shown = await shows_exactly(alice, expected)
    history = await bob.call("message.history", chat_id=chat_id)
    got = [m["text"] for m in history["messages"] if m["kind"] == "text"]
    assert got == shown, (got, shown)   # once each, in the server's order
    assert not alice.errors  # type: ignore[attr-defined]
    await ctx.close()


async def shows_exactly(page: Page, expected: list[str]) -> list[str]:
    """The page shows each expected text once and nothing else (the two sent while the page was
    switching may come in either order; the final check compares with the server's order)."""
    await expect(page.locator("li.msg[data-seq] .text")).to_have_count(len(expected), timeout=T)
    got = await texts(page)
    assert sorted(got) == sorted(expected), got
    return got


async def test_descriptors_are_verified_in_the_page(server: ServerProcess, browser: Browser,
                                                    tmp_path: Path) -> None:
    """The page's own check (relays.js): a good descriptor verifies; another key's, a tampered one,
    an expired one and garbage are refused with a reason; stored ones are re-checked at load."""
    registry = RelayRegistry(str(server.data_dir))
    _, good = registry.add(addresses=["relay.example:443"], pin=PIN, kind="https", relay_id="r-ok")
    _, expired = registry.add(addresses=["relay.example:443"], pin=PIN, kind="https", relay_id="r-old", days=-1)
    _, web = registry.add(addresses=["relay.example:443"], pin=PIN, kind="https", relay_id="r-web")
    foreign, tampered = forged_blobs(web, tmp_path / "other", "relay.example:443")
    ctx, page = await new_page(browser)
    await page.goto(server.url)
    result = await page.evaluate("""async ([key, blobs]) => {
      const m = await import('/static/js/relays.js');
      const out = {};
      for (const [name, blob] of Object.entries(blobs)) {
        try { out[name] = (await m.verifyDescriptor(blob, key)).id; } catch (e) { out[name] = 'refused: ' + e.message; }
      }
      localStorage.setItem('dari.relays', JSON.stringify({key, relays: {'r-ok': blobs.good, 'r-forged': blobs.foreign},
                                                          revoked: [], revoked_issued: 0}));
      const book = new m.RelayBook(localStorage);
      out.kept = (await book.check()).map((x) => x.d.id);
      out.routes = book.wsRoutes('https:').map((r) => r.url);
      return out;
    }""", [registry.public_key(), {"good": good, "foreign": foreign, "tampered": tampered, "expired": expired,
                                    "garbage": "not*base64", "short": "AAAA"}])
    assert result["good"] == "r-ok"
    assert result["foreign"].startswith("refused: bad signature")
    assert result["tampered"].startswith("refused: bad signature")
    assert result["expired"].startswith("refused: expired")
    assert result["garbage"].startswith("refused: malformed")
    assert result["short"].startswith("refused: malformed")
    assert result["kept"] == ["r-ok"]
    assert result["routes"] == ["wss://relay.example:443/ws"]
    await ctx.close()



async def test_relay_qr_endpoint_draws_only_this_servers_current_descriptors(server: ServerProcess,
                                                                              tmp_path: Path) -> None:
    registry = RelayRegistry(str(server.data_dir))
    _, web = registry.add(addresses=["relay.example:443"], pin=PIN, kind="https", relay_id="r-web")
    _, gone = registry.add(addresses=["relay2.example:443"], pin=PIN, kind="https", relay_id="r-gone")
    registry.revoke("r-gone")
    foreign, tampered = forged_blobs(web, tmp_path / "other", "relay.example:443")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/relay/qr.svg", params={"d": web}) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/svg+xml"
            assert (await resp.text()).lstrip().startswith("<svg")
        for blob, reason in [(foreign, "bad signature"), (tampered, "bad signature"), (gone, "revoked"),
                             ("x" * 5000, "too long"), ("", "empty")]:
            async with http.get(f"{server.url}/relay/qr.svg", params={"d": blob}) as resp:
                assert resp.status == 400, blob[:20]
                assert reason in await resp.text()
