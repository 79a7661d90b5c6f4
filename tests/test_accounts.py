"""Accounts, devices, friends and blocks through the SDK against a real server (G5, G9)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import pytest

from dari.client import Client
from dari.client.client import phone_hash
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD


async def test_signup_conflict_and_login(server, make_user) -> None:
    alice = await make_user("alice")
    c = Client(server.url)
    try:
        with pytest.raises(DariError) as info:
            await c.signup(alice.user["handle"], "Other", PASSWORD)
        assert info.value.code == ErrorCode.CONFLICT
        with pytest.raises(DariError) as info:
            await c.login(alice.user["handle"], "wrong password!")
        assert info.value.code == ErrorCode.UNAUTHENTICATED
        res = await c.login(alice.user["handle"], PASSWORD, device_name="PC")
        assert res["user"]["user_id"] == alice.user["user_id"]
        devices = await c.call("device.list")
        assert {d["name"] for d in devices} == {"test", "PC"}
        assert [d["current"] for d in devices].count(True) == 1
    finally:
        await c.close()


async def test_passwords_argon2id_and_tokens_hashed(server, make_user) -> None:
    alice = await make_user("alice")
    db = sqlite3.connect(server.data_dir / "dari.db")
    pw = db.execute("SELECT password_hash FROM users WHERE id = ?", (alice.user["user_id"],)).fetchone()[0]
    assert pw.startswith("$argon2id$") and PASSWORD not in pw
    hashes = [r[0] for r in db.execute("SELECT token_hash FROM devices")]
    assert alice.token not in hashes and all(len(h) == 64 for h in hashes)


async def test_revoked_device_drops_at_once(server, make_user) -> None:
    alice = await make_user("alice")
    pc = Client(server.url)
    await pc.login(alice.user["handle"], PASSWORD, device_name="PC")
    await pc.wait_live()
    await alice.call("device.revoke", device_id=pc.device_id)
    ev = await pc.next_event("session.revoked", timeout=5)
    assert ev.payload["reason"]
    for _ in range(50):
        if pc.state == "logged-out":
            break
        await asyncio.sleep(0.05)
    assert pc.state == "logged-out"
    with pytest.raises(DariError) as info:
        await Client(server.url, token=pc.token or "x" * 43).rest("account.me")
    assert info.value.code == ErrorCode.UNAUTHENTICATED
    await pc.close()


async def test_profile_password_privacy_delete(server, make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    await bob.call("friend.add", handle=alice.user["handle"])
    me = await alice.call("account.update_profile", display_name="앨리스", status_message="hiking")
    assert me["display_name"] == "앨리스"
    ev = await bob.next_event("profile.updated")
    assert ev.payload["display_name"] == "앨리스" and ev.payload["status_message"] == "hiking"
    with pytest.raises(DariError) as info:
        await alice.call("account.change_password", old_password="not the password", new_password="newpass123")
    assert info.value.code == ErrorCode.FORBIDDEN
    await alice.call("account.change_password", old_password=PASSWORD, new_password="newpass123")
    c = Client(server.url)
    await c.login(alice.user["handle"], "newpass123")
    await c.close()
    me = await alice.call("account.set_privacy", presence_visibility="nobody")
    assert me["presence_visibility"] == "nobody"
    [p] = await bob.call("presence.get", user_ids=[alice.user["user_id"]])
    assert p["online"] is False and p["last_seen_at"] is None
    await alice.call("account.delete", password="newpass123")
    with pytest.raises(DariError) as info:
        await bob.call("user.get", handle=alice.user["handle"])
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_friends_one_way_favourite_hide(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    f = await alice.call("friend.add", handle=bob.user["handle"])
    assert f["mutual"] is False
    assert await bob.call("friend.list") == []
    await bob.call("friend.add", handle=alice.user["handle"])
    [f] = await alice.call("friend.list")
    assert f["mutual"] is True
    f = await alice.call("friend.update", user_id=bob.user["user_id"], favourite=True, hidden=True)
    assert f["favourite"] and f["hidden"]
    await alice.call("friend.remove", user_id=bob.user["user_id"])
    assert await alice.call("friend.list") == []
    with pytest.raises(DariError) as info:
        await alice.call("friend.add", handle="nobody_" + uuid.uuid4().hex[:8])
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_find_friends_by_contacts_never_sends_numbers(server) -> None:
    c = Client(server.url)
    d = Client(server.url)
    try:
        await c.signup("carol_" + uuid.uuid4().hex[:6], "Carol", PASSWORD, phone="+82 10-1234-5678")
        await d.signup("dave_" + uuid.uuid4().hex[:6], "Dave", PASSWORD)
        # The same number in Korea's national format matches (normalized to E.164 before hashing).
        hashes = await d.contact_hashes(["010-1234-5678", "+1 650-253-0000"], region="KR")
        found = await d.call("friend.find_by_contacts", phone_hashes=hashes)
        assert [u["handle"] for u in found] == [c.user["handle"]]
        info = await d.call("server.info")
        assert phone_hash(info["contact_key"], "+821012345678", "US") in hashes
    finally:
        await c.close()
        await d.close()


async def test_block(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    chat = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
    await alice.call("friend.block", user_id=bob.user["user_id"])
    # Nothing tells bob he is blocked (tests/test_block_neutral.py covers what alice sees).
    added = await bob.call("friend.add", handle=alice.user["handle"])
    assert added["user"]["user_id"] == alice.user["user_id"]
    sent = await bob.call("message.send", chat_id=chat["chat_id"], client_id="b1", text="hello?")
    assert sent["seq"] >= 1 and sent["unread"] == 1
    await alice.call("account.update_profile", status_message="secret status")
    prof = await bob.call("user.get", user_id=alice.user["user_id"])
    assert prof["status_message"] == ""
    assert [u["user_id"] for u in await alice.call("friend.blocked")] == [bob.user["user_id"]]
    await alice.call("friend.unblock", user_id=bob.user["user_id"])
    await bob.send_message(chat["chat_id"], "hello again")


async def test_unauthenticated_and_unauthorized(server, make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    eve = await make_user("eve")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    await alice.send_message(chat["chat_id"], "private")
    anon = Client(server.url)
    try:
        with pytest.raises(DariError) as info:
            await anon.rest("chat.list")
        assert info.value.code == ErrorCode.UNAUTHENTICATED
    finally:
        await anon.close()
    for method, params in [("message.history", {"chat_id": chat["chat_id"]}),
                           ("chat.get", {"chat_id": chat["chat_id"]}),
                           ("message.send", {"chat_id": chat["chat_id"], "client_id": "e1", "text": "hi"}),
                           ("chat.read", {"chat_id": chat["chat_id"], "seq": 1}),
                           ("typing.set", {"chat_id": chat["chat_id"]}),
                           ("message.react", {"chat_id": chat["chat_id"], "seq": 1, "emoji": "👍"})]:
        with pytest.raises(DariError) as info:
            await eve.call(method, **params)
        assert info.value.code == ErrorCode.FORBIDDEN, method
    assert await eve.call("message.search", query="private") == []
    with pytest.raises(DariError) as info:
        await bob.call("message.edit", chat_id=chat["chat_id"], seq=1, text="forged")
    assert info.value.code == ErrorCode.FORBIDDEN


async def test_metrics_and_health(server, make_user) -> None:
    import aiohttp

    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    for i in range(3):
        await alice.send_message(chat["chat_id"], f"m{i}")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["version"]
        async with http.get(f"{server.url}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{server.url}/openapi.json") as resp:
            spec = await resp.json()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["dari_messages_total"] == 3
    assert values["dari_connections"] == 2
    assert values["dari_commit_batches"] >= 1
    assert "/api/v1/message.send" in spec["paths"]


async def test_cached_tokens_refused_after_revoke_suspend_and_delete(server_factory) -> None:
    """Token lookups are cached in the server; every way a device goes away must refuse it at once."""
    op_handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": op_handle})
    op, phone, troll, gone = Client(srv.url), Client(srv.url), Client(srv.url), Client(srv.url)
    try:
        await op.signup(op_handle, "Operator", PASSWORD)
        await phone.login(op_handle, PASSWORD, device_name="phone")
        await troll.signup(f"troll_{uuid.uuid4().hex[:6]}", "Troll", PASSWORD)
        await gone.signup(f"gone_{uuid.uuid4().hex[:6]}", "Gone", PASSWORD)
        tokens = []
        for c in (phone, troll, gone):   # each token is now in the server's cache
            await c.wait_live()
            await c.rest("account.me")
            assert c.token
            tokens.append(c.token)
        await op.call("device.revoke", device_id=phone.device_id)
        await op.call("admin.suspend", user_id=troll.user["user_id"], days=1, reason="test")
        await gone.call("account.delete", password=PASSWORD)
        for token in tokens:
            probe = Client(srv.url, token=token)
            try:
                with pytest.raises(DariError) as info:
                    await probe.rest("account.me")
                assert info.value.code == ErrorCode.UNAUTHENTICATED
            finally:
                await probe.close()
    finally:
        for c in (op, phone, troll, gone):
            await c.close()


async def test_device_last_seen_follows_session_open(server, make_user) -> None:
    """devices.last_seen_at is kept in memory on session.open (and when the device's last connection
    closes), shown by device.list at once, and written by a periodic flush or at shutdown."""
    alice = await make_user("alice")
    [before] = await alice.call("device.list")
    await asyncio.sleep(0.05)
    again = Client(server.url, token=alice.token)
    try:
        await again.connect()
        await again.wait_live()
        [after] = await again.call("device.list")
        assert after["last_seen_at"] > before["last_seen_at"]
    finally:
        await again.close()
    await alice.close()
    assert server.stop() == 0
    db = sqlite3.connect(server.data_dir / "dari.db")
    stored = db.execute("SELECT last_seen_at FROM devices WHERE id = ?", (after["device_id"],)).fetchone()[0]
    db.close()
    # Written at shutdown: the moment its last connection closed (after `after`, never before).
    assert stored >= after["last_seen_at"]
