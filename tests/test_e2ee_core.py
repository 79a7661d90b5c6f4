"""The pure E2EE core (no sockets): bundles, Olm payloads, Megolm envelopes and every refusal reason,
rotation rules, device-link export, safety numbers, media encryption, the local search index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dari.client.e2ee import files
from dari.client.e2ee.codec import b64d, b64e, canonical
from dari.client.e2ee.keys import MasterKey, safety_number, safety_qr, user_digits, verify_bundle
from dari.client.e2ee.machine import E2EEError, Machine
from dari.client.e2ee.store import CryptoStore


def device(user_id: int, device_id: int, master: MasterKey | None = None, path: str | None = None) -> Machine:
    m = Machine(CryptoStore(path), user_id, device_id)
    if m.master is None:
        m.set_master(master or MasterKey.generate())
    return m


def bundle_of(m: Machine) -> dict[str, object]:
    return {"user_id": m.user_id, "device_id": m.device_id, **m.bundle()}


def share(sender: Machine, chat_id: int, *receivers: Machine) -> None:
    """What the SDK does over the network: claim a key, Olm-encrypt the room key, deliver, decrypt."""
    for r in receivers:
        otk = next(iter(r.one_time_keys(0).values()))
        r.mark_published()
        dev = verify_bundle(bundle_of(r), r.user_id, r.master.public)  # type: ignore[union-attr]
        assert dev is not None
        payload = sender.olm_encrypt(dev, otk, "room_key", sender.room_key(chat_id))
        me = verify_bundle(bundle_of(sender), sender.user_id, sender.master.public)  # type: ignore[union-attr]
        plain = r.olm_decrypt(payload, sender.user_id, sender.device_id, me)
        assert plain["type"] == "room_key"
        assert me is not None
        r.add_room_key(plain["content"], me)


def stored(env: dict[str, object], chat_id: int, seq: int, sender_id: int) -> dict[str, object]:
    return {"chat_id": chat_id, "seq": seq, "sender_id": sender_id, "kind": "encrypted", "text": "", "e2ee": env}


def test_encodings_match_olm() -> None:
    assert b64e(b"\xff\xfe") == "//4"
    assert b64d("//4") == b"\xff\xfe" and b64d("//4=") == b"\xff\xfe"
    with pytest.raises(ValueError):
        b64d("*")
    assert canonical({"b": 1, "a": "안녕"}) == '{"a":"안녕","b":1}'.encode()


def test_bundle_verifies_only_with_both_signatures_and_current_master() -> None:
    m = device(7, 12)
    b = bundle_of(m)
    assert verify_bundle(b, 7, m.master.public) is not None  # type: ignore[union-attr]
    assert verify_bundle(b, 8, m.master.public) is None  # type: ignore[union-attr]
    assert verify_bundle(b, 7, MasterKey.generate().public) is None
    forged = dict(b, identity_key=device(7, 13).identity_key)
    assert verify_bundle(forged, 7, m.master.public) is None  # type: ignore[union-attr]


def test_megolm_round_trip_and_every_refusal_reason() -> None:
    alice, bob, carol = device(1, 10), device(2, 20), device(3, 30)
    alice.new_outbound(5, {1, 2})
    share(alice, 5, bob)
    env = alice.encrypt(5, {"type": "text", "text": "안녕 中文"})
    assert "안녕" not in str(env)
    ok = bob.decrypt(stored(env, 5, 1, 1))
    assert ok.status == "ok" and ok.content["text"] == "안녕 中文"
    assert bob.decrypt(stored(env, 5, 1, 1)).status == "ok"        # the same message again: fine
    assert bob.decrypt(stored(env, 5, 2, 1)).status == "replayed"  # its index reused by another seq
    assert carol.decrypt(stored(env, 5, 1, 1)).status == "unknown_session"
    assert bob.decrypt(stored(env, 6, 1, 1)).status == "wrong_chat"
    assert bob.decrypt(stored(env, 5, 1, 3)).status == "wrong_sender"
    env2 = alice.encrypt(5, {"type": "text", "text": "two"})
    raw = bytearray(b64d(str(env2["ciphertext"])))
    raw[12] ^= 1
    bad = dict(env2, ciphertext=b64e(bytes(raw)))
    assert bob.decrypt(stored(bad, 5, 3, 1)).status == "tampered"
    assert bob.decrypt(stored(env2, 5, 3, 1)).status == "ok"
    assert alice.decrypt(stored(env2, 5, 3, 1)).content["text"] == "two"   # the sender reads its own


def test_olm_refuses_other_recipient_and_other_sender() -> None:
    alice, bob, eve = device(1, 10), device(2, 20), device(3, 30)
    alice.new_outbound(5, {1, 2})
    otk = next(iter(bob.one_time_keys(0).values()))
    bob_dev = verify_bundle(bundle_of(bob), 2, bob.master.public)  # type: ignore[union-attr]
    assert bob_dev is not None
    payload = alice.olm_encrypt(bob_dev, otk, "room_key", alice.room_key(5))
    alice_dev = verify_bundle(bundle_of(alice), 1, alice.master.public)  # type: ignore[union-attr]
    eve_dev = verify_bundle(bundle_of(eve), 3, eve.master.public)  # type: ignore[union-attr]
    with pytest.raises(E2EEError) as exc:
        bob.olm_decrypt(payload, 3, 30, eve_dev)    # the server claims eve sent it
    assert exc.value.reason == "wrong_sender"
    with pytest.raises(E2EEError):
        eve.olm_decrypt(payload, 1, 10, alice_dev)  # not for eve
    assert bob.olm_decrypt(payload, 1, 10, alice_dev)["content"]["chat_id"] == 5


def test_rotation_rules() -> None:
    alice = device(1, 10)
    assert alice.needs_rotation(5, {1, 2}, {})
    alice.new_outbound(5, {1, 2})
    alice.mark_shared(5, {20: "bobkey"}, {1, 2})
    assert not alice.needs_rotation(5, {1, 2}, {20: "bobkey"})
    assert not alice.needs_rotation(5, {1, 2, 3}, {20: "bobkey", 30: "x"})   # joined: share, not rotate
    assert alice.needs_rotation(5, {1}, {})                                  # bob removed
    assert alice.needs_rotation(5, {1, 2}, {})                               # bob's device revoked
    assert alice.needs_rotation(5, {1, 2}, {20: "other"})                    # device keys changed
    assert alice.needs_rotation(5, {1, 2}, {20: "bobkey"}, now=time.time() + 7 * 86400)
    for i in range(100):
        alice.encrypt(5, {"type": "text", "text": str(i)})
    assert alice.needs_rotation(5, {1, 2}, {20: "bobkey"})


def test_new_member_reads_from_its_index_only() -> None:
    alice, bob = device(1, 10), device(2, 20)
    alice.new_outbound(5, {1})
    before = alice.encrypt(5, {"type": "text", "text": "before"})
    share(alice, 5, bob)
    after = alice.encrypt(5, {"type": "text", "text": "after"})
    assert bob.decrypt(stored(before, 5, 1, 1)).status == "unknown_session"
    assert bob.decrypt(stored(after, 5, 2, 1)).content["text"] == "after"


def test_link_transfer_export_lets_a_new_device_read_history(tmp_path: Path) -> None:
    master = MasterKey.generate()
    phone, bob = device(1, 10, master), device(2, 20)
    bob.new_outbound(5, {1, 2})
    share(bob, 5, phone)
    env = bob.encrypt(5, {"type": "text", "text": "old"})
    pc = device(1, 11, MasterKey(master.seed), str(tmp_path / "pc.db"))
    assert pc.decrypt(stored(env, 5, 1, 2)).status == "unknown_session"
    pc.import_sessions(phone.export_sessions())
    assert pc.decrypt(stored(env, 5, 1, 2)).content["text"] == "old"
    assert pc.master is not None and pc.master.public == master.public
    # Persisted: a restart reads it again with the key kept beside the database.
    again = Machine(CryptoStore(str(tmp_path / "pc.db")), 1, 11)
    assert again.decrypt(stored(env, 5, 1, 2)).status == "ok"
    with pytest.raises(E2EEError):
        Machine(CryptoStore(str(tmp_path / "pc.db")), 1, 12)


def test_safety_number_is_symmetric_and_specified() -> None:
    a, b = MasterKey(bytes(32)).public, MasterKey(bytes([1]) * 32).public
    n = safety_number(7, a, 3, b)
    assert n == safety_number(3, b, 7, a)
    groups = n.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert n.replace(" ", "") == user_digits(3, b) + user_digits(7, a)
    assert safety_qr(7, a, 3, b) == f"dari-verify:1:3:{b}:7:{a}"
    assert safety_number(7, MasterKey.generate().public, 3, b) != n
    import hashlib
    raw = b64d(a)
    h = b"dari-safety-v1" + raw + b"7"
    for _ in range(5200):
        h = hashlib.sha512(h + raw).digest()
    assert user_digits(7, a)[:5] == f"{int.from_bytes(h[:5], 'big') % 100000:05d}"


def test_media_sealing() -> None:
    sealed = files.seal(b"secret bytes")
    assert b"secret" not in sealed.blob and len(sealed.blob) == len(b"secret bytes") + 16
    assert files.open_sealed(sealed.blob, sealed.key, sealed.iv, sealed.sha256) == b"secret bytes"
    flipped = bytes([sealed.blob[0] ^ 1]) + sealed.blob[1:]
    with pytest.raises(ValueError):
        files.open_sealed(flipped, sealed.key, sealed.iv)


def test_local_search_matches_cjk_substrings_short_and_long() -> None:
    s = CryptoStore()
    s.index(5, 1, 1, 1000, "오늘 저녁에 삼겹살 먹자")
    s.index(5, 2, 2, 2000, "我们明天去北京吧")
    s.index(6, 1, 1, 3000, "hello WORLD")
    assert [h["seq"] for h in s.search("삼겹살")] == [1]
    assert [h["seq"] for h in s.search("저녁")] == [1]        # 2 characters: LIKE
    assert [h["seq"] for h in s.search("北京")] == [2]
    assert [h["chat_id"] for h in s.search("world")] == [6]
    assert s.search("北京", chat_id=6) == []
    s.unindex(5, 2)
    assert s.search("北京") == []
    assert s.search("100%") == []


def test_pickles_survive_and_contacts_pin(tmp_path: Path) -> None:
    s = CryptoStore(str(tmp_path / "c.db"))
    s.pin(2, "key1")
    c = s.contact(2)
    assert c is not None and not c.verified
    s.pin(2, "key2", changed=True)
    c2 = CryptoStore(str(tmp_path / "c.db")).contact(2)
    assert c2 is not None and c2.changed and c2.master_key == "key2"
    assert (tmp_path / "c.db.key").stat().st_mode & 0o077 == 0
