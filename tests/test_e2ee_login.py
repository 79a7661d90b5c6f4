"""A password login on a new device when the account already has a master key (docs/e2ee.md,
"A new device without the master key"): it waits for one of the user's devices to share the keys
instead of making a new master key that would cut the phone off; an explicit reset is the way out."""

from __future__ import annotations

import uuid

import pytest

from conftest import PASSWORD, ServerProcess
from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from test_e2ee_sdk import assert_absent, history_texts, next_message, uid, until


async def _password_device(server: ServerProcess, owner: Client, name: str) -> Client:
    new = Client(server.url)
    assert owner.user is not None
    await new.login(str(owner.user["handle"]), PASSWORD, device_name=name)
    await new.wait_live()
    return new


async def _reads(c: Client, chat_id: int, text: str) -> bool:
    return text in await history_texts(c, chat_id)


async def test_a_password_login_waits_for_the_phone_and_the_phone_keeps_working(
        make_user, server: ServerProcess) -> None:
    friend, phone = await make_user("friend"), await make_user("bob", device_name="phone")
    cid = (await friend.open_direct(uid(phone)))["chat_id"]
    early = ["옛날 메시지 하나", "an earlier message"]
    for t in early:
        await friend.send_message(cid, t)
        assert (await next_message(phone, cid))["text"] == t
    plain = (await friend.create_group("plain room", [uid(phone)], e2ee=False))["chat_id"]
    master = phone.e2ee.machine.master.public  # type: ignore[union-attr]
    pc = await _password_device(server, phone, "office pc")
    try:
        assert pc.e2ee_state == "waiting_for_approval"
        assert phone.e2ee_state == "ready"
        # The PC may not send into the encrypted chat, and nothing of the text reaches the server.
        with pytest.raises(DariError) as info:
            await pc.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="새 PC에서 보낸 비밀")
        assert info.value.code == ErrorCode.FORBIDDEN and info.value.details == {"reason": "awaiting_keys"}
        assert "waiting for your other device to share your encrypted chats' keys" in info.value.message
        assert_absent(server.data_dir, "새 PC에서 보낸 비밀")
        # ...but plaintext chats work.
        said = await pc.call("message.send", chat_id=plain, client_id=uuid.uuid4().hex, text="plain hello from pc")
        assert (await next_message(friend, plain, seq=said["seq"]))["text"] == "plain hello from pc"

        # The phone is asked, not answered for: the request waits for its user.
        ev = await phone.next_event("e2ee.key_request", timeout=15)
        assert ev.payload == {"device_id": pc.device_id, "device_name": "office pc"}
        assert phone.e2ee is not None and phone.e2ee.transfers_sent == []
        assert [r["device_id"] for r in await phone.e2ee_key_requests()] == [pc.device_id]
        assert pc.e2ee_state == "waiting_for_approval"

        # Nothing changed for the friend: same master key, and the phone still talks both ways.
        assert (await friend.safety_number(uid(phone)))["changed"] is False
        assert phone.e2ee.machine is not None and phone.e2ee.machine.master is not None
        assert phone.e2ee.machine.master.public == master
        await friend.send_message(cid, "still there?")
        assert (await next_message(phone, cid))["text"] == "still there?"
        await phone.send_message(cid, "yes, the phone works")
        assert (await next_message(friend, cid))["text"] == "yes, the phone works"

        # The phone approves: the PC gets the master key and the history keys.
        await phone.share_e2ee_keys(pc.device_id)
        linked = await pc.next_event("e2ee.linked", timeout=15)
        assert linked.payload["device_id"] == phone.device_id
        assert pc.e2ee_state == "ready"
        assert pc.e2ee is not None and pc.e2ee.machine is not None and pc.e2ee.machine.master is not None
        assert pc.e2ee.machine.master.public == master
        assert await phone.e2ee_key_requests() == []
        texts = await history_texts(pc, cid)
        assert all(t in texts for t in [*early, "still there?", "yes, the phone works"]), texts
        sent = await pc.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="PC에서 안녕")
        assert sent["e2ee_status"] == "ok"
        assert (await next_message(friend, cid, seq=sent["seq"]))["text"] == "PC에서 안녕"
        await until(lambda: _reads(phone, cid, "PC에서 안녕"))     # the phone reads the PC too
        assert (await friend.safety_number(uid(phone)))["changed"] is False
    finally:
        await pc.close()


