"""Relays: the route conformance suite through a relay, ciphertext only, signed descriptors and their
distribution, revocation, limits, broken relays, and a client cut off from its direct route that
keeps chatting through a relay."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dari.client import Client
from dari.client.links import Route
from dari.client.relays import RelayBook, refresh_relays
from dari.relay.descriptor import Descriptor, DescriptorError, Revocations, b64u, public_key_text, sign, to_link
from dari.relay.forward import Listener, Relay, RelayConfig
from dari.relay.registry import RelayRegistry
from dari.server.tls import pin_of_pem_file
from tests.conftest import PASSWORD
from tests.netutil import CuttableProxy
from tests.relayutil import Recorder, dari_cli, relay_factory, tls_server
from tests.test_routes import TRANSPORTS
from tests.test_routes import test_conformance as test_conformance_through_relay

__all__ = ["relay_factory", "test_conformance_through_relay"]   # fixtures and the reused suite


# -- the conformance suite of tests/test_routes.py, every transport through a relay ---------------
def _through_relay(srv: Any, relay_factory: Any, pin: str | None) -> SimpleNamespace:
    relay = relay_factory("--upstream", f"127.0.0.1:{srv.stream_port}", "--listen", "127.0.0.1:0",
                          "--https-upstream", f"127.0.0.1:{srv.port}", "--https-listen", "127.0.0.1:0")
    # The suite dials `port` and `stream_port`: hand it the relay's, and the server's own pin.
    return SimpleNamespace(port=relay.port("https"), stream_port=relay.port("stream"), pin=pin, relay=relay)


@pytest.fixture(name="tls_server")
def _tls(server_factory, relay_factory):  # type: ignore[no-untyped-def]
    srv = tls_server(server_factory)
    return _through_relay(srv, relay_factory, srv.pin)


@pytest.fixture(name="plain_server")
def _plain(server_factory, relay_factory):  # type: ignore[no-untyped-def]
    from tests.conftest import free_port

    port = free_port()
    srv = server_factory(args=["--stream-port", str(port)])
    srv.stream_port = port
    return _through_relay(srv, relay_factory, None)


assert TRANSPORTS, "the conformance suite runs over every transport"


# -- what the relay sees ----------------------------------------------------------------------------
async def test_relay_sees_only_ciphertext(server_factory, relay_factory) -> None:
    srv = tls_server(server_factory)
    tap = await Recorder(("127.0.0.1", srv.stream_port)).start()
    relay = relay_factory("--upstream", f"127.0.0.1:{tap.port}", "--listen", "127.0.0.1:0",
                          "--admin", f"127.0.0.1:{_free()}")
    route = Route("stream", f"tls://127.0.0.1:{relay.port()}", name="relay", pin=srv.pin, sni="cdn.example.net")
    secret = "meet at the north gate 북문에서 만나"
    alice = Client(srv.url, routes=[route])
    bob = Client(f"https://127.0.0.1:{srv.port}", routes=[Route("ws", f"https://127.0.0.1:{srv.port}", pin=srv.pin)])
    try:
        handle = f"secret_{uuid.uuid4().hex[:6]}"
        await alice.signup(handle, "Alice", PASSWORD)
        await bob.signup(f"b_{uuid.uuid4().hex[:6]}", "Bob", PASSWORD)
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        await alice.send_message(chat["chat_id"], secret)
        await bob.send_message(chat["chat_id"], secret + " (reply)")
        await alice.next_event("message.new")
        assert alice.route == "relay"
    finally:
        await alice.close()
        await bob.close()
        await tap.close()
    seen = bytes(tap.up) + bytes(tap.down)
    assert len(seen) > 2000
    assert tap.up[:1] == b"\x16" and tap.down[:1] == b"\x16", "TLS records, end to end through the relay"
    for plain in (secret.encode(), "북문".encode(), handle.encode(), PASSWORD.encode(), b"message.send",
                  b"account.signup"):
        assert plain not in seen, f"{plain!r} crossed the relay in clear"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{relay.info['admin']}/metrics") as resp:
            text = await resp.text()
    assert 'dari_relay_bytes_total{direction="up"}' in text
    assert "dari_relay_connections_accepted_total" in text


def _free() -> int:
    from tests.conftest import free_port

    return free_port()


# -- descriptors ------------------------------------------------------------------------------------
PIN = "sha256/" + "A" * 43 + "="


def _descriptor(**over: Any) -> Descriptor:
    now = int(time.time())
    fields: dict[str, Any] = {"id": "r-test", "serial": "00112233aabbccdd", "addresses": ["127.0.0.1:9443"],
                              "pin": PIN, "sni": "cdn.example.net", "issued": now, "expires": now + 3600}
    return Descriptor(**{**fields, **over})


def test_descriptors_reject_bad_input_with_clear_errors() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = RelayBook(trusted_keys=[public_key_text(key.public_key())])
    good = sign(_descriptor(), key)
    assert book.add(to_link(good)).id == "r-test"
    assert book.routes()[0] == Route("stream", "tls://127.0.0.1:9443", name="relay r-test", pin=PIN,
                                     sni="cdn.example.net")
    cases = {
        "garbage!!": "malformed",
        "QUJD": "too short",
        b64u(b"\0" * 64 + b"{not json"): "bad signature",
        sign(_descriptor(), other): "bad signature",
        "dari://chat?d=abc": "not a relay link",
        sign(_descriptor(expires=int(time.time()) - 5), key): "expired",
        sign(_descriptor(addresses=["no-port"]), key): "bad address",
        sign(_descriptor(kind="obfs4"), key): "obfs4 cert",
        sign(Revocations(revoked=[], issued=1), key): "malformed",   # a revocation list is no descriptor
        "x" * 5000: "too long",
    }
    tampered = bytearray(b64u_decode(good))
    tampered[-3] ^= 1
    cases[b64u(bytes(tampered))] = "bad signature"
    for blob, why in cases.items():
        with pytest.raises(DescriptorError) as info:
            book.add(blob)
        assert why in str(info.value), (blob[:30], str(info.value))
    with pytest.raises(DescriptorError, match="no trusted server key"):
        RelayBook().add(good)
    book.revoked = {"r-test"}
    with pytest.raises(DescriptorError, match="revoked"):
        book.add(good)
    with pytest.raises(DescriptorError, match="pinned"):
        RelayBook().apply_listing({"key": public_key_text(key.public_key()), "relays": [good], "revoked": ""},
                                  over_pinned_tls=False)


def b64u_decode(text: str) -> bytes:
    from dari.relay.descriptor import unb64u

    return unb64u(text)


def test_registry_rotate_and_revoke(tmp_path) -> None:
    reg = RelayRegistry(str(tmp_path))
    d1, blob1 = reg.add(addresses=["127.0.0.1:1"], pin=PIN, relay_id="r-one")
    d2, _ = reg.rotate("r-one", addresses=["127.0.0.1:2"])
    assert d2.serial != d1.serial and d2.addresses == ["127.0.0.1:2"]
    book = RelayBook(str(tmp_path / "book.json"))
    book.apply_listing(reg.listing(), over_pinned_tls=True)
    assert [d.addresses for d in book.descriptors()] == [["127.0.0.1:2"]]
    with pytest.raises(DescriptorError, match="revoked"):
        book.add(blob1)   # the superseded copy is dead
    reg.revoke("r-one")
    again = RelayBook(str(tmp_path / "book.json"))   # persisted: key, relays, revocations
    assert again.keys == book.keys and again.descriptors()
    again.apply_listing(reg.listing(), over_pinned_tls=True)
    assert again.descriptors() == [] and again.routes() == []


# -- limits ------------------------------------------------------------------------------------------
async def _echo_server() -> asyncio.Server:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()
    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _roundtrip(port: int, size: int) -> float:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    w.write(b"x" * size)
    await w.drain()
    await r.readexactly(size)
    w.close()
    return time.monotonic() - t0


async def test_bandwidth_connection_and_idle_limits() -> None:
    echo = await _echo_server()
    up = ("127.0.0.1", echo.sockets[0].getsockname()[1])
    relay = await Relay(RelayConfig([Listener("stream", ("127.0.0.1", 0), up)], max_connections=2,
                                    rate=100_000, idle_timeout=0.6)).start()
    try:
        # 100 KB each way at 100 KB/s per connection (both directions counted): about 2 s, not instant.
        elapsed = await _roundtrip(relay.port(), 100_000)
        assert 1.4 < elapsed < 6, elapsed
        # two connections fill the relay; the third is refused at once
        held = [await asyncio.open_connection("127.0.0.1", relay.port()) for _ in range(2)]
        await asyncio.sleep(0.1)
        r3, _ = await asyncio.open_connection("127.0.0.1", relay.port())
        assert await asyncio.wait_for(r3.read(), 2) == b""
        assert relay.metrics.rejected.labels("max_connections")._value.get() == 1
        # idle connections are closed, which frees the slots
        for r, _ in held:
            assert await asyncio.wait_for(r.read(), 3) == b""
        assert relay.metrics.idle._value.get() >= 2
        assert relay.active == 0
    finally:
        await relay.close()
    # the total rate is shared: two connections at once take twice as long as one alone
    relay = await Relay(RelayConfig([Listener("stream", ("127.0.0.1", 0), up)], total_rate=200_000)).start()
    try:
        t0 = time.monotonic()
        await asyncio.gather(_roundtrip(relay.port(), 100_000), _roundtrip(relay.port(), 100_000))
        assert time.monotonic() - t0 > 1.4
    finally:
        await relay.close()
        echo.close()


async def test_healthz_reports_the_upstream(relay_factory) -> None:
    dead = _free()
    admin = _free()
    relay_factory("--upstream", f"127.0.0.1:{dead}", "--listen", "127.0.0.1:0", "--admin", f"127.0.0.1:{admin}")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin}/healthz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "degraded" and "unreachable" in body["error"]


# -- broken relays -----------------------------------------------------------------------------------
async def _fake_relay(behaviour: str, target: tuple[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if behaviour == "garbage":
            await reader.read(1024)
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 8)
            await writer.drain()
            writer.close()
            return
        # "truncate": forward the client's hello, pass back only part of the server's answer
        up_r, up_w = await asyncio.open_connection(*target)
        up_w.write(await reader.read(65536))
        await up_w.drain()
        writer.write((await up_r.read(65536))[:120])
        await writer.drain()
        writer.close()
        up_w.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_broken_relays_fail_cleanly_and_fallback_continues(server_factory, relay_factory) -> None:
    srv = tls_server(server_factory)
    target = ("127.0.0.1", srv.stream_port)
    garbage, truncate = await _fake_relay("garbage", target), await _fake_relay("truncate", target)
    good = relay_factory("--upstream", f"127.0.0.1:{srv.stream_port}", "--listen", "127.0.0.1:0")

    def via(port: int, name: str) -> Route:
        return Route("stream", f"tls://127.0.0.1:{port}", name=name, pin=srv.pin)

    routes = [via(garbage.sockets[0].getsockname()[1], "garbage"),
              via(truncate.sockets[0].getsockname()[1], "truncating"), via(good.port(), "good")]
    c = Client(srv.url, routes=routes)
    try:
        await c.signup(f"g_{uuid.uuid4().hex[:6]}", "G", PASSWORD)
        assert c.route == "good"
        failed = {a.route: a for a in c.routes.last_attempts if not a.ok}
        assert set(failed) == {"garbage", "truncating"}
        assert all(a.stage in ("tls", "connect", "tcp") for a in failed.values()), failed
    finally:
        await c.close()
        garbage.close()
        truncate.close()


# -- distribution, fallback and revocation end to end -------------------------------------------------
async def test_cut_off_client_keeps_chatting_through_a_relay(server_factory, relay_factory, tmp_path) -> None:
    """The direct route is cut mid-conversation; the client moves to the relay it learned from
    relay.list, nothing is lost or doubled, and a revoked relay is left and forgotten."""
    srv = tls_server(server_factory)
    relay = relay_factory("--upstream", f"127.0.0.1:{srv.stream_port}", "--listen", "127.0.0.1:0")
    added = dari_cli("admin", "relay", "add", "--data-dir", str(srv.data_dir), "--address",
                     f"127.0.0.1:{relay.port()}", "--sni", "cdn.example.net", "--id", "r-seoul", "--json")
    assert '"id": "r-seoul"' in added.stdout
    listed = dari_cli("admin", "relay", "list", "--data-dir", str(srv.data_dir))
    assert "r-seoul" in listed.stdout and "ed25519:" in listed.stdout
    shared = dari_cli("relay", "share", "r-seoul", "--data-dir", str(srv.data_dir))
    link = shared.stdout.splitlines()[0]
    assert link.startswith("dari://relay?d=")
    assert "▀" in shared.stdout or "█" in shared.stdout, "a QR code drawn in the terminal"

    proxy = await CuttableProxy("127.0.0.1", srv.port).start()
    direct = Route("ws", f"https://127.0.0.1:{proxy.port}", name="direct", pin=srv.pin)
    book = RelayBook(str(tmp_path / "relays.json"))
    alice = Client(srv.url, routes=[direct], upgrade_interval=1.0)
    bob = Client(srv.url, routes=[Route("ws", f"https://127.0.0.1:{srv.port}", pin=srv.pin)])
    try:
        await alice.signup(f"ra_{uuid.uuid4().hex[:6]}", "A", PASSWORD)
        await bob.signup(f"rb_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
        await alice.wait_live()
        assert await refresh_relays(alice, book) == []
        assert [r.label for r in alice.routes.routes] == ["direct", "relay r-seoul"]
        assert book.add(link).id == "r-seoul"     # the invite link verifies against the learned key
        chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
        cid = chat["chat_id"]
        sent: list[int] = []

        async def talk(n: int) -> None:
            for i in range(n):
                sent.append((await bob.send_message(cid, f"b{i}"))["seq"])
                r = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text=f"a{i}")
                sent.append(r["seq"])

        await talk(5)
        await proxy.cut()
        await talk(5)
        assert alice.route == "relay r-seoul"
        received: list[int] = []
        while True:
            try:
                received.append((await alice.next_event("message.new", timeout=2)).payload["seq"])
            except TimeoutError:
                break
        assert received == sorted(sent) == list(range(1, 21)), "every message once, in order"

        # the operator revokes the relay: the client leaves it and has no route until direct is back
        dari_cli("admin", "relay", "revoke", "r-seoul", "--data-dir", str(srv.data_dir))
        assert await refresh_relays(alice, book) == []
        assert [r.label for r in alice.routes.routes] == ["direct"] and book.descriptors() == []
        with pytest.raises(DescriptorError, match="revoked"):
            book.add(link)
        await proxy.restore()
        for _ in range(100):
            if alice.route == "direct":
                break
            await asyncio.sleep(0.1)
        assert alice.route == "direct"
        await talk(1)
    finally:
        await alice.close()
        await bob.close()
        await proxy.cut()


async def test_browser_relay_terminates_tls_and_says_so(server_factory, relay_factory) -> None:
    """--terminate-tls (for browsers): the client sees the relay's key, the relay checks the server's."""
    srv = tls_server(server_factory)
    relay = relay_factory("--https-upstream", f"127.0.0.1:{srv.port}", "--https-listen", "127.0.0.1:0",
                          "--terminate-tls", "--upstream-pin", srv.pin)
    assert "sees frames" in relay.log()
    relay_pin = pin_of_pem_file(str(relay.state / "tls" / "cert.pem"))
    assert relay_pin != srv.pin
    url = f"https://127.0.0.1:{relay.port('https')}"
    c = Client(url, routes=[Route("ws", url, pin=relay_pin, name="browser-relay")])
    try:
        await c.signup(f"w_{uuid.uuid4().hex[:6]}", "W", PASSWORD)
        assert c.route == "browser-relay"
    finally:
        await c.close()
    bad = relay_factory("--https-upstream", f"127.0.0.1:{srv.port}", "--https-listen", "127.0.0.1:0",
                        "--terminate-tls", "--upstream-pin", PIN)
    url = f"https://127.0.0.1:{bad.port('https')}"
    c = Client(url, reconnect=False, routes=[Route("ws", url, insecure_tls=True)])
    try:
        with pytest.raises(Exception):   # noqa: B017 - the relay refuses to talk to an impostor server
            await c.connect()
    finally:
        await c.close()
    assert "interception" in bad.log()


async def test_refresh_forever_keeps_going_after_failures(tmp_path) -> None:
    from dari.client.relays import refresh_forever
    from dari.client.routes import RouteManager
    from dari.protocol.errors import DariError, ErrorCode

    reg = RelayRegistry(str(tmp_path))
    reg.add(addresses=["127.0.0.1:1"], pin=PIN, relay_id="r-a")
    calls = 0

    class FakeClient:
        routes = RouteManager([Route("ws", "https://server.example", name="direct", pin=PIN)])
        _link = None

        async def call(self, method: str) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise DariError(ErrorCode.UNAVAILABLE, "no connection to the server")
            return reg.listing()

    client = FakeClient()
    client.routes.current = client.routes.routes[0]
    task = asyncio.create_task(refresh_forever(client, RelayBook(), interval=0.05))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if len(client.routes.routes) == 2:
                break
            await asyncio.sleep(0.02)
        assert [r.label for r in client.routes.routes] == ["direct", "relay r-a"] and calls >= 2
    finally:
        task.cancel()
