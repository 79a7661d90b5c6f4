"""G1 acked means durable (SIGKILL under load), G2 exactly-once, G3 one order, G7 the outbox."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD


async def test_retry_with_same_client_id_stores_once(make_user, server) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    cid = uuid.uuid4().hex
    first = await alice.call("message.send", chat_id=chat["chat_id"], client_id=cid, text="once")
    again = await alice.call("message.send", chat_id=chat["chat_id"], client_id=cid, text="once")
    rest = await alice.rest("message.send", chat_id=chat["chat_id"], client_id=cid, text="once")
    assert first["seq"] == again["seq"] == rest["seq"]
    await bob.next_event("message.new")
    await alice.send_message(chat["chat_id"], "marker")
    ev = await bob.next_event("message.new")
    assert ev.payload["text"] == "marker"   # the retries delivered nothing in between
    db = sqlite3.connect(server.data_dir / "dari.db")
    assert db.execute("SELECT count(*) FROM messages WHERE client_id = ?", (cid,)).fetchone()[0] == 1


async def test_one_gap_free_order_under_concurrent_senders(make_user) -> None:
    users = [await make_user(f"u{i}") for i in range(4)]
    g = await users[0].call("chat.create_group", title="race",
                            member_ids=[u.user["user_id"] for u in users[1:]])
    sends = [u.send_message(g["chat_id"], f"{i}-{j}") for j in range(25) for i, u in enumerate(users)]
    results = await asyncio.gather(*sends)
    seqs = sorted(r["seq"] for r in results)
    assert seqs == list(range(seqs[0], seqs[0] + 100))
    page = await users[1].call("message.history", chat_id=g["chat_id"], limit=200)
    history = [m["seq"] for m in page["messages"]]
    assert history == list(range(1, len(history) + 1))
    # every member sees the same order live
    orders = []
    for u in users:
        got = [e.payload["seq"] for e in u.drain_events() if e.name == "message.new"]
        while len(got) < 100 + 1:
            got.append((await u.next_event("message.new")).payload["seq"])
        orders.append(got)
    assert all(o == orders[0] for o in orders)


async def test_sigkill_under_load_loses_no_acknowledged_message(server_factory) -> None:
    srv = server_factory()
    senders = [Client(srv.url, reconnect=False, call_timeout=10) for _ in range(4)]
    reader = Client(srv.url)
    await reader.signup("durable_reader", "R", PASSWORD)
    chats = []
    for i, s in enumerate(senders):
        await s.signup(f"durable_{i}", f"S{i}", PASSWORD)
        chats.append((await s.call("chat.open_direct", user_id=reader.user["user_id"]))["chat_id"])
    acked: dict[int, list[tuple[int, str]]] = {c: [] for c in chats}
    stop = asyncio.Event()

    async def load(sender: Client, chat_id: int) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            text = f"{chat_id}:{n}"
            try:
                res = await sender.call("message.send", chat_id=chat_id, client_id=uuid.uuid4().hex, text=text)
            except (TimeoutError, DariError, OSError):
                return
            acked[chat_id].append((res["seq"], text))
            n += 1

    tasks = [asyncio.create_task(load(s, c)) for s, c in zip(senders, chats, strict=True)]
    await asyncio.sleep(1.5)
    srv.kill()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in senders:
        await s.close()
    await reader.close()
    total = sum(len(v) for v in acked.values())
    assert total > 50, "the load did not get going"
    srv.start()
    db = sqlite3.connect(srv.data_dir / "dari.db")
    for chat_id, entries in acked.items():
        stored = dict(db.execute("SELECT seq, text FROM messages WHERE chat_id = ? AND kind = 'text'",
                                 (chat_id,)).fetchall())
        for seq, text in entries:
            assert stored.get(seq) == text, f"acknowledged message {text} (seq {seq}) lost"
        texts = list(stored.values())
        assert len(texts) == len(set(texts)), "a message was stored twice"
        seqs = [r[0] for r in db.execute("SELECT seq FROM messages WHERE chat_id = ? ORDER BY seq", (chat_id,))]
        assert seqs == list(range(1, len(seqs) + 1)), "gap in the chat's sequence"


async def test_outbox_survives_client_restart_and_delivers_in_order_once(server_factory, tmp_path) -> None:
    srv = server_factory()
    box = str(tmp_path / "phone" / "outbox.db")
    a = Client(srv.url, outbox_path=box)
    b = Client(srv.url)
    await a.signup("outbox_a", "A", PASSWORD)
    await b.signup("outbox_b", "B", PASSWORD)
    chat = (await a.call("chat.open_direct", user_id=b.user["user_id"]))["chat_id"]
    token = a.token
    srv.stop()
    ids = [await a.send_message(chat, f"typed offline {i}") for i in range(5)]
    await asyncio.sleep(0.3)
    await a.close()                       # the app is closed with the messages still queued
    await b.close()
    srv.start()
    a2 = Client(srv.url, token=token, outbox_path=box)
    b2 = Client(srv.url)
    try:
        await b2.login("outbox_b", PASSWORD)
        await a2.connect()
        await a2.flush_outbox(20)
        page = await b2.call("message.history", chat_id=chat)
        texts = [m["text"] for m in page["messages"]]
        assert texts == [f"typed offline {i}" for i in range(5)]
        assert [m["client_id"] for m in page["messages"]] == ids
        # exactly once even if the outbox replays an id the server already has
        a2.outbox.add(chat, "typed offline 0", client_id=ids[0])
        await a2.flush_outbox(10)
        page = await b2.call("message.history", chat_id=chat)
        assert len(page["messages"]) == 5
    finally:
        await a2.close()
        await b2.close()


async def test_outbox_keeps_permanent_failures_visible(make_user, tmp_path) -> None:
    alice = await make_user("alice", outbox_path=str(tmp_path / "o.db"))
    bob = await make_user("bob")
    chat = (await alice.call("chat.open_direct", user_id=bob.user["user_id"]))["chat_id"]
    await alice.call("chat.leave", chat_id=chat)   # no longer a member: every retry would fail
    await alice.send_message(chat, "are you there?")
    ev = await alice.next_event("outbox.failed")
    assert ev.payload["code"] == ErrorCode.FORBIDDEN.value
    assert [f[2] for f in alice.outbox.failed()] == ["are you there?"]