async def test_only_a_current_device_that_asked_gets_the_keys(make_user, server: ServerProcess) -> None:
    phone = await make_user("bob", device_name="phone")
    with pytest.raises(DariError) as info:
        await phone.share_e2ee_keys(999_999)
    assert info.value.code == ErrorCode.NOT_FOUND
    pc = await _password_device(server, phone, "stolen password")
    try:
        ev = await phone.next_event("e2ee.key_request", timeout=15)
        assert ev.payload["device_id"] == pc.device_id
        # The user logs the unknown device out instead: the request is gone, and sharing is refused.
        await phone.call("device.revoke", device_id=pc.device_id)
        assert await phone.e2ee_key_requests() == []
        with pytest.raises(DariError) as info:
            await phone.share_e2ee_keys(pc.device_id)
        assert info.value.code == ErrorCode.NOT_FOUND
        assert phone.e2ee is not None and phone.e2ee.transfers_sent == []
    finally:
        await pc.close()


async def test_reset_keys_makes_a_new_master_key_and_the_phone_says_so(make_user, server: ServerProcess) -> None:
    friend, phone = await make_user("friend"), await make_user("bob", device_name="phone")
    cid = (await friend.open_direct(uid(phone)))["chat_id"]
    await friend.send_message(cid, "hello")
    assert (await next_message(phone, cid))["text"] == "hello"
    assert phone.e2ee is not None and phone.e2ee.machine is not None and phone.e2ee.machine.master is not None
    old = phone.e2ee.machine.master.public
    pc = await _password_device(server, phone, "pc")
    try:
        assert pc.e2ee_state == "waiting_for_approval"
        reset = await pc.reset_e2ee()
        assert reset["master_key"] != old and pc.e2ee_state == "ready"
        changed = await friend.next_event("e2ee.key_changed", timeout=15)
        assert changed.payload["user_id"] == uid(phone) and changed.payload["previous"] == old
        assert changed.payload["master_key"] == reset["master_key"]
        # The phone learns it was cut off, says so, and refuses to send rather than fail silently.
        own = await phone.next_event("e2ee.own_key_reset", timeout=15)
        assert own.payload == {"master_key": reset["master_key"], "previous": old}
        assert phone.e2ee_state == "waiting_for_approval"
        with pytest.raises(DariError) as info:
            await phone.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="from the old phone")
        assert info.value.details == {"reason": "awaiting_keys"}
        # It asked the PC for the new key; the PC shares it and the phone is back.
        req = await pc.next_event("e2ee.key_request", timeout=15)
        assert req.payload["device_id"] == phone.device_id
        await pc.share_e2ee_keys(phone.device_id)
        await phone.next_event("e2ee.linked", timeout=15)
        assert phone.e2ee_state == "ready" and phone.e2ee.machine.master.public == reset["master_key"]
        sent = await pc.call("message.send", chat_id=cid, client_id=uuid.uuid4().hex, text="새 열쇠로")
        assert (await next_message(friend, cid, seq=sent["seq"]))["text"] == "새 열쇠로"
    finally:
        await pc.close()


async def test_the_first_device_makes_the_master_key(make_user) -> None:
    alice = await make_user("alice")
    assert alice.e2ee_state == "ready"
    assert alice.e2ee is not None and alice.e2ee.machine is not None and alice.e2ee.machine.master is not None


async def test_a_request_with_a_bad_signature_is_dropped(make_user, server: ServerProcess) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from e2ee_util import b64, curve_key, public, statement

    phone = await make_user("bob", device_name="phone")
    assert phone.user is not None
    raw = [Client(server.url, e2ee=False), Client(server.url, e2ee=False)]
    try:
        for c, name in zip(raw, ("forged", "honest"), strict=True):
            await c.login(str(phone.user["handle"]), PASSWORD, device_name=name)
        for c, good in zip(raw, (False, True), strict=True):
            key, ik = Ed25519PrivateKey.generate(), curve_key()
            signed = statement(uid(phone), int(c.device_id or 0), ik, public(key))
            sig = b64(key.sign(signed if good else signed + b"x"))
            await c.call("todevice.send", messages=[{"device_id": phone.device_id, "payload": {
                "alg": "dari.link_request.v1", "identity_key": ik, "signing_key": public(key),
                "one_time_key": curve_key(), "device_signature": sig}}])
        # Handled in the order sent: when the honest request shows, the forged one was dropped.
        ev = await phone.next_event("e2ee.key_request", timeout=15)
        assert ev.payload == {"device_id": raw[1].device_id, "device_name": "honest"}
        assert [r["device_id"] for r in await phone.e2ee_key_requests()] == [raw[1].device_id]
    finally:
        for c in raw:
            await c.close()
