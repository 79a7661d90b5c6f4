"""Calls (issue 12): ringing on every device, answered elsewhere, decline, busy, missed, signaling
bounds and authorization, TURN credentials coturn accepts. Against a real `dari serve`; media is
tested in test_calls_web.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dari.client import Client
from dari.protocol.errors import DariError
from dari.services.calls import turn_credentials
from tests.conftest import PASSWORD, ServerProcess

SECRET = "s3cret-for-tests"


@pytest.fixture
def call_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory({"DARI_CALL_RING_S": "1.5", "DARI_CALL_OFFLINE_GRACE_S": "0.5",
                           "DARI_TURN_URLS": "turn:127.0.0.1:3478?transport=tcp",
                           "DARI_TURN_SECRET": SECRET, "DARI_TURN_TTL_S": "600",
                           "DARI_STUN_URLS": "stun:127.0.0.1:3478"})


async def person(url: str, name: str, device: str = "one") -> Client:
    c = Client(url)
    await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD, device_name=device)
    await c.wait_live()
    return c


async def second_device(url: str, first: Client) -> Client:
    c = Client(url)
    assert first.user is not None
    await c.login(first.user["handle"], PASSWORD, device_name="two")
    await c.wait_live()
    return c


async def lines(c: Client, chat_id: int) -> list[dict[str, Any]]:
    hist = (await c.call("message.history", chat_id=chat_id))["messages"]
    return [m["system"] for m in hist if m["kind"] == "system" and m.get("system")]


async def test_ring_all_devices_answer_once_then_hangup_line(call_server: ServerProcess) -> None:
    alice = await person(call_server.url, "alice")
    bob = await person(call_server.url, "bob")
    bob2 = await second_device(call_server.url, bob)
    try:
        assert bob.user is not None and alice.user is not None
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        info = await alice.call("call.start", chat_id=chat["chat_id"], video=True)
        assert info["state"] == "ringing" and info["video"] is True
        for dev in (bob, bob2):
            ring = await dev.next_event("call.ringing")
            assert ring.payload["call_id"] == info["call_id"] and ring.payload["caller_id"] == alice.user["user_id"]
        current = await bob2.call("call.current")
        assert [c["call_id"] for c in current] == [info["call_id"]]

        await bob.call("call.accept", call_id=info["call_id"])
        elsewhere = await bob2.next_event("call.answered_elsewhere")
        assert elsewhere.payload["device_id"] == bob.device_id
        with pytest.raises(DariError) as err:
            await bob2.call("call.accept", call_id=info["call_id"])
        assert err.value.details.get("reason") == "answered_elsewhere"
        accepted = await alice.next_event("call.accepted")
        assert accepted.payload["device_id"] == bob.device_id

        # Signaling reaches the device it is addressed to; a device not in the call may not signal.
        await alice.call("call.signal", call_id=info["call_id"], to_device=bob.device_id,
                         payload={"type": "offer", "sdp": "v=0\r\n"})
        sig = await bob.next_event("call.signal")
        assert sig.payload["from_device"] == alice.device_id and sig.payload["payload"]["sdp"] == "v=0\r\n"
        with pytest.raises(DariError) as err:
            await bob2.call("call.signal", call_id=info["call_id"], to_device=alice.device_id,
                            payload={"type": "answer", "sdp": "v=0"})
        assert err.value.code == "forbidden"
        with pytest.raises(DariError) as err:
            await alice.call("call.signal", call_id=info["call_id"], to_device=bob.device_id,
                             payload={"type": "offer", "sdp": "x" * 40000})
        assert err.value.code == "invalid_params"

        await bob.call("call.hangup", call_id=info["call_id"])
        ended = await alice.next_event("call.ended")
        assert ended.payload["state"] == "ended" and ended.payload["reason"] == "hangup"
        sys = await lines(alice, chat["chat_id"])
        assert sys[-1]["event"] == "call_ended" and sys[-1]["video"] is True and sys[-1]["duration_s"] >= 0
        assert sys == await lines(bob, chat["chat_id"])
    finally:
        for c in (alice, bob, bob2):
            await c.close()


async def test_missed_declined_busy_lines(call_server: ServerProcess) -> None:
    alice = await person(call_server.url, "alice")
    bob = await person(call_server.url, "bob")
    carol = await person(call_server.url, "carol")
    try:
        assert alice.user and bob.user and carol.user
        ab = (await alice.call("chat.open_direct", user_id=bob.user["user_id"]))["chat_id"]
        cb = (await carol.call("chat.open_direct", user_id=bob.user["user_id"]))["chat_id"]

        # Nobody answers: after the ring time it is a missed call, on the server's own timer.
        missed = await alice.call("call.start", chat_id=ab)
        ended = await alice.next_event("call.ended", timeout=15)
        assert ended.payload["call_id"] == missed["call_id"] and ended.payload["reason"] == "missed"
        assert (await lines(bob, ab))[-1] == {"event": "call_missed", "actor": {"id": alice.user["user_id"],
                                              "name": "Alice"}, "users": [{"id": bob.user["user_id"],
                                                                          "name": "Bob"}], "video": False}

        declined = await alice.call("call.start", chat_id=ab)
        await bob.next_event("call.ringing")
        await bob.call("call.decline", call_id=declined["call_id"])
        ended = await alice.next_event("call.ended")
        assert ended.payload["reason"] == "declined"
        assert (await lines(alice, ab))[-1]["event"] == "call_declined"

        # Bob is in a call with Alice; Carol's call is busy at once and says so in her chat.
        talk = await alice.call("call.start", chat_id=ab)
        await bob.call("call.accept", call_id=talk["call_id"])
        busy = await carol.call("call.start", chat_id=cb)
        assert busy["state"] == "ended" and busy["reason"] == "busy"
        assert (await lines(carol, cb))[-1]["event"] == "call_busy"
        with pytest.raises(DariError) as err:
            await alice.call("call.start", chat_id=ab)
        assert err.value.details.get("reason") == "in_call"
        # A stranger to the call can neither answer nor hang it up.
        with pytest.raises(DariError) as err:
            await carol.call("call.accept", call_id=talk["call_id"])
        assert err.value.code == "forbidden"
        await alice.call("call.hangup", call_id=talk["call_id"])
    finally:
        for c in (alice, bob, carol):
            await c.close()


async def test_a_device_that_goes_away_leaves_its_call(call_server: ServerProcess) -> None:
    alice = await person(call_server.url, "alice")
    bob = await person(call_server.url, "bob")
    try:
        assert bob.user
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        info = await alice.call("call.start", chat_id=chat["chat_id"])
        await bob.call("call.accept", call_id=info["call_id"])
        await bob.close()   # a closed tab: no hang-up, the connection just ends
        ended = await alice.next_event("call.ended", timeout=15)
        assert ended.payload["call_id"] == info["call_id"] and ended.payload["reason"] == "hangup"
        # ...so neither of them is stuck "in a call".
        again = await alice.call("call.start", chat_id=chat["chat_id"])
        assert again["state"] == "ringing"
        await alice.call("call.hangup", call_id=again["call_id"])
    finally:
        await alice.close()
        await bob.close()


async def test_someone_whose_call_device_vanished_is_not_busy_for_ever(
        server_factory: Callable[..., ServerProcess]) -> None:
    # The grace timer is long (as if the process holding it had restarted and lost it): the next
    # call to that person notices the device is offline and takes it out of the old call.
    srv = server_factory({"DARI_CALL_OFFLINE_GRACE_S": "600"})
    alice, bob, carol = [await person(srv.url, n) for n in ("alice", "bob", "carol")]
    try:
        assert bob.user
        ab = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        cb = await carol.call("chat.open_direct", user_id=bob.user["user_id"])
        old = await alice.call("call.start", chat_id=ab["chat_id"])
        await bob.call("call.accept", call_id=old["call_id"])
        await bob.close()
        fresh = await carol.call("call.start", chat_id=cb["chat_id"])
        assert fresh["state"] == "ringing", fresh
        ended = await alice.next_event("call.ended")
        assert ended.payload["call_id"] == old["call_id"]
        await carol.call("call.hangup", call_id=fresh["call_id"])
    finally:
        for c in (alice, bob, carol):
            await c.close()


async def test_group_voice_call_mesh_membership(call_server: ServerProcess) -> None:
    people = [await person(call_server.url, n) for n in ("alice", "bob", "carol")]
    alice, bob, carol = people
    try:
        assert bob.user and carol.user
        group = await alice.call("chat.create_group", title="trio",
                                 member_ids=[bob.user["user_id"], carol.user["user_id"]])
        with pytest.raises(DariError) as err:
            await alice.call("call.start", chat_id=group["chat_id"], video=True)
        assert err.value.details.get("reason") == "group_video"
        info = await alice.call("call.start", chat_id=group["chat_id"])
        assert info["group"] is True
        await bob.call("call.accept", call_id=info["call_id"])
        await carol.call("call.accept", call_id=info["call_id"])
        # Carol's join reaches both who are already in: each offers to her device (the mesh).
        for c in (alice, bob):
            ev = await c.next_event("call.accepted")
            while ev.payload["user_id"] != carol.user["user_id"]:
                ev = await c.next_event("call.accepted")
        await bob.call("call.hangup", call_id=info["call_id"])
        left = await alice.next_event("call.left")
        assert left.payload["user_id"] == bob.user["user_id"] and left.payload["call"]["state"] == "active"
        await carol.call("call.hangup", call_id=info["call_id"])
        ended = await alice.next_event("call.ended")
        assert ended.payload["reason"] == "hangup"
        events = [s["event"] for s in await lines(alice, group["chat_id"])]
        assert events[-2:] == ["group_call_started", "call_ended"]
    finally:
        for c in people:
            await c.close()


async def test_turn_credentials_are_coturn_rest_api_shaped(call_server: ServerProcess) -> None:
    alice = await person(call_server.url, "alice")
    try:
        assert alice.user
        creds = await alice.call("call.turn_credentials")
        stun, turn = creds["ice_servers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        expiry, uid = turn["username"].split(":")
        assert int(uid) == alice.user["user_id"] and 0 < int(expiry) - time.time() <= 600
        mac = hmac.new(SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(mac).decode()
        assert turn_credentials(SECRET, 7, 60, now_s=1000) == ("1060:7", base64.b64encode(
            hmac.new(SECRET.encode(), b"1060:7", hashlib.sha1).digest()).decode())
    finally:
        await alice.close()


def tone_wav(path: str, seconds: float = 1.0, rate: int = 48000) -> None:
    import math
    import struct
    import wave

    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))


async def test_cli_call_plays_a_file_to_an_sdk_agent_that_records(server: ServerProcess, tmp_path: Any) -> None:
    """`dari call HANDLE --play tone.wav`: the SDK answers, hears the tone and records it."""
    import asyncio
    import json
    import os
    import subprocess
    import sys
    import wave

    from dari.client.calls import CallAgent, wait_connected

    env = {**os.environ, "DARI_HOME": str(tmp_path / "home"), "DARI_PASSWORD": PASSWORD}
    handle = f"alice_{uuid.uuid4().hex[:6]}"
    signup = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dari.cli.main", "account", "signup", handle, "--name", "Alice", "--server", server.url,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(signup.communicate(), 60)
    assert signup.returncode == 0, err.decode()
    bob = await person(server.url, "bob")
    assert bob.user
    agent = CallAgent(bob, record=str(tmp_path / "heard.wav"))
    tone_wav(str(tmp_path / "tone.wav"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dari.cli.main", "call", bob.user["handle"], "--play", str(tmp_path / "tone.wav"),
        "--seconds", "2", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ring = await agent.wait_ringing(timeout=30)
        assert ring["caller_name"] == "Alice"
        await agent.answer(ring)
        await wait_connected(agent, 20)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
        result = json.loads(out)
        assert result["ended"] == "hangup" and result["received_frames"]["audio"] > 0, result
        await asyncio.wait_for(agent.ended.wait(), 15)
        assert agent.received["audio"] >= 25, agent.received   # 2 s of 20 ms frames is 100
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await agent.close()
        await bob.close()
    # What Bob recorded is the tone (through Opus), not the silence an unconnected call sends.
    import array

    with wave.open(str(tmp_path / "heard.wav")) as w:
        assert w.getsampwidth() == 2
        samples = array.array("h", w.readframes(w.getnframes()))
    assert len(samples) > 0 and max(abs(x) for x in samples) > 2000


async def test_coturn_accepts_dari_credentials_and_refuses_expired_ones(server_factory: Callable[..., ServerProcess],
                                                                         tmp_path: Any) -> None:
    """A real TURN allocation over TCP and over TLS with what call.turn_credentials hands out; an
    expired or forged credential gets coturn's 401."""
    import asyncio
    import os
    import ssl

    import aioice.turn
    from aioice.stun import TransactionFailed

    from dari.bench.turn import start_turn, turnserver_path

    if turnserver_path() is None:
        msg = "Debian's coturn is not installed: apt-get install -y coturn"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    turn = start_turn(tmp_path / "turn", SECRET)
    try:
        srv = server_factory({"DARI_TURN_URLS": f"{turn.tcp_url},{turn.tls_url}", "DARI_TURN_SECRET": SECRET,
                              "DARI_TURN_TTL_S": "120"})
        alice = await person(srv.url, "alice")
        try:
            creds = (await alice.call("call.turn_credentials"))["ice_servers"][0]
            assert creds["urls"] == [turn.tcp_url, turn.tls_url]
        finally:
            await alice.close()
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE   # the test's self-signed cert

        async def allocate(port: int, username: str, password: str, tls: bool = False) -> Any:
            transport, _ = await aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol, server_addr=("127.0.0.1", port), username=username, password=password,
                transport="tcp", ssl=insecure if tls else None)
            relayed = transport.get_extra_info("sockname")
            transport.close()
            return relayed

        assert (await allocate(turn.tcp_port, creds["username"], creds["credential"]))[0] == "127.0.0.1"
        assert (await allocate(turn.tls_port, creds["username"], creds["credential"], tls=True))[0] == "127.0.0.1"
        expired = turn_credentials(SECRET, 1, ttl_s=-5)
        forged = turn_credentials("not-the-secret", 1, ttl_s=600)
        for username, password in (expired, forged):
            with pytest.raises(TransactionFailed, match="401"):
                await allocate(turn.tcp_port, username, password)
    finally:
        turn.stop()


