"""End-to-end encryption through the SDK against a real server (docs/e2ee.md): what users see, and
what the server never sees."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from conftest import PASSWORD, ServerProcess
from dari.client import Client
from dari.client import media as sdk_media
from dari.client.e2ee.codec import b64d, b64e


async def until(pred: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait for a condition the SDK reaches by itself (a deadline, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _value(pred):
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def _value(pred: Callable[[], Any]) -> Any:
    v = pred()
    return await v if asyncio.iscoroutine(v) else v


async def next_message(c: Client, chat_id: int, name: str = "message.new", timeout: float = 15.0,
                       seq: int | None = None) -> dict[str, Any]:
    """The next message someone else sent into the chat (that one message, given its seq)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ev = await c.next_event(name, timeout=max(0.1, deadline - loop.time()))
        p = ev.payload
        if p.get("chat_id") == chat_id and p.get("kind") != "system" and p.get("sender_id") != uid(c) \
                and seq in (None, p.get("seq")):
            return dict(p)


def uid(c: Client) -> int:
    assert c.user is not None
    return int(c.user["user_id"])


async def history_texts(c: Client, chat_id: int) -> list[str]:
    page = await c.call("message.history", chat_id=chat_id)
    return [m["text"] for m in page["messages"] if m["kind"] != "system"]


