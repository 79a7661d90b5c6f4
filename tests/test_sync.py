"""G4 gap-free sync, G5 devices agree, resync after the retention window."""

from __future__ import annotations

import asyncio

from dari.client import Client
from tests.conftest import PASSWORD


async def _collect(client: Client, name: str, count: int, timeout: float = 10.0) -> list[dict]:
    out = []
    while len(out) < count:
        ev = await client.next_event(name, timeout=timeout)
        out.append(ev.payload)
    return out


async def test_resume_after_outage_gets_every_missed_event_in_order(make_user, server) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    cid = chat["chat_id"]
    await bob.send_message(cid, "before")
    await _collect(alice, "message.new", 1)
    # Alice's phone goes away; remember where it was.
    cursor = alice.cursor
    token = alice.token
    await alice.close()
    for i in range(30):
        await bob.send_message(cid, f"missed {i}")
    await bob.call("message.edit", chat_id=cid, seq=5, text="missed 3 (edited)")
    phone = Client(server.url, token=token, cursor=cursor)
    try:
        await phone.connect()
        await phone.wait_live()
        events = phone.drain_events()
        names = [e.name for e in events]
        texts = [e.payload["text"] for e in events if e.name == "message.new"]
        assert texts == [f"missed {i}" for i in range(30)]
        assert "message.edited" in names
        cursors = [e.cursor for e in events if e.cursor is not None]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        # ...then live events follow with none missing.
        m = await bob.send_message(cid, "live again")
        ev = await phone.next_event("message.new")
        assert ev.payload["seq"] == m["seq"]
    finally:
        await phone.close()


async def test_server_restart_mid_conversation_loses_and_duplicates_nothing(server_factory) -> None:
    srv = server_factory()
    a, b = Client(srv.url), Client(srv.url)
    try:
        await a.signup("restart_a", "A", PASSWORD)
        await b.signup("restart_b", "B", PASSWORD)
        await b.wait_live()
        chat = await a.call("chat.open_direct", user_id=b.user["user_id"])
        sent = [await a.send_message(chat["chat_id"], f"before {i}") for i in range(5)]
        assert srv.stop() == 0, "SIGTERM should shut down cleanly"
        assert "finishing in-flight commits" in srv.log()
        srv.start()
        await a.wait_live(20)
        await b.wait_live(20)
        sent += [await a.send_message(chat["chat_id"], f"after {i}") for i in range(5)]
        got = await _collect(b, "message.new", 10, timeout=20)
        assert [m["seq"] for m in got] == [m["seq"] for m in sent]
        assert b.reconnects >= 1
    finally:
        await a.close()
        await b.close()


async def test_devices_agree_on_read_state(make_user, server) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    pc = Client(server.url)
    try:
        await pc.login(alice.user["handle"], PASSWORD, device_name="PC")
        await pc.wait_live()
        chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
        m = await bob.send_message(chat["chat_id"], "did you see this?")
        assert (await pc.next_event("message.new")).payload["seq"] == m["seq"]
        assert (await alice.next_event("message.new")).payload["seq"] == m["seq"]
        phone_list = await alice.call("chat.list")
        assert phone_list[0]["unread"] == 1
        await pc.call("chat.read", chat_id=chat["chat_id"], seq=m["seq"])
        ev = await alice.next_event("chat.read")
        assert ev.payload["user_id"] == alice.user["user_id"] and ev.payload["seq"] == m["seq"]
        assert (await alice.call("chat.list"))[0]["unread"] == 0
        # A message sent on one device shows up on the other device of the same account.
        mine = await pc.send_message(chat["chat_id"], "yes, from the PC")
        ev = await alice.next_event("message.new")
        assert ev.payload["seq"] == mine["seq"] and ev.payload["sender_id"] == alice.user["user_id"]
    finally:
        await pc.close()


async def test_old_cursor_gets_resync_needed(server_factory) -> None:
    srv = server_factory(extra_env={"DARI_EVENT_RETENTION_MAX": "5", "DARI_PRUNE_INTERVAL_S": "0.2"})
    a, b = Client(srv.url), Client(srv.url)
    try:
        await a.signup("resync_a", "A", PASSWORD)
        await b.signup("resync_b", "B", PASSWORD)
        chat = await a.call("chat.open_direct", user_id=b.user["user_id"])
        cursor, token = b.cursor, b.token
        await b.close()
        for i in range(20):
            await a.send_message(chat["chat_id"], f"m{i}")
        await asyncio.sleep(0.6)
        late = Client(srv.url, token=token, cursor=cursor)
        try:
            await late.connect()
            ev = await late.next_event("session.resync")
            assert ev.payload["cursor"] > cursor
            assert late.resyncs == 1
            page = await late.call("message.history", chat_id=chat["chat_id"])
            assert len(page["messages"]) == 20
        finally:
            await late.close()
    finally:
        await a.close()


async def _resume_and_collect(url: str, token: str, cursor: int) -> list[int]:
    """Come back with a saved cursor; the seqs of the messages replayed up to session.live. The
    resume must succeed at the first try (no reconnect in between)."""
    back = Client(url, token=token, cursor=cursor)
    try:
        await back.connect()
        await back.wait_live(30)
        assert back.reconnects == 0
        return [e.payload["seq"] for e in back.drain_events() if e.name == "message.new"]
    finally:
        await back.close()


def _server_holds(server_port: int, client_port: int) -> bool:
    """Whether the server still has an established TCP socket to this client port (/proc/net/tcp)."""
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return state == "01"
    return False


