"""The pure E2EE core: an Olm account, Olm payloads between devices, Megolm envelopes per chat, and
the receiver's checks (docs/e2ee.md). No network: the caller feeds it bundles and messages.

Every operation that changes a ratchet pickles it into the store at once, so a crash never reuses
a ratchet step or loses a received key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import vodozemac as vz

from dari.client.e2ee.codec import b64d, b64e, canonical
from dari.client.e2ee.keys import Device, MasterKey, device_statement
from dari.client.e2ee.store import CryptoStore, Inbound, Outbound

OTK_TARGET = 50          # one-time keys kept on the server
ROTATE_MESSAGES = 100
ROTATE_SECONDS = 7 * 86400
MAX_CIPHERTEXT = 64 * 1024

# Reasons shown beside "🔒 This message could not be decrypted".
TAMPERED, UNKNOWN_SESSION, WRONG_CHAT, WRONG_SENDER, REPLAYED = (
    "tampered", "unknown_session", "wrong_chat", "wrong_sender", "replayed")


class E2EEError(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass
class Decrypted:
    status: str                               # "ok" or a reason
    content: dict[str, Any] = field(default_factory=dict)
    session_id: str = ""


class Machine:
    def __init__(self, store: CryptoStore, user_id: int, device_id: int) -> None:
        self.store, self.user_id, self.device_id = store, user_id, device_id
        key = store.pickle_key
        owner = store.get("owner")
        if owner is not None and owner != f"{user_id}:{device_id}":
            raise E2EEError("wrong_store", f"this crypto store belongs to device {owner}, not {user_id}:{device_id}")
        pickled = store.get("account")
        self.account = vz.Account.from_pickle(pickled, key) if pickled else vz.Account()
        if pickled is None:
            store.put("owner", f"{user_id}:{device_id}")
            self._save_account()
        seed = store.get("master_seed")
        self.master: MasterKey | None = MasterKey(store.unseal(seed)) if seed else None

    def _save_account(self) -> None:
        self.store.put("account", self.account.pickle(self.store.pickle_key))

    @property
    def identity_key(self) -> str:
        return str(self.account.curve25519_key.to_base64())

    @property
    def signing_key(self) -> str:
        return str(self.account.ed25519_key.to_base64())

    # -- master key and bundle -------------------------------------------------------------
    def set_master(self, master: MasterKey) -> None:
        self.master = master
        self.store.put("master_seed", self.store.seal(master.seed))

    def bundle(self) -> dict[str, Any]:
        """keys.upload's identity fields; needs the master key (created, or received by link transfer)."""
        if self.master is None:
            raise E2EEError("no_master", "no master key yet")
        stmt = device_statement(self.user_id, self.device_id, self.identity_key, self.signing_key)
        return {"identity_key": self.identity_key, "signing_key": self.signing_key,
                "master_key": self.master.public, "master_signature": self.master.sign(stmt),
                "device_signature": str(self.account.sign(stmt).to_base64())}

    def own_device(self) -> Device:
        assert self.master is not None
        return Device(self.user_id, self.device_id, self.identity_key, self.signing_key, self.master.public)

    def one_time_keys(self, server_count: int) -> dict[str, str]:
        """New one-time keys to bring the server back to OTK_TARGET (not yet marked published)."""
        want = max(0, min(OTK_TARGET - server_count, 100))
        if want:
            self.account.generate_one_time_keys(want)
            self._save_account()
        keys = {k: str(v.to_base64()) for k, v in self.account.one_time_keys.items()}
        return dict(list(keys.items())[:100])   # keys.upload takes at most 100 per call

    def fallback_key(self) -> dict[str, str] | None:
        # In the binding since 0.9 but missing from its type stubs.
        acct: Any = self.account
        fb = acct.fallback_key
        if not fb:
            acct.generate_fallback_key()
            self._save_account()
            fb = acct.fallback_key
        key_id, key = next(iter(fb.items()))
        return {"key_id": "fb" + str(key_id), "key": str(key.to_base64())}

    def mark_published(self) -> None:
        self.account.mark_keys_as_published()
        self._save_account()

    # -- Olm -------------------------------------------------------------------------------
    def has_olm_session(self, peer_key: str) -> bool:
        return bool(self.store.olm_sessions(peer_key))

    def olm_encrypt(self, recipient: Device, one_time_key: str | None, kind: str,
                    content: dict[str, Any]) -> dict[str, Any]:
        """An Olm payload for one device: over its latest session, or a new one from a claimed key."""
        sessions = self.store.olm_sessions(recipient.identity_key)
        if sessions:
            session = vz.Session.from_pickle(sessions[0][1], self.store.pickle_key)
        elif one_time_key:
            session = self.account.create_outbound_session(
                vz.Curve25519PublicKey.from_base64(recipient.identity_key),
                vz.Curve25519PublicKey.from_base64(one_time_key))
        else:
            raise E2EEError("no_session", f"no Olm session with device {recipient.device_id} and no key to start one")
        plain = canonical({"type": kind, "sender_id": self.user_id, "sender_device": self.device_id,
                           "recipient_id": recipient.user_id, "recipient_device": recipient.device_id,
                           "recipient_key": recipient.identity_key, "content": content})
        msg_type, body = session.encrypt(plain).to_parts()
        self.store.save_olm(recipient.identity_key, session.session_id, session.pickle(self.store.pickle_key))
        return {"alg": "olm.v1", "sender_key": self.identity_key, "type": int(msg_type), "body": b64e(bytes(body))}

    def olm_decrypt(self, payload: dict[str, Any], sender_id: int, sender_device: int,
                    sender: Device | None) -> dict[str, Any]:
        """The Olm plaintext, after the recipient and sender checks; E2EEError otherwise.

        `sender` is the verified device the server says sent it (None if unknown or unverified; the
        payload is then refused: a room key must come from a device we can vouch for)."""
        if payload.get("alg") != "olm.v1":
            raise E2EEError("bad_payload", "not an Olm payload")
        sender_key = str(payload.get("sender_key", ""))
        if sender is None or sender.identity_key != sender_key or sender.device_id != sender_device \
                or sender.user_id != sender_id:
            raise E2EEError(WRONG_SENDER, "the sending device is not a verified device of its user")
        plain = self._olm_decrypt_raw(sender_key, int(payload.get("type", -1)), b64d(str(payload.get("body", ""))))
        return self._check_olm_plain(plain, sender_id, sender_device)

    def olm_decrypt_unverified(self, payload: dict[str, Any], sender_id: int, sender_device: int,
                               expected_key: str) -> dict[str, Any]:
        """For a device being linked (no master signature yet): the caller vouches for expected_key."""
        if payload.get("alg") != "olm.v1" or payload.get("sender_key") != expected_key:
            raise E2EEError(WRONG_SENDER, "unexpected sender key")
        plain = self._olm_decrypt_raw(expected_key, int(payload.get("type", -1)), b64d(str(payload.get("body", ""))))
        return self._check_olm_plain(plain, sender_id, sender_device)

    def _check_olm_plain(self, plain: bytes, sender_id: int, sender_device: int) -> dict[str, Any]:
        import json

        try:
            obj = json.loads(plain)
        except ValueError:
            raise E2EEError(TAMPERED, "Olm plaintext is not JSON") from None
        if not isinstance(obj, dict) or obj.get("recipient_id") != self.user_id \
                or obj.get("recipient_device") != self.device_id or obj.get("recipient_key") != self.identity_key:
            raise E2EEError("wrong_recipient", "this Olm message was meant for another device")
        if obj.get("sender_id") != sender_id or obj.get("sender_device") != sender_device:
            raise E2EEError(WRONG_SENDER, "the Olm plaintext names another sender")
        if not isinstance(obj.get("content"), dict):
            raise E2EEError("bad_payload", "no content")
        return obj

    def _olm_decrypt_raw(self, sender_key: str, msg_type: int, body: bytes) -> bytes:
        try:
            message = vz.AnyOlmMessage.from_parts(msg_type, body)
            pre_key = message.to_pre_key() if msg_type == 0 else None
        except Exception:
            raise E2EEError(TAMPERED, "undecodable Olm message") from None
        for sid, pickled in self.store.olm_sessions(sender_key):
            session = vz.Session.from_pickle(pickled, self.store.pickle_key)
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plain = session.decrypt(message)
            except Exception:
                continue
            self.store.save_olm(sender_key, sid, session.pickle(self.store.pickle_key))
            return bytes(plain)
        if pre_key is None:
            raise E2EEError(UNKNOWN_SESSION, "no Olm session decrypts this message")
        try:
            session, plain = self.account.create_inbound_session(
                vz.Curve25519PublicKey.from_base64(sender_key), pre_key)
        except Exception:
            raise E2EEError(TAMPERED, "cannot start an Olm session from this message") from None
        self._save_account()   # the one-time key is used up: never again
        self.store.save_olm(sender_key, session.session_id, session.pickle(self.store.pickle_key))
        return bytes(plain)

    # -- Megolm: sending -------------------------------------------------------------------
    def outbound(self, chat_id: int) -> Outbound | None:
        return self.store.outbound(chat_id)

    def needs_rotation(self, chat_id: int, members: set[int], devices: dict[int, str],
                       now: float | None = None) -> bool:
        """A new session when a member left, a device vanished (or changed keys), after 100 messages or 7 days."""
        o = self.store.outbound(chat_id)
        if o is None:
            return True
        now = time.time() if now is None else now
        if now - o.created_at >= ROTATE_SECONDS or not set(o.members) <= members:
            return True
        if any(devices.get(d) != key for d, key in o.shared.items()):
            return True
        gs = vz.GroupSession.from_pickle(o.pickle, self.store.pickle_key)
        return int(gs.message_index) >= ROTATE_MESSAGES

    def new_outbound(self, chat_id: int, members: set[int]) -> Outbound:
        gs = vz.GroupSession()
        # Our own inbound copy: our other devices get it over Olm; this device reads its own history.
        self._add_inbound(chat_id, self.user_id, self.device_id, self.identity_key,
                          vz.InboundGroupSession(gs.session_key))
        o = Outbound(chat_id, gs.pickle(self.store.pickle_key), time.time(), {}, sorted(members))
        self.store.save_outbound(o)
        return o

    def room_key(self, chat_id: int) -> dict[str, Any]:
        """The room_key content for the current outbound session, from its current index."""
        o = self.store.outbound(chat_id)
        assert o is not None
        gs = vz.GroupSession.from_pickle(o.pickle, self.store.pickle_key)
        return {"chat_id": chat_id, "session_id": str(gs.session_id), "session_key": str(gs.session_key.to_base64())}

    def mark_shared(self, chat_id: int, devices: dict[int, str], members: set[int]) -> None:
        o = self.store.outbound(chat_id)
        assert o is not None
        o.shared.update(devices)
        o.members = sorted(set(o.members) | members)
        self.store.save_outbound(o)

    def encrypt(self, chat_id: int, content: dict[str, Any]) -> dict[str, Any]:
        o = self.store.outbound(chat_id)
        if o is None:
            raise E2EEError(UNKNOWN_SESSION, "no outbound session for this chat")
        gs = vz.GroupSession.from_pickle(o.pickle, self.store.pickle_key)
        msg = gs.encrypt(canonical({**content, "chat_id": chat_id}))
        o.pickle = gs.pickle(self.store.pickle_key)
        self.store.save_outbound(o)
        body = b64e(bytes(msg.to_bytes()))
        if len(body) > MAX_CIPHERTEXT:
            raise E2EEError("too_large", "the encrypted message is larger than 64 KiB")
        return {"v": 1, "alg": "megolm.v1", "sender_key": self.identity_key, "device_id": self.device_id,
                "session_id": str(gs.session_id), "ciphertext": body}

    # -- Megolm: receiving -----------------------------------------------------------------
    def _add_inbound(self, chat_id: int, sender_id: int, sender_device: int, sender_key: str,
                     session: vz.InboundGroupSession) -> bool:
        """Keep a session; an existing copy that knows earlier indexes wins (no downgrade)."""
        sid = str(session.session_id)
        old = self.store.inbound(sid)
        if old is not None:
            prev = vz.InboundGroupSession.from_pickle(old.pickle, self.store.pickle_key)
            if int(prev.first_known_index) <= int(session.first_known_index):
                return False
        self.store.save_inbound(Inbound(sid, chat_id, sender_id, sender_device, sender_key,
                                        session.pickle(self.store.pickle_key)))
        return True

    def add_room_key(self, content: dict[str, Any], sender: Device) -> str:
        """A room_key from a verified sender device (Olm checked it); returns the session id."""
        try:
            session = vz.InboundGroupSession(vz.SessionKey(str(content["session_key"])))
            chat_id = int(content["chat_id"])
        except Exception:
            raise E2EEError("bad_payload", "bad room key") from None
        if str(session.session_id) != content.get("session_id"):
            raise E2EEError("bad_payload", "room key session id mismatch")
        self._add_inbound(chat_id, sender.user_id, sender.device_id, sender.identity_key, session)
        return str(session.session_id)

    def export_sessions(self) -> list[dict[str, Any]]:
        """Every inbound session from its first known index, for a device-link transfer."""
        out = []
        for s in self.store.all_inbound():
            ig = vz.InboundGroupSession.from_pickle(s.pickle, self.store.pickle_key)
            first = int(ig.first_known_index)
            exported = ig.export_at(first)
            if exported is None:
                continue
            out.append({"chat_id": s.chat_id, "sender_id": s.sender_id, "sender_device": s.sender_device,
                        "sender_key": s.sender_key, "session_id": s.session_id,
                        "exported": str(exported.to_base64()), "first_index": first})
        return out

    def import_sessions(self, sessions: list[dict[str, Any]]) -> list[str]:
        done = []
        for e in sessions:
            try:
                ig = vz.InboundGroupSession.import_session(vz.ExportedSessionKey(str(e["exported"])))
                if str(ig.session_id) != e["session_id"]:
                    continue
                self._add_inbound(int(e["chat_id"]), int(e["sender_id"]), int(e["sender_device"]),
                                  str(e["sender_key"]), ig)
                done.append(str(ig.session_id))
            except Exception:
                continue
        return done

    def decrypt(self, msg: dict[str, Any]) -> Decrypted:
        """Check and decrypt a stored message (MessageOut with `e2ee`): the envelope's session must be
        known, its sender the message's sender, the MAC good, the chat the message's chat, and the
        Megolm index used by no other message."""
        env = msg.get("e2ee")
        if not isinstance(env, dict) or env.get("alg") != "megolm.v1":
            return Decrypted(TAMPERED)
        sid = str(env.get("session_id", ""))
        s = self.store.inbound(sid)
        if s is None:
            return Decrypted(UNKNOWN_SESSION, session_id=sid)
        if (s.sender_id != msg.get("sender_id") or s.sender_device != env.get("device_id")
                or s.sender_key != env.get("sender_key")):
            return Decrypted(WRONG_SENDER, session_id=sid)
        ig = vz.InboundGroupSession.from_pickle(s.pickle, self.store.pickle_key)
        try:
            raw = b64d(str(env.get("ciphertext", "")))
            out = ig.decrypt(vz.MegolmMessage.from_bytes(raw))
        except vz.MegolmDecryptionException as exc:
            # An index before the one we were given is not tampering: we never had that key.
            reason = UNKNOWN_SESSION if "unknown message index" in str(exc) else TAMPERED
            return Decrypted(reason, session_id=sid)
        except Exception:
            return Decrypted(TAMPERED, session_id=sid)
        import json

        try:
            content = json.loads(bytes(out.plaintext))
        except ValueError:
            return Decrypted(TAMPERED, session_id=sid)
        if not isinstance(content, dict):
            return Decrypted(TAMPERED, session_id=sid)
        if content.get("chat_id") != msg.get("chat_id") or s.chat_id != msg.get("chat_id"):
            return Decrypted(WRONG_CHAT, session_id=sid)
        if not self.store.claim_index(sid, int(out.message_index), int(msg["chat_id"]), int(msg.get("seq") or 0)):
            return Decrypted(REPLAYED, session_id=sid)
        return Decrypted("ok", content, sid)