async def test_a_call_is_set_up_over_long_poll_and_the_frame_stream(
        server_factory: Callable[..., ServerProcess]) -> None:
    """G6 for calls: ringing, answer and every SDP/ICE signal travel on whatever route the session
    uses; here the caller only has HTTP long-poll and the callee only the plain frame stream."""
    import asyncio

    from dari.client.calls import CallAgent, wait_connected
    from dari.client.routes import Route
    from tests.conftest import free_port

    port = free_port()
    srv = server_factory(args=["--stream-port", str(port)])
    alice = Client(srv.url, routes=[Route("longpoll", srv.url, name="long-poll")])
    bob = Client(srv.url, routes=[Route("stream", f"tcp://127.0.0.1:{port}", name="stream")])
    agents: list[CallAgent] = []
    try:
        for c, n in ((alice, "alice"), (bob, "bob")):
            await c.signup(f"{n}_{uuid.uuid4().hex[:6]}", n.title(), PASSWORD)
            await c.wait_live()
        assert alice.route == "long-poll" and bob.route == "stream"
        assert bob.user
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        caller, callee = CallAgent(alice), CallAgent(bob)
        agents += [caller, callee]
        await caller.place(chat["chat_id"])
        await callee.answer(await callee.wait_ringing(15))
        await wait_connected(caller, 20)
        await asyncio.wait_for(asyncio.gather(caller.first_audio.wait(), callee.first_audio.wait()), 20)
        await caller.hangup()
        await asyncio.wait_for(callee.ended.wait(), 15)
        assert callee.end_reason == "hangup"
    finally:
        for a in agents:
            await a.close()
        await alice.close()
        await bob.close()
