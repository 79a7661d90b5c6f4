"""G8: malformed frames, wrong types, oversize payloads, floods. A structured error each time,
nothing stored half-way, and everyone else keeps being served."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dari.client import Client
from tests.conftest import PASSWORD


async def _raw(url: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(url.replace("http", "ws") + "/ws", max_msg_size=0)
    return http, ws


async def _exchange(ws: aiohttp.ClientWebSocketResponse, data: str | bytes) -> dict:
    if isinstance(data, bytes):
        await ws.send_bytes(data)
    else:
        await ws.send_str(data)
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


BAD_FRAMES = [
    ("not json at all", "bad_frame"),
    ('{"id": 1}', "bad_frame"),
    ('{"id": 2, "method": 5}', "bad_frame"),
    ('[1, 2, 3]', "bad_frame"),
    ('{"id": 3, "method": "no.such.method"}', "unknown_method"),
    ('{"id": 4, "method": "chat.list"}', "unauthenticated"),
    ('{"id": 5, "method": "account.signup", "params": {"handle": "BAD HANDLE!", "display_name": "x",'
     ' "password": "longenough"}}', "invalid_params"),
    ('{"id": 6, "method": "account.signup", "params": {"handle": "okhandle", "display_name": 5,'
     ' "password": "longenough"}}', "invalid_params"),
    ('{"id": 7, "method": "session.open", "params": {"token": "not-a-real-token-at-all"}}', "unauthenticated"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frames_get_structured_errors(server, frame: str, code: str) -> None:
    http, ws = await _raw(server.url)
    try:
        reply = await _exchange(ws, frame)
        assert reply["error"]["code"] == code
        assert reply["error"]["message"]
        assert "Traceback" not in json.dumps(reply)
        # the connection stays usable
        ok = await _exchange(ws, '{"id": 99, "method": "server.info"}')
        assert ok["id"] == 99 and ok["result"]["name"]
    finally:
        await ws.close()
        await http.close()


async def test_invalid_utf8_and_oversize(server) -> None:
    http, ws = await _raw(server.url)
    try:
        reply = await _exchange(ws, b'{"id": 1, "method": "server.info\xff\xfe"}')
        assert reply["error"]["code"] == "bad_frame"
        big = json.dumps({"id": 2, "method": "server.info", "params": {"pad": "x" * (1 << 20)}})
        reply = await _exchange(ws, big)
        assert reply["error"]["code"] == "frame_too_large"
    finally:
        await ws.close()
        await http.close()


async def test_rest_bad_input(server, make_user) -> None:
    alice = await make_user("alice")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {alice.token}"}
        cases = [
            ("message.send", b"{not json", 400, "bad_frame"),
            ("message.send", b"[]", 400, "bad_frame"),
            ("message.send", b'{"chat_id": "one"}', 400, "invalid_params"),
            ("no.method", b"{}", 404, "unknown_method"),
            ("chat.get", b'{"chat_id": 999999}', 403, "forbidden"),
            ("message.send", b"x" * ((1 << 20) + 10), 413, "frame_too_large"),
        ]
        for method, body, status, code in cases:
            async with http.post(f"{server.url}/api/v1/{method}", data=body, headers=headers) as resp:
                assert resp.status == status, (method, await resp.text())
                data = await resp.json()
                assert data["error"]["code"] == code
        async with http.post(f"{server.url}/api/v1/chat.list") as resp:
            assert resp.status == 401


async def test_over_long_message_stores_nothing(make_user, server) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    from dari.protocol.errors import DariError, ErrorCode

    with pytest.raises(DariError) as info:
        await alice.send_message(chat["chat_id"], "가" * 10001)
    assert info.value.code == ErrorCode.LIMIT_EXCEEDED and "10000" in info.value.message
    for text in ("", "   ", "nul\x00byte"):
        with pytest.raises(DariError):
            await alice.send_message(chat["chat_id"], text)
    db = sqlite3.connect(server.data_dir / "dari.db")
    assert db.execute("SELECT count(*) FROM messages WHERE kind = 'text'").fetchone()[0] == 0
    assert db.execute("SELECT last_seq FROM chats WHERE id = ?", (chat["chat_id"],)).fetchone()[0] == 0


async def test_flood_is_rate_limited_and_others_unaffected(server_factory) -> None:
    srv = server_factory(extra_env={"DARI_RATE_PER_S": "20", "DARI_RATE_BURST": "40"})
    flooder, alice, bob = Client(srv.url), Client(srv.url), Client(srv.url)
    try:
        await flooder.signup("flooder", "F", PASSWORD)
        await alice.signup("calm_alice", "A", PASSWORD)
        await bob.signup("calm_bob", "B", PASSWORD)
        results = await asyncio.gather(*[flooder.call("server.info") for _ in range(300)], return_exceptions=True)
        limited = [r for r in results if isinstance(r, Exception) and getattr(r, "code", None) == "rate_limited"]
        assert len(limited) > 200
        assert limited[0].details["retry_after_s"] >= 1
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        m = await alice.send_message(chat["chat_id"], "still works for me")
        assert (await bob.next_event("message.new")).payload["seq"] == m["seq"]
    finally:
        for c in (flooder, alice, bob):
            await c.close()


async def test_random_frames_never_break_the_server(server) -> None:
    """Throw hypothesis-generated frames at a live server: every reply is a structured frame and a
    normal client keeps working afterwards."""
    http, ws = await _raw(server.url)
    loop = asyncio.get_running_loop()
    methods = ["server.info", "account.signup", "account.login", "session.open", "message.send", "chat.list",
               "x", "", "message.history"]
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=10)
    frames = st.one_of(
        st.binary(max_size=200),
        st.builds(lambda i, m, p: json.dumps({"id": i, "method": m, "params": p}),
                  st.integers(0, 2**40) | st.text(max_size=70), st.sampled_from(methods) | st.text(max_size=70),
                  st.dictionaries(st.sampled_from(["handle", "password", "chat_id", "text", "token", "cursor",
                                                   "client_id", "display_name", "limit"]), json_values, max_size=5)),
        json_values.map(json.dumps))
    received: list[dict] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames)
    def throw(frame: str | bytes) -> None:
        async def one() -> None:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == aiohttp.WSMsgType.TEXT, f"connection broke on {frame!r}: {msg}"
                data = json.loads(msg.data)
                if "event" in data:
                    continue    # a lucky session.open may start events
                received.append(data)
                assert ("result" in data) != ("error" in data)
                if "error" in data:
                    assert set(data["error"]) <= {"code", "message", "details"} and data["error"]["code"]
                return

        asyncio.run_coroutine_threadsafe(one(), loop).result(10)

    try:
        await loop.run_in_executor(None, throw)
    finally:
        await ws.close()
        await http.close()
    assert len(received) >= 300
    c = Client(server.url)
    try:
        await c.signup("after_fuzz", "Still OK", PASSWORD)
        assert (await c.call("account.me"))["handle"] == "after_fuzz"
    finally:
        await c.close()
    assert "Traceback" not in server.log()