def server_bytes(data_dir: Path) -> bytes:
    """Every file the server wrote (SQLite database, WAL, logs, blobs)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())


def assert_absent(data_dir: Path, *texts: str) -> None:
    blob = server_bytes(data_dir)
    for t in texts:
        for form in (t.encode(), json.dumps(t).encode()[1:-1], t.encode("utf-16-le")):
            assert form not in blob, f"{t!r} found in the server's files"


async def test_direct_and_group_messages_are_encrypted_and_the_server_never_sees_them(
        make_user, server: ServerProcess) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    direct = await alice.open_direct(uid(bob))
    assert direct["e2ee"] is True
    secret_dm = f"비밀 메시지 안녕하세요 {uuid.uuid4().hex[:8]} 너구리"
    sent = await alice.call("message.send", chat_id=direct["chat_id"], client_id=uuid.uuid4().hex, text=secret_dm)
    assert sent["text"] == secret_dm and sent["e2ee_status"] == "ok" and sent["e2ee"]["alg"] == "megolm.v1"
    got = await next_message(bob, direct["chat_id"])
    assert got["text"] == secret_dm and got["e2ee_status"] == "ok" and got["sender_id"] == uid(alice)
    reply = "答复：收到了，谢谢 " + uuid.uuid4().hex[:8]
    await bob.send_message(direct["chat_id"], reply)
    assert (await next_message(alice, direct["chat_id"]))["text"] == reply

    group = await alice.create_group("비밀 모임", [uid(bob), uid(carol)])
    assert group["e2ee"] is True
    secrets = []
    for who in (alice, bob, carol):
        text = f"그룹 메시지 from {who.user['handle']} 鍵 {uuid.uuid4().hex[:8]}"  # type: ignore[index]
        secrets.append(text)
        await who.call("message.send", chat_id=group["chat_id"], client_id=uuid.uuid4().hex, text=text)
    for reader in (alice, bob, carol):
        await until(lambda r=reader: _has_all(r, group["chat_id"], secrets))
    chats = {ch["chat_id"]: ch for ch in await carol.call("chat.list")}
    assert chats[group["chat_id"]]["last_message"]["text"] == secrets[-1]

    # The server stores envelopes only: no message text anywhere in its database, WAL or logs.
    raw = await bob.rest("message.history", chat_id=direct["chat_id"])
    assert all(m["text"] == "" and m["kind"] == "encrypted" for m in raw["messages"] if m["kind"] != "system")
    assert_absent(server.data_dir, secret_dm, reply, *secrets, "너구리", "비밀 메시지")


async def _has_all(c: Client, chat_id: int, texts: list[str]) -> bool:
    have = await history_texts(c, chat_id)
    return all(t in have for t in texts)


async def test_removed_member_cannot_decrypt_what_is_sent_after(make_user) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    g = await alice.create_group("team", [uid(bob), uid(carol)])
    gid = g["chat_id"]
    before = await alice.call("message.send", chat_id=gid, client_id=uuid.uuid4().hex, text="before removal")
    assert (await next_message(carol, gid))["text"] == "before removal"
    assert (await next_message(bob, gid))["text"] == "before removal"
    await alice.call("chat.remove_member", chat_id=gid, user_id=uid(carol))
    after = await alice.call("message.send", chat_id=gid, client_id=uuid.uuid4().hex, text="after removal")
    assert after["e2ee"]["session_id"] != before["e2ee"]["session_id"]     # rotated
    assert (await next_message(bob, gid))["text"] == "after removal"
    assert carol.e2ee is not None and carol.e2ee.machine is not None
    await carol.e2ee.drain()          # whatever was queued for carol is in
    stolen = {k: after[k] for k in ("chat_id", "seq", "sender_id", "kind", "e2ee")}
    res = carol.e2ee.machine.decrypt(stolen)
    assert res.status == "unknown_session" and "after removal" not in json.dumps(res.content)


async def _link(server: ServerProcess, existing: Client, device_name: str = "pc") -> Client:
    new = Client(server.url)
    start = await new.link_start(device_name)
    await existing.call("device.link_approve", code=start["code"])
    await new.link_wait(start["secret"], timeout=20)
    await new.wait_live()
    return new


async def test_linked_device_reads_history_and_a_key_reset_changes_the_security_code(
        make_user, server: ServerProcess) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.open_direct(uid(bob))
    cid = chat["chat_id"]
    early = ["첫 번째 옛날 메시지", "second old message"]
    for t in early:
        await alice.send_message(cid, t)
    await until(lambda: _has_all(bob, cid, early))
    bob_pc = await _link(server, bob)
    try:
        assert bob.e2ee is not None and bob_pc.e2ee is not None
        assert bob_pc.e2ee.machine is not None and bob_pc.e2ee.machine.master is not None
        assert bob.e2ee.machine is not None and bob.e2ee.machine.master is not None
        assert bob_pc.e2ee.machine.master.public == bob.e2ee.machine.master.public
        assert await history_texts(bob_pc, cid) == early          # history from before the link
        await alice.send_message(cid, "after the link")
        assert (await next_message(bob_pc, cid))["text"] == "after the link"
        assert (await alice.safety_number(uid(bob)))["changed"] is False
        # A password login with no device to share the keys waits; an explicit reset makes a new
        # master key, and contacts are told.
        bob_new = Client(server.url)
        try:
            await bob_new.login(str(bob.user["handle"]), PASSWORD, device_name="new phone")  # type: ignore[index]
            await bob_new.wait_live()
            assert bob_new.e2ee_state == "waiting_for_approval"
            await bob_new.reset_e2ee()
            ev = await alice.next_event("e2ee.key_changed", timeout=15)
            assert ev.payload["user_id"] == uid(bob) and ev.payload["previous"] != ev.payload["master_key"]
            info = await alice.safety_number(uid(bob))
            assert info["changed"] is True and info["verified"] is False
        finally:
            await bob_new.close()
    finally:
        await bob_pc.close()


async def test_revoked_device_cannot_decrypt_new_messages(make_user, server: ServerProcess) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    bob_pc = await _link(server, bob)
    try:
        first = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="to both devices")
        assert (await next_message(bob_pc, cid))["text"] == "to both devices"
        assert (await next_message(bob, cid))["text"] == "to both devices"
        assert alice.e2ee is not None
        seen = alice.e2ee.keys_changed
        await bob.call("device.revoke", device_id=bob_pc.device_id)
        await until(lambda: alice.e2ee is not None and alice.e2ee.keys_changed > seen)
        later = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="phone only")
        assert later["e2ee"]["session_id"] != first["e2ee"]["session_id"]
        assert (await next_message(bob, cid))["text"] == "phone only"
        assert bob_pc.e2ee is not None and bob_pc.e2ee.machine is not None
        stolen = {k: later[k] for k in ("chat_id", "seq", "sender_id", "kind", "e2ee")}
        assert bob_pc.e2ee.machine.decrypt(stolen).status == "unknown_session"
    finally:
        await bob_pc.close()


async def test_tampered_stored_envelope_is_refused(make_user, server: ServerProcess) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    msg = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="do not touch")
    env = dict(msg["e2ee"])
    raw = bytearray(b64d(env["ciphertext"]))
    raw[len(raw) // 2] ^= 0x01
    env["ciphertext"] = b64e(bytes(raw))
    db = sqlite3.connect(server.data_dir / "dari.db", timeout=10)
    with db:
        n = db.execute("UPDATE messages SET e2ee = ? WHERE chat_id = ? AND seq = ?",
                       (json.dumps(env), cid, msg["seq"])).rowcount
    db.close()
    assert n == 1
    page = await bob.call("message.history", chat_id=cid)
    bad = next(m for m in page["messages"] if m["seq"] == msg["seq"])
    assert bad["e2ee_status"] == "tampered" and "could not be decrypted" in bad["text"]
    # The same envelope sent again under another seq by a raw client of alice is a replay.
    raw_alice = Client(server.url, e2ee=False, token=alice.token)
    try:
        replay = await raw_alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, e2ee=msg["e2ee"])
        again = await next_message(bob, cid, seq=replay["seq"])
        assert again["e2ee_status"] == "replayed"
    finally:
        await raw_alice.close()


async def test_edit_reply_react_unsend_in_an_encrypted_chat(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    m1 = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="원래 문장")
    await next_message(bob, cid)
    r = await bob.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="답장", reply_to=m1["seq"])
    got = await next_message(alice, cid)
    assert got["reply_to"] == m1["seq"] and got["text"] == "답장" and r["text"] == "답장"
    edited = await alice.call("message.edit", chat_id=cid, seq=m1["seq"], text="고친 문장")
    assert edited["text"] == "고친 문장" and edited["edited_at"]
    ev = await bob.next_event("message.edited", timeout=15)
    assert ev.payload["text"] == "고친 문장" and ev.payload["e2ee_status"] == "ok"
    await bob.call("message.react", chat_id=cid, seq=m1["seq"], emoji="👍")
    ev = await alice.next_event("message.reaction", timeout=15)
    assert ev.payload["reactions"] == {"👍": [uid(bob)]}
    page = await bob.call("message.history", chat_id=cid)
    first = next(m for m in page["messages"] if m["seq"] == m1["seq"])
    assert first["text"] == "고친 문장" and first["reactions"] == {"👍": [uid(bob)]}
    await bob.call("message.unsend", chat_id=cid, seq=r["seq"])
    await alice.next_event("message.unsent", timeout=15)
    page = await alice.call("message.history", chat_id=cid)
    gone = next(m for m in page["messages"] if m["seq"] == r["seq"])
    assert gone["unsent"] and gone["text"] == ""
    assert await alice.call("message.search", query="답장") == []


async def test_encrypted_photo_round_trip_strips_exif(make_user, server: ServerProcess) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    exif = Image.Exif()
    exif[0x010F] = "GPSCameraSecret"
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 200, 30)).save(buf, format="JPEG", exif=exif)
    sent = await sdk_media.send_file(alice, cid, buf.getvalue(), name="밤하늘.jpg", caption="사진 설명 캡션")
    assert sent["kind"] == "image" and sent["text"] == "사진 설명 캡션"
    got = await next_message(bob, cid)
    att = got["attachment"]
    assert got["kind"] == "image" and att["width"] == 640 and att["name"] == "밤하늘.jpg"
    data = await sdk_media.download_attachment(bob, att)
    assert b"GPSCameraSecret" not in data and Image.open(io.BytesIO(data)).size == (640, 480)
    thumb = await sdk_media.download_attachment(bob, att, thumb=True)
    assert Image.open(io.BytesIO(thumb)).size[0] <= 320
    blob = await sdk_media.download(bob, att["blob_id"])
    assert not blob.startswith(b"\xff\xd8") and len(blob) == att["size"] + 16
    assert_absent(server.data_dir, "GPSCameraSecret", "사진 설명 캡션")


async def test_local_search_finds_korean_and_chinese_substrings(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    texts = ["오늘 저녁에 한국어 공부하자", "我们明天学习中文吧", "plain english words"]
    for t in texts:
        await alice.send_message(cid, t)
    await until(lambda: _has_all(bob, cid, texts))
    for query, expect in (("한국어", texts[0]), ("국어", texts[0]), ("中文", texts[1]), ("学习中文", texts[1]),
                          ("ENGLISH", texts[2])):
        hits = await bob.call("message.search", query=query)
        assert [h["text"] for h in hits] == [expect], query
        assert hits[0]["chat_id"] == cid and hits[0]["chat_title"]


async def test_key_arriving_late_decrypts_the_waiting_message(make_user, server: ServerProcess) -> None:
    """A message whose room key is not in yet shows the notice, then `message.decrypted` once it is."""
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    assert bob.e2ee is not None
    await bob.e2ee._lock.acquire()     # bob's to-device drain waits: the key arrives after the message
    try:
        sent = await alice.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="늦게 도착한 열쇠")
        page = await bob.call("message.history", chat_id=cid)
        first = next(m for m in page["messages"] if m["seq"] == sent["seq"])
        assert first["e2ee_status"] == "unknown_session" and "could not be decrypted" in first["text"]
    finally:
        bob.e2ee._lock.release()
    ev = await bob.next_event("message.decrypted", timeout=15)
    assert ev.payload["text"] == "늦게 도착한 열쇠" and ev.payload["seq"] == sent["seq"]


async def test_a_client_without_its_keys_refuses_to_send_text_into_an_encrypted_chat(
        make_user, server: ServerProcess) -> None:
    """A Client reopened with an old token but no crypto store cannot take over that device's keys:
    E2EE is off on it, and it must not hand the server plaintext for an encrypted chat."""
    import pytest

    from dari.protocol.errors import DariError

    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.open_direct(uid(bob)))["chat_id"]
    again = Client(server.url, token=alice.token)
    try:
        await again.connect()
        assert again.e2ee is not None
        await again.e2ee.wait_ready()
        assert again.e2ee.disabled is not None and "conflict" in again.e2ee.disabled
        with pytest.raises(DariError) as info:
            await again.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="유출되면 안 되는 글")
        assert info.value.details == {"reason": "e2ee_unavailable"}
    finally:
        await again.close()
    assert_absent(server.data_dir, "유출되면 안 되는 글")


async def test_a_new_group_member_reads_from_when_they_joined(make_user) -> None:
    alice, bob, dan = [await make_user(n) for n in ("alice", "bob", "dan")]
    gid = (await alice.create_group("club", [uid(bob)]))["chat_id"]
    old = await alice.call("message.send", chat_id=gid, client_id=uuid.uuid4().hex, text="before dan")
    await alice.call("chat.invite", chat_id=gid, user_ids=[uid(dan)])
    new = await alice.call("message.send", chat_id=gid, client_id=uuid.uuid4().hex, text="welcome dan")
    assert new["e2ee"]["session_id"] == old["e2ee"]["session_id"]     # a join shares, it does not rotate
    assert (await next_message(dan, gid))["text"] == "welcome dan"
    assert dan.e2ee is not None and dan.e2ee.machine is not None
    stolen = {k: old[k] for k in ("chat_id", "seq", "sender_id", "kind", "e2ee")}
    assert dan.e2ee.machine.decrypt(stolen).status == "unknown_session"   # the index before his
    await dan.call("message.send", chat_id=gid, client_id=uuid.uuid4().hex, text="hi all")
    for member in (alice, bob):
        await until(lambda m=member: _has_all(m, gid, ["before dan", "welcome dan", "hi all"]))


async def test_one_time_keys_are_topped_up_when_they_run_low(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    assert (await bob.call("keys.count"))["one_time_key_count"] == 50
    for _ in range(45):    # other devices starting sessions with bob's device
        await alice.call("keys.claim", device_ids=[bob.device_id])
    # Without a top-up 5 would be left; keys.low (below 10) brings the server back to 50, and the
    # claims still running after it take at most 9 of those.
    await until(lambda: _otk_count(bob, 41))
    assert bob.e2ee is not None and bob.e2ee.disabled is None


async def _otk_count(c: Client, want: int) -> bool:
    return bool((await c.call("keys.count"))["one_time_key_count"] >= want)
