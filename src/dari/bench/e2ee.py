"""E2EE in the load generator (`dari bench --e2ee`): each sender Megolm-encrypts every message with
the SDK's own core (dari.client.e2ee.machine: ratchet step, pickle to its SQLite store) and each
receiver checks and decrypts every message it gets, so the figures carry the per-message cost of
end-to-end encryption on both ends and the larger frames.

Room keys are handed over in process at setup (no Olm/to-device round trips): the SDK shares a key
once per chat and per rotation (every 100 messages), about one extra call per 100 messages, which
this bench leaves out.
"""

from __future__ import annotations

import msgspec

from dari.client.e2ee.keys import Device, MasterKey
from dari.client.e2ee.machine import Machine
from dari.client.e2ee.store import CryptoStore


class _Env(msgspec.Struct):
    chat_id: int
    seq: int
    sender_id: int
    e2ee: dict[str, object] | None = None


_decode = msgspec.json.Decoder(_Env).decode
_encode = msgspec.json.Encoder().encode


class BenchCrypto:
    """One user's device: an in-memory crypto store, like a Client without crypto_path."""

    def __init__(self, user_id: int, device_id: int) -> None:
        self.machine = Machine(CryptoStore(None), user_id, device_id)
        self.machine.set_master(MasterKey.generate())
        self.failures = 0
        self.decrypted = 0

    @property
    def device(self) -> Device:
        return self.machine.own_device()

    def share_with(self, chat_id: int, others: list[BenchCrypto]) -> None:
        m = self.machine
        m.new_outbound(chat_id, {m.user_id, *(o.machine.user_id for o in others)})
        key = m.room_key(chat_id)
        for o in others:
            o.machine.add_room_key(key, self.device)

    def envelope(self, chat_id: int, client_id: str, text: str) -> bytes:
        return _encode(self.machine.encrypt(chat_id, {"type": "text", "text": text, "client_id": client_id}))

    def open(self, payload: bytes) -> bool:
        msg = _decode(payload)
        ok = self.machine.decrypt(msgspec.structs.asdict(msg)).status == "ok"
        if ok:
            self.decrypted += 1
        else:
            self.failures += 1
        return ok