async def test_client_that_stops_reading_is_dropped_then_resumes_without_loss(server_factory) -> None:
    """A device that stops reading must not grow the server's memory: past send_buffer_frames queued
    frames its connection is dropped (close 4008); it resumes by cursor and gets everything, in order."""
    import aiohttp

    from dari.protocol import frames

    srv = server_factory(extra_env={"DARI_SEND_BUFFER_FRAMES": "200", "DARI_MAX_MESSAGE_CHARS": "60000"})
    sender, slow = Client(srv.url), Client(srv.url)
    await sender.signup("fast_sender", "S", PASSWORD)
    await slow.signup("slow_reader", "R", PASSWORD)
    chat = await sender.call("chat.open_direct", user_id=slow.user["user_id"])
    token, cursor = slow.token, slow.cursor
    await slow.close()
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(srv.url.replace("http", "ws") + "/ws", max_msg_size=0)
    try:
        await ws.send_bytes(frames.encode_request(1, "session.open", {"token": token}))
        # ...and never reads again. 24 MB of messages: more than loopback's socket buffers hold.
        sent = [await sender.send_message(chat["chat_id"], f"{i:05d} " + "x" * 59000) for i in range(400)]
        for _ in range(100):
            if "dari_slow_consumer_drops_total 1.0" in await (await http.get(f"{srv.url}/metrics")).text():
                break
            await asyncio.sleep(0.1)
        metrics = await (await http.get(f"{srv.url}/metrics")).text()
        assert "dari_slow_consumer_drops_total 1.0" in metrics
        # The server does not wait for a reader that stopped: its end of the socket is gone, so the
        # megabytes stuck in its buffers are freed without the client reading anything.
        client_port = ws.get_extra_info("sockname")[1]
        for _ in range(100):
            if not _server_holds(srv.port, client_port):
                break
            await asyncio.sleep(0.1)
        assert not _server_holds(srv.port, client_port)
    finally:
        await ws.close()
        await http.close()
    try:
        assert await _resume_and_collect(srv.url, token, cursor) == [m["seq"] for m in sent]
    finally:
        await sender.close()


async def test_resume_with_a_backlog_larger_than_the_send_cap_is_paced_not_dropped(server_factory) -> None:
    """Away while more events piled up than one connection may have queued (send_buffer_frames): the
    replay goes at the client's pace, so the resume succeeds the first time, with everything once."""
    import aiohttp

    srv = server_factory(extra_env={"DARI_SEND_BUFFER_FRAMES": "40"})
    sender, away = Client(srv.url), Client(srv.url)
    await sender.signup("busy_sender", "S", PASSWORD)
    await away.signup("back_later", "B", PASSWORD)
    chat = await sender.call("chat.open_direct", user_id=away.user["user_id"])
    await away.wait_live(10)
    away.drain_events()
    token, cursor = away.token, away.cursor
    await away.close()
    sent = [await sender.send_message(chat["chat_id"], f"while away {i}") for i in range(300)]
    try:
        assert await _resume_and_collect(srv.url, token, cursor) == [m["seq"] for m in sent]
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(f"{srv.url}/metrics")).text()
        assert "dari_slow_consumer_drops_total 0.0" in metrics
    finally:
        await sender.close()


async def test_dropping_a_stopped_reader_mid_fanout_delivers_to_everyone_else(server_factory) -> None:
    """A group member who stops reading is dropped while a message fans out: the sender still gets
    every answer (none hangs) and the members who read get every message, in order."""
    from dari.bench.wire import small_buffer_session
    from dari.protocol import frames

    srv = server_factory(extra_env={"DARI_SEND_BUFFER_FRAMES": "40", "DARI_SOCKET_SEND_BUFFER": "16384"})
    sender, reader, stopper = Client(srv.url), Client(srv.url), Client(srv.url)
    await sender.signup("fan_sender", "S", PASSWORD)
    await reader.signup("fan_reader", "R", PASSWORD)
    await stopper.signup("fan_stopper", "T", PASSWORD)
    group = await sender.call("chat.create_group", title="fan",
                              member_ids=[reader.user["user_id"], stopper.user["user_id"]])
    token = stopper.token
    await stopper.close()
    http = small_buffer_session()   # a small TCP window: the kernel does not soak up megabytes
    ws = await http.ws_connect(srv.url.replace("http", "ws") + "/ws", max_msg_size=0)
    try:
        await ws.send_bytes(frames.encode_request(1, "session.open", {"token": token}))
        await reader.wait_live(10)
        reader.drain_events()
        seqs = []
        for i in range(800):   # 1.6 MB: more than the socket buffers and aiohttp's read queue hold
            # A hang here is the bug: a failed publish used to leave the whole commit batch unanswered.
            sent = await asyncio.wait_for(
                sender.call("message.send", chat_id=group["chat_id"], client_id=f"fan{i}", text=f"{i} " + "y" * 2000),
                20)
            seqs.append(sent["seq"])
        metrics = await (await http.get(f"{srv.url}/metrics")).text()
        assert "dari_slow_consumer_drops_total 1.0" in metrics
    finally:
        await ws.close()
        await http.close()
    try:
        got: list[int] = []
        for _ in range(200):
            got += [e.payload["seq"] for e in reader.drain_events() if e.name == "message.new"]
            if len(got) >= len(seqs):
                break
            await asyncio.sleep(0.05)
        assert got == seqs
        assert "Traceback" not in srv.log()
    finally:
        await reader.close()
        await sender.close()
