"""End-to-end encryption, server side (docs/e2ee.md), on SQLite and PostgreSQL: key bundles whose
signatures the server checks, one-time keys handed out once, the to-device queue, and encrypted
chats that refuse plaintext and carry envelopes through every message operation."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dari.bus import Bus
from dari.config import Settings
from dari.protocol.envelope import b64decode, canonical, device_statement
from dari.protocol.errors import DariError, ErrorCode
from dari.services.core import Caller
from dari.services.registry import Services
from dari.storage import open_database
from tests.e2ee_util import b64, bundle, curve_key, envelope
from tests.test_storage_contract import Svc, db_url, pg_url  # noqa: F401  (fixtures)

QUEUE_MAX = 30


def settings(tmp_path: Path) -> Settings:
    return Settings(argon2_time_cost=1, argon2_memory_kib=8192, data_dir=str(tmp_path / "data"),
                    todevice_queue_max=QUEUE_MAX)


@pytest.fixture
async def svc(db_url: str, tmp_path: Path) -> AsyncIterator[Svc]:  # noqa: F811
    services = Services(settings(tmp_path), open_database(db_url), Bus())
    await services.start()
    yield Svc(services)
    await services.close()


async def _error(coro: Any) -> DariError:
    with pytest.raises(DariError) as exc:
        await coro
    return exc.value


async def _login(svc: Svc, handle: str) -> Caller:
    res = await svc.call(None, "account.login", handle=handle, password="correct horse battery", device_name="pc")
    return Caller(res["user"]["user_id"], res["device_id"])


async def _events(svc: Svc, who: Caller, name: str) -> list[dict[str, Any]]:
    batch = await svc.call(who, "sync.events", cursor=0, limit=1000)
    return [e["payload"] for e in batch["events"] if e["event"] == name]


# -- keys ---------------------------------------------------------------------------------------


def test_canonical_json_and_the_signed_statement_follow_the_contract() -> None:
    assert device_statement(7, 12, "IK", "SK") == (
        b'{"alg":"dari-device-v1","device_id":12,"identity_key":"IK","signing_key":"SK","user_id":7}')
    expected = '{"a":[1,{"c":true,"d":null}],"b":"안녕"}'.encode()
    assert canonical({"b": "안녕", "a": [1, {"d": None, "c": True}]}) == expected
    assert b64decode(b64(b"\x00\xff" * 16)) == b"\x00\xff" * 16
    with pytest.raises(ValueError):
        b64decode("not base64!")


async def test_upload_checks_both_signatures_and_keeps_device_keys(svc: Svc) -> None:
    alice = await svc.signup("alice")
    bob = await svc.signup("bob")
    await svc.call(bob, "friend.add", handle="alice")
    master = Ed25519PrivateKey.generate()
    good = bundle(alice.user_id, alice.device_id, master)

    # Forged: signed by a key that is not the bundle's signing key, or not by the master key.
    forged_device = {**good, "device_signature": bundle(alice.user_id, alice.device_id, master)["device_signature"]}
    forged_master = {**good, "master_signature": b64(Ed25519PrivateKey.generate().sign(b"x"))}
    for forged, field in ((forged_device, "device_signature"), (forged_master, "master_signature")):
        err = await _error(svc.call(alice, "keys.upload", **forged))
        assert err.code == ErrorCode.INVALID_PARAMS and err.details == {"reason": "bad_signature", "field": field}
    # Signed for another device (replayed from elsewhere): the statement names the device.
    other = bundle(alice.user_id, alice.device_id + 1000, master)
    assert (await _error(svc.call(alice, "keys.upload", **other))).details["reason"] == "bad_signature"
    half = {k: v for k, v in good.items() if k != "master_signature"}
    assert (await _error(svc.call(alice, "keys.upload", **half))).details["reason"] == "incomplete_bundle"
    assert (await _error(svc.call(alice, "keys.upload", one_time_keys={"k1": curve_key()}))
            ).details["reason"] == "bundle_required"
    assert await svc.call(alice, "keys.query", user_ids=[alice.user_id]) == {"users": []}

    res = await svc.call(alice, "keys.upload", **good, one_time_keys={"k1": curve_key(), "k2": curve_key()})
    assert res == {"one_time_key_count": 2}
    assert await _events(svc, bob, "keys.changed") == [{"user_id": alice.user_id}]
    # The same bundle again stores nothing new and tells nobody.
    await svc.call(alice, "keys.upload", **good)
    assert len(await _events(svc, bob, "keys.changed")) == 1
    # A device's identity and signing keys never change.
    err = await _error(svc.call(alice, "keys.upload", **bundle(alice.user_id, alice.device_id, master)))
    assert err.code == ErrorCode.CONFLICT and err.details == {"reason": "keys_immutable"}

    got = await svc.call(bob, "keys.query", user_ids=[alice.user_id, bob.user_id, 99999])
    assert got == {"users": [{"user_id": alice.user_id, "master_key": good["master_key"], "devices": [
        {"user_id": alice.user_id, "device_id": alice.device_id, **good}]}]}

    # A second device with a new master key (no old device to link from): it becomes the user's.
    pc = await _login(svc, "alice")
    new_master = Ed25519PrivateKey.generate()
    pc_bundle = bundle(pc.user_id, pc.device_id, new_master)
    await svc.call(pc, "keys.upload", **pc_bundle)
    users = (await svc.call(bob, "keys.query", user_ids=[alice.user_id]))["users"]
    assert users[0]["master_key"] == pc_bundle["master_key"]
    assert [d["device_id"] for d in users[0]["devices"]] == [alice.device_id, pc.device_id]
    assert len(await _events(svc, bob, "keys.changed")) == 2
    # The phone re-uploading its unchanged bundle (e.g. on restart) does not bring the old master back.
    await svc.call(alice, "keys.upload", **good)
    assert (await svc.call(bob, "keys.query", user_ids=[alice.user_id]))["users"][0]["master_key"] == \
        pc_bundle["master_key"]
    assert len(await _events(svc, bob, "keys.changed")) == 2

    # Revoking a device with keys removes them and tells contacts.
    await svc.call(alice, "device.revoke", device_id=pc.device_id)
    users = (await svc.call(bob, "keys.query", user_ids=[alice.user_id]))["users"]
    assert [d["device_id"] for d in users[0]["devices"]] == [alice.device_id]
    assert len(await _events(svc, bob, "keys.changed")) == 3
    # So does deleting the account.
    await svc.call(alice, "account.delete", password="correct horse battery")
    assert len(await _events(svc, bob, "keys.changed")) == 4
    assert await svc.call(bob, "keys.query", user_ids=[alice.user_id]) == {"users": []}


async def test_one_time_key_bounds(svc: Svc) -> None:
    alice = await svc.signup("alice")
    await svc.call(alice, "keys.upload", **bundle(alice.user_id, alice.device_id, Ed25519PrivateKey.generate()))
    too_many = {f"k{i}": curve_key() for i in range(101)}
    assert (await _error(svc.call(alice, "keys.upload", one_time_keys=too_many))).code == ErrorCode.INVALID_PARAMS
    assert (await _error(svc.call(alice, "keys.upload", one_time_keys={"x" * 65: curve_key()}))
            ).code == ErrorCode.INVALID_PARAMS
    assert (await _error(svc.call(alice, "keys.upload", one_time_keys={"k": "not a key"}))
            ).code == ErrorCode.INVALID_PARAMS
    for batch in range(2):
        await svc.call(alice, "keys.upload", one_time_keys={f"b{batch}-{i}": curve_key() for i in range(100)})
    err = await _error(svc.call(alice, "keys.upload", one_time_keys={"one-more": curve_key()}))
    assert err.code == ErrorCode.LIMIT_EXCEEDED and err.details["limit"] == 200
    assert (await svc.call(alice, "keys.count")) == {"one_time_key_count": 200, "fallback": False}
    err = await _error(svc.call(alice, "keys.upload", one_time_keys={"b0-0": curve_key()}))
    assert err.code == ErrorCode.CONFLICT and err.details["reason"] == "key_id_reused"


async def _stock(svc: Svc, who: Caller, n: int) -> dict[str, str]:
    keys = {f"otk{i}": curve_key() for i in range(n)}
    await svc.call(who, "keys.upload", **bundle(who.user_id, who.device_id, Ed25519PrivateKey.generate()),
                   one_time_keys=keys, fallback_key={"key_id": "fb", "key": curve_key()})
    return keys


async def test_claims_hand_each_key_out_once_then_the_fallback(svc: Svc) -> None:
    alice = await svc.signup("alice")
    keys = await _stock(svc, alice, 40)
    claimers = [await svc.signup(f"user{i}") for i in range(5)]
    got = await asyncio.gather(*(svc.call(claimers[i % 5], "keys.claim", device_ids=[alice.device_id])
                                 for i in range(50)))
    one_time = [g["keys"][str(alice.device_id)] for g in got if not g["keys"][str(alice.device_id)]["fallback"]]
    fallback = [g["keys"][str(alice.device_id)] for g in got if g["keys"][str(alice.device_id)]["fallback"]]
    assert sorted(k["key_id"] for k in one_time) == sorted(keys)          # every key, each once
    assert all(keys[k["key_id"]] == k["key"] for k in one_time)
    assert len(fallback) == 10 and {k["key_id"] for k in fallback} == {"fb"}   # not used up
    assert await svc.call(alice, "keys.count") == {"one_time_key_count": 0, "fallback": True}
    # A device with no keys at all is absent.
    bare = claimers[0]
    assert (await svc.call(alice, "keys.claim", device_ids=[bare.device_id, alice.device_id]))["keys"].keys() == {
        str(alice.device_id)}


async def test_claims_from_two_nodes_on_postgresql_never_share_a_key(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    nodes = [Svc(Services(settings(tmp_path / f"n{i}"), open_database(pg_url), Bus())) for i in range(2)]
    for node in nodes:
        await node.s.start()
    try:
        a, b = nodes
        alice = await a.signup("alice")
        keys = await _stock(a, alice, 60)
        bob = await b.signup("bob")
        got = await asyncio.gather(*(nodes[i % 2].call(bob if i % 2 else alice, "keys.claim",
                                                       device_ids=[alice.device_id]) for i in range(60)))
        ids = [g["keys"][str(alice.device_id)]["key_id"] for g in got]
        assert sorted(ids) == sorted(keys)
    finally:
        for node in nodes:
            await node.s.close()


# -- to-device ----------------------------------------------------------------------------------


async def test_todevice_queue_fetch_paging_ack_and_bound(svc: Svc) -> None:
    alice = await svc.signup("alice")
    bob = await svc.signup("bob")
    bob_pc = await _login(svc, "bob")
    msgs = [{"device_id": bob.device_id, "payload": {"alg": "olm.v1", "n": i}} for i in range(12)]
    res = await svc.call(alice, "todevice.send", messages=[*msgs, {"device_id": 99999, "payload": {}}])
    assert res == {"sent": 12, "unknown_devices": [99999]}
    page = await svc.call(bob, "todevice.fetch", after=0, limit=5)
    assert [m["payload"]["n"] for m in page["messages"]] == [0, 1, 2, 3, 4] and page["has_more"]
    first = page["messages"][0]
    assert (first["sender_id"], first["sender_device"]) == (alice.user_id, alice.device_id)
    page2 = await svc.call(bob, "todevice.fetch", after=page["messages"][-1]["id"], limit=100)
    assert [m["payload"]["n"] for m in page2["messages"]] == list(range(5, 12)) and not page2["has_more"]
    # Addressed to one device: the user's other device has nothing.
    assert (await svc.call(bob_pc, "todevice.fetch"))["messages"] == []
    # Ack deletes up to the id, and only the caller's own messages.
    assert (await svc.call(bob_pc, "todevice.ack", up_to=10**9)) == {"deleted": 0, "remaining": 0}
    assert (await svc.call(bob, "todevice.ack", up_to=page["messages"][-1]["id"])) == {"deleted": 5, "remaining": 7}
    assert [m["payload"]["n"] for m in (await svc.call(bob, "todevice.fetch"))["messages"]] == list(range(5, 12))

    # Bounded per device: past the cap, the oldest go.
    await svc.call(alice, "todevice.send", messages=[{"device_id": bob.device_id, "payload": {"n": 100 + i}}
                                                    for i in range(QUEUE_MAX)])
    left = (await svc.call(bob, "todevice.fetch", limit=500))["messages"]
    assert [m["payload"]["n"] for m in left] == [100 + i for i in range(QUEUE_MAX)]

    big = {"body": "A" * 65536}
    err = await _error(svc.call(alice, "todevice.send", messages=[{"device_id": bob.device_id, "payload": big}]))
    assert err.code == ErrorCode.LIMIT_EXCEEDED and err.details["reason"] == "payload_too_large"
    err = await _error(svc.call(alice, "todevice.send", messages=[{"device_id": bob.device_id, "payload": {}}] * 201))
    assert err.code == ErrorCode.INVALID_PARAMS


async def test_old_todevice_messages_are_pruned_after_30_days(svc: Svc) -> None:
    alice = await svc.signup("alice")
    bob = await svc.signup("bob")
    await svc.call(alice, "todevice.send", messages=[{"device_id": bob.device_id, "payload": {"n": i}}
                                                    for i in range(2)])
    await svc.s.core.db.write(lambda tx: tx.execute(
        "UPDATE to_device SET created_at = created_at - ? WHERE id = (SELECT MIN(id) FROM to_device)",
        (31 * 86400 * 1000,)))
    await svc.s.sync.prune()
    assert [m["payload"]["n"] for m in (await svc.call(bob, "todevice.fetch"))["messages"]] == [1]


# -- encrypted chats ----------------------------------------------------------------------------


async def _people(svc: Svc) -> tuple[Caller, Caller, Caller]:
    alice, bob, carol = [await svc.signup(n) for n in ("alice", "bob", "carol")]
    await svc.call(alice, "friend.add", handle="bob")
    return alice, bob, carol


async def test_plaintext_refused_in_e2ee_chats_and_envelopes_in_plaintext_ones(svc: Svc) -> None:
    alice, bob, carol = await _people(svc)
    plain = (await svc.call(alice, "chat.create_group", title="plain", member_ids=[bob.user_id]))["chat_id"]
    group = await svc.call(alice, "chat.create_group", title="secret", member_ids=[bob.user_id], e2ee=True)
    secret = group["chat_id"]
    assert group["e2ee"] is True
    listed = {c["chat_id"]: c["e2ee"] for c in await svc.call(bob, "chat.list")}
    assert listed == {plain: False, secret: True}

    for method, params in (("message.send", {"text": "hello"}),
                           ("message.send_media", {"blob_id": "a" * 64}),
                           ("message.send_sticker", {"sticker_id": 1})):
        err = await _error(svc.call(alice, method, chat_id=secret, client_id=f"c-{method}", **params))
        assert err.code == ErrorCode.INVALID_PARAMS and err.details == {"reason": "e2ee_required"}, method
    err = await _error(svc.call(alice, "message.send", chat_id=plain, client_id="e1", e2ee=envelope(alice.device_id)))
    assert err.code == ErrorCode.INVALID_PARAMS and err.details == {"reason": "e2ee_not_enabled"}
    err = await _error(svc.call(alice, "message.send", chat_id=secret, client_id="both", text="x",
                                e2ee=envelope(alice.device_id)))
    assert err.code == ErrorCode.INVALID_PARAMS
    bad = {**envelope(alice.device_id), "ciphertext": "A" * 87383}
    err = await _error(svc.call(alice, "message.send", chat_id=secret, client_id="big", e2ee=bad))
    assert err.code == ErrorCode.INVALID_PARAMS and err.details == {"field": "e2ee"}
    for broken in ({"alg": "olm.v1"}, {"v": 2}, {"session_id": "s" * 101}, {"extra": 1}, {"ciphertext": "no spaces"}):
        err = await _error(svc.call(alice, "message.send", chat_id=secret, client_id="bad",
                                    e2ee={**envelope(alice.device_id), **broken}))
        assert err.code == ErrorCode.INVALID_PARAMS, broken
    # Still plaintext: a plain chat works as before, and nothing half-stored in the secret one.
    ok = await svc.call(alice, "message.send", chat_id=plain, client_id="p1", text="hi")
    assert ok["kind"] == "text" and ok["e2ee"] is None
    history = await svc.call(bob, "message.history", chat_id=secret)
    assert [m["kind"] for m in history["messages"]] == ["system"]

    # Open chats are never encrypted.
    room = await svc.call(alice, "chat.create_open", title="room", nickname="A")
    err = await _error(svc.call(alice, "chat.enable_e2ee", chat_id=room["chat_id"]))
    assert err.code == ErrorCode.INVALID_PARAMS and err.details == {"reason": "e2ee_open_chat"}
    assert (await _error(svc.call(carol, "chat.enable_e2ee", chat_id=plain))).code == ErrorCode.FORBIDDEN


async def test_enabling_e2ee_is_one_way_with_a_system_line(svc: Svc) -> None:
    alice, bob, carol = await _people(svc)
    direct = await svc.call(alice, "chat.open_direct", user_id=bob.user_id)
    assert direct["e2ee"] is False
    await svc.call(alice, "message.send", chat_id=direct["chat_id"], client_id="before", text="plain before")
    # open_direct with e2ee switches the existing 1:1 chat on; again, nothing changes.
    on = await svc.call(bob, "chat.open_direct", user_id=alice.user_id, e2ee=True)
    assert on["chat_id"] == direct["chat_id"] and on["e2ee"] is True
    again = await svc.call(alice, "chat.enable_e2ee", chat_id=direct["chat_id"])
    assert again["e2ee"] is True
    off = await svc.call(alice, "chat.open_direct", user_id=bob.user_id)   # e2ee false: never switches off
    assert off["e2ee"] is True
    page = await svc.call(alice, "message.history", chat_id=direct["chat_id"])
    systems = [m for m in page["messages"] if m["kind"] == "system"]
    assert [(m["system"]["event"], m["system"]["actor"]["id"], m["text"]) for m in systems] == [
        ("e2ee_enabled", bob.user_id, "Messages in this chat are now end-to-end encrypted")]
    assert await _events(svc, alice, "chat.e2ee") == [{"chat_id": direct["chat_id"], "e2ee": True}]
    err = await _error(svc.call(alice, "message.send", chat_id=direct["chat_id"], client_id="after", text="x"))
    assert err.details == {"reason": "e2ee_required"}
    # The plaintext message from before becomes an encrypted one when edited, and leaves search.
    assert [h["text"] for h in await svc.call(bob, "message.search", query="plain before")] == ["plain before"]
    before = next(m for m in page["messages"] if m["client_id"] == "before")
    edited = await svc.call(alice, "message.edit", chat_id=direct["chat_id"], seq=before["seq"],
                            e2ee=envelope(alice.device_id))
    assert (edited["kind"], edited["text"]) == ("encrypted", "")
    assert await svc.call(bob, "message.search", query="plain before") == []
    # A new 1:1 chat asked for with e2ee starts encrypted.
    fresh = await svc.call(carol, "chat.open_direct", user_id=alice.user_id, e2ee=True)
    assert fresh["e2ee"] is True


async def test_encrypted_message_round_trip(svc: Svc) -> None:
    alice, bob, carol = await _people(svc)
    chat = (await svc.call(alice, "chat.create_group", title="secret", member_ids=[bob.user_id, carol.user_id],
                           e2ee=True))["chat_id"]
    env = envelope(alice.device_id)
    sent = await svc.call(alice, "message.send", chat_id=chat, client_id="m1", e2ee=env, mentions=[bob.user_id])
    assert (sent["kind"], sent["text"], sent["e2ee"], sent["mentions"], sent["unread"]) == (
        "encrypted", "", env, [bob.user_id], 2)
    retry = await svc.call(alice, "message.send", chat_id=chat, client_id="m1", e2ee=envelope(alice.device_id))
    assert retry["seq"] == sent["seq"] and retry["e2ee"] == env            # G2: the original
    reply_env = envelope(bob.device_id)
    reply = await svc.call(bob, "message.send", chat_id=chat, client_id="r1", e2ee=reply_env, reply_to=sent["seq"])
    assert reply["reply_to"] == sent["seq"] and reply["e2ee"] == reply_env

    await svc.call(carol, "message.react", chat_id=chat, seq=sent["seq"], emoji="👍")
    await svc.call(carol, "chat.read", chat_id=chat, seq=reply["seq"])
    edit_env = envelope(alice.device_id)
    edited = await svc.call(alice, "message.edit", chat_id=chat, seq=sent["seq"], e2ee=edit_env)
    assert edited["e2ee"] == edit_env and edited["edited_at"] and edited["text"] == ""
    err = await _error(svc.call(alice, "message.edit", chat_id=chat, seq=sent["seq"], text="plain edit"))
    assert err.details == {"reason": "e2ee_required"}

    page = await svc.call(bob, "message.history", chat_id=chat)
    mine = {m["seq"]: m for m in page["messages"]}
    first = mine[sent["seq"]]
    assert (first["kind"], first["text"], first["e2ee"], first["reactions"], first["unread"]) == (
        "encrypted", "", edit_env, {"👍": [carol.user_id]}, 0)
    assert mine[reply["seq"]]["reply_to"] == sent["seq"]
    summary = {c["chat_id"]: c for c in await svc.call(carol, "chat.list")}[chat]
    assert summary["last_message"]["e2ee"] == reply_env and summary["last_message"]["text"] == ""
    edits = await _events(svc, bob, "message.edited")
    assert edits == [{"chat_id": chat, "seq": sent["seq"], "text": "", "e2ee": edit_env,
                      "edited_at": edited["edited_at"]}]
    news = [e for e in await _events(svc, carol, "message.new") if e["kind"] == "encrypted"]
    assert [e["e2ee"] for e in news] == [env, reply_env]

    await svc.call(bob, "message.unsend", chat_id=chat, seq=reply["seq"])
    gone = {m["seq"]: m for m in (await svc.call(carol, "message.history", chat_id=chat))["messages"]}[reply["seq"]]
    assert gone["unsent"] and gone["e2ee"] is None
    stored = await svc.s.core.db.read(lambda tx: tx.one("SELECT e2ee, text FROM messages WHERE chat_id = ? AND seq = ?",
                                                         (chat, reply["seq"])))
    assert stored == (None, "")


async def test_the_server_derives_no_text_from_envelopes(svc: Svc) -> None:
    alice, bob, _ = await _people(svc)
    chat = (await svc.call(alice, "chat.open_direct", user_id=bob.user_id, e2ee=True))["chat_id"]
    env = envelope(alice.device_id, size=3000)
    await svc.call(alice, "message.send", chat_id=chat, client_id="m1", e2ee=env)

    def rows(tx: Any) -> Any:
        msg = tx.one("SELECT text, search_extra, attachment, e2ee, id FROM messages WHERE kind = 'encrypted'")
        fts = tx.all("SELECT rowid FROM message_fts WHERE rowid = ?", (msg[4],)) if tx.dialect == "sqlite" else []
        return msg, fts

    (text, extra, attachment, stored, _), fts = await svc.s.core.db.read(rows)
    assert (text, extra, attachment, fts) == ("", "", None, [])
    assert env["ciphertext"] in stored                                     # as sent, nothing else made of it
    # Search cannot look inside: a piece of the ciphertext finds nothing.
    assert await svc.call(bob, "message.search", query=env["ciphertext"][10:30]) == []


async def _upload(svc: Svc, who: Caller, data: bytes) -> str:
    begun = await svc.call(who, "media.upload_begin", size=len(data), name="blob")
    await svc.call(who, "media.upload_chunk", upload_id=begun["upload_id"], offset=0,
                   data=base64.b64encode(data).decode())
    return str((await svc.call(who, "media.upload_finish", upload_id=begun["upload_id"]))["blob_id"])


async def test_members_can_read_encrypted_blobs_listed_in_attachments(svc: Svc) -> None:
    alice, bob, carol = await _people(svc)
    chat = (await svc.call(alice, "chat.create_group", title="s", member_ids=[bob.user_id], e2ee=True))["chat_id"]
    ciphertext = os.urandom(5000)
    blob = await _upload(svc, alice, ciphertext)
    thumb = await _upload(svc, alice, os.urandom(700))
    # Someone else's blob cannot be attached (it would grant the chat access to it).
    foreign = await _upload(svc, carol, os.urandom(100))
    err = await _error(svc.call(alice, "message.send", chat_id=chat, client_id="x", e2ee=envelope(alice.device_id),
                                attachments=[foreign]))
    assert err.code == ErrorCode.FORBIDDEN
    assert (await _error(svc.call(bob, "media.info", blob_id=blob))).code == ErrorCode.FORBIDDEN
    await svc.call(alice, "message.send", chat_id=chat, client_id="m1", e2ee=envelope(alice.device_id),
                   attachments=[blob, thumb])
    got = await svc.call(bob, "media.read", blob_id=blob, offset=0, length=10000)
    assert base64.b64decode(got["data"]) == ciphertext
    assert (await svc.call(bob, "media.info", blob_id=thumb))["size"] == 700
    assert (await _error(svc.call(carol, "media.read", blob_id=blob, offset=0, length=10))).code == ErrorCode.FORBIDDEN
    # A removed member loses access.
    await svc.call(alice, "chat.remove_member", chat_id=chat, user_id=bob.user_id)
    assert (await _error(svc.call(bob, "media.info", blob_id=blob))).code == ErrorCode.FORBIDDEN
    # attachments need an envelope: plaintext chats send media with message.send_media.
    plain = (await svc.call(alice, "chat.create_group", title="p", member_ids=[]))["chat_id"]
    err = await _error(svc.call(alice, "message.send", chat_id=plain, client_id="y", text="hi", attachments=[blob]))
    assert err.code == ErrorCode.INVALID_PARAMS
