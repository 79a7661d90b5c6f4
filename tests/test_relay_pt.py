"""Pluggable transports: obfs4 end to end with Debian's real obfs4proxy (client side in the SDK,
server side under `dari relay --obfs4`), the PT 1.0 handshake, and plain SOCKS5 routes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import uuid

import pytest

from dari.client import Client
from dari.client.links import Route
from dari.client.obfs4 import Obfs4Client, PTNotInstalled
from dari.client.relays import RelayBook, refresh_relays
from dari.relay.pt import PTError, launch, parse_args, socks_auth
from tests.conftest import PASSWORD, free_port
from tests.netutil import CuttableProxy
from tests.relayutil import Recorder, dari_cli, relay_factory, tls_server

__all__ = ["relay_factory"]


def need_obfs4proxy() -> None:
    if shutil.which("obfs4proxy"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("obfs4proxy is missing in CI: .ci/run must apt-get install obfs4proxy")
    pytest.skip("obfs4proxy is not installed (apt-get install obfs4proxy)")


async def test_obfs4_relay_end_to_end(server_factory, relay_factory, tmp_path) -> None:
    """Direct route cut: the client continues through an obfs4 relay learned from relay.list; the
    censor's view of the obfs4 hop shows neither TLS nor dari."""
    need_obfs4proxy()
    srv = tls_server(server_factory)
    relay = relay_factory("--upstream", f"127.0.0.1:{srv.stream_port}", "--obfs4", f"127.0.0.1:{free_port()}",
                          "--admin", f"127.0.0.1:{free_port()}")
    obfs4 = relay.info["obfs4"]
    assert obfs4["cert"] and obfs4["iat_mode"] == 0
    host, port = obfs4["address"].rsplit(":", 1)
    wire = await Recorder((host, int(port))).start()   # what a censor on the obfs4 hop sees
    dari_cli("admin", "relay", "add", "--data-dir", str(srv.data_dir), "--kind", "obfs4", "--id", "r-obfs",
             "--address", f"127.0.0.1:{wire.port}", "--obfs4-state", str(relay.state))
    proxy = await CuttableProxy("127.0.0.1", srv.port).start()
    alice = Client(srv.url, routes=[Route("ws", f"https://127.0.0.1:{proxy.port}", name="direct", pin=srv.pin)],
                   outbox_path=str(tmp_path / "outbox.db"))
    bob = Client(srv.url, routes=[Route("ws", f"https://127.0.0.1:{srv.port}", pin=srv.pin)])
    secret = "obfs4 secret 비밀"
    async with Obfs4Client(str(tmp_path / "obfs4-client")) as pt:
        try:
            await alice.signup(f"oa_{uuid.uuid4().hex[:6]}", "A", PASSWORD)
            await bob.signup(f"ob_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
            await alice.wait_live()
            book = RelayBook()
            assert await refresh_relays(alice, book) == []
            assert [r.label for r in alice.routes.routes] == ["direct"], "no obfs4 routes without obfs4proxy"
            await refresh_relays(alice, book, obfs4=pt)
            assert [r.label for r in alice.routes.routes] == ["direct", "obfs4 r-obfs"]
            chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
            sent = [(await bob.send_message(chat["chat_id"], f"before {i}"))["seq"] for i in range(3)]
            await proxy.cut()
            for i in range(3):
                await alice.send_message(chat["chat_id"], f"{secret} {i}")   # typed while cut off: outbox
                sent.append((await bob.send_message(chat["chat_id"], f"after {i}"))["seq"])
            try:
                await alice.flush_outbox(timeout=30)
            except TimeoutError:
                why = f"{alice.state} via {alice.route}; attempts {alice.routes.last_attempts}; relay log {relay.log()}"
                raise AssertionError(why) from None
            assert alice.route == "obfs4 r-obfs"
            got = []
            while True:
                try:
                    got.append((await alice.next_event("message.new", timeout=2)).payload["seq"])
                except TimeoutError:
                    break
            assert got == list(range(1, 10)), "every message once, in order"
            page = await bob.call("message.history", chat_id=chat["chat_id"], limit=50)
            texts = [m["text"] for m in page["messages"]]
            assert sorted(t for t in texts if t.startswith(secret)) == [f"{secret} {i}" for i in range(3)]
        finally:
            await alice.close()
            await bob.close()
            await proxy.cut()
            await wire.close()
    seen = bytes(wire.up) + bytes(wire.down)
    assert len(seen) > 1000
    assert not wire.up.startswith(b"\x16\x03"), "obfs4 hides the TLS handshake"
    assert secret.encode() not in seen and b"message.send" not in seen


async def test_missing_obfs4proxy_is_explained(tmp_path, relay_factory) -> None:
    with pytest.raises(PTNotInstalled) as info:
        await Obfs4Client(binary=str(tmp_path / "no" / "obfs4proxy")).start()
    assert "obfs4proxy is not installed" in str(info.value) and "apt-get install obfs4proxy" in str(info.value)
    os.environ["DARI_OBFS4PROXY"] = str(tmp_path / "nowhere")
    try:
        with pytest.raises(RuntimeError) as exited:
            relay_factory("--upstream", "127.0.0.1:1", "--obfs4", f"127.0.0.1:{free_port()}")
    finally:
        del os.environ["DARI_OBFS4PROXY"]
    assert "obfs4proxy is not installed" in str(exited.value)


async def test_pt_handshake_errors_and_argument_encoding(tmp_path) -> None:
    fake = tmp_path / "fake-pt"
    fake.write_text("#!/bin/sh\necho 'VERSION 1'\necho 'CMETHOD-ERROR obfs4 no entropy today'\n")
    fake.chmod(0o755)
    with pytest.raises(PTError, match="no entropy today"):
        await launch(transports=["obfs4"], state_dir=str(tmp_path / "s"), binary=str(fake))
    fake.write_text("#!/bin/sh\necho 'VERSION-ERROR no-version'\n")
    with pytest.raises(PTError, match="refused its configuration"):
        await launch(transports=["obfs4"], state_dir=str(tmp_path / "s"), binary=str(fake))
    assert parse_args(r"cert=a\,b=c,iat-mode=0") == {"cert": "a,b=c", "iat-mode": "0"}
    assert socks_auth({"cert": "abc", "iat-mode": "0"}) == ("cert=abc;iat-mode=0", "\0")
    user, password = socks_auth({"cert": "x;" * 200})
    assert len(user) == 255 and (user + password) == "cert=" + "x\\;" * 200


# -- SOCKS5 ----------------------------------------------------------------------------------------
class Socks5Server:
    """A small SOCKS5 server (RFC 1928/1929) that records what clients ask it for."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.creds = (user, password)
        self.requests: list[tuple[int, str, int]] = []
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Socks5Server:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            _, n = await r.readexactly(2)
            methods = await r.readexactly(n)
            if self.creds[0] is not None:
                if 2 not in methods:
                    w.write(b"\x05\xff")
                    return
                w.write(b"\x05\x02")
                _, ulen = await r.readexactly(2)
                user = (await r.readexactly(ulen)).decode()
                plen = (await r.readexactly(1))[0]
                password = (await r.readexactly(plen)).decode()
                ok = (user, password) == self.creds
                w.write(b"\x01" + (b"\x00" if ok else b"\x01"))
                if not ok:
                    return
            else:
                w.write(b"\x05\x00")
            _, _, _, atyp = await r.readexactly(4)
            if atyp == 3:
                host = (await r.readexactly((await r.readexactly(1))[0])).decode()
            else:
                host = ".".join(str(b) for b in await r.readexactly(4))
            (port,) = struct.unpack(">H", await r.readexactly(2))
            self.requests.append((atyp, host, port))
            up_r, up_w = await asyncio.open_connection("127.0.0.1" if host == "localhost" else host, port)
            w.write(b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
            await w.drain()

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(r, up_w), pipe(up_r, w))
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            w.close()


async def test_socks5_route_with_remote_dns_and_auth(server_factory) -> None:
    srv = tls_server(server_factory)
    socks = await Socks5Server("tor", "isolation-1").start()
    route = Route("stream", f"tls://localhost:{srv.stream_port}", name="socks", pin=srv.pin,
                  extra={"socks": f"socks5://127.0.0.1:{socks.port}", "socks_user": "tor",
                         "socks_pass": "isolation-1"})
    wrong = Route("stream", route.url, name="socks-wrong-pass", pin=srv.pin,
                  extra={**route.extra, "socks_pass": "nope"})
    c = Client(srv.url, routes=[wrong, route])
    try:
        await c.signup(f"s_{uuid.uuid4().hex[:6]}", "S", PASSWORD)
        assert c.route == "socks"
        failed = [a for a in c.routes.last_attempts if not a.ok]
        assert failed and failed[0].route == "socks-wrong-pass"
        assert (await c.call("account.me"))["user_id"] == c.user["user_id"]
    finally:
        await c.close()
        assert socks.server is not None
        socks.server.close()
    # the name went to the proxy unresolved (ATYP 3): a poisoned local resolver never saw it
    assert (3, "localhost", srv.stream_port) in socks.requests
