"""Linking a device (docs/e2ee.md, "Linking a device"): the approving device hands the new one the
master key and the chats' history keys.

New device: no master key yet, so it asks its user's other devices with a plain
`dari.link_request.v1` to-device payload (public keys and one one-time key). Approving device: it
answers only a device it approved itself in the last 15 minutes, over a fresh Olm session, with
`link_transfer` parts. New device: it checks the seed against its user's current master key,
imports the sessions, then uploads its bundle.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from dari.client.e2ee.codec import b64d, b64e, canonical
from dari.client.e2ee.keys import Device, MasterKey, device_statement, verify
from dari.client.e2ee.machine import E2EEError

if TYPE_CHECKING:
    from dari.client.e2ee_sync import E2EE

LINK_PART = 48 * 1024
LINK_APPROVAL_S = 15 * 60


def approved(e: E2EE, device_id: int) -> None:
    """device.link_approve went through: that device may ask us for the master key."""
    if e.store is None:
        return
    table = json.loads(e.store.get("link_approved") or "{}")
    now = time.time()
    table = {k: v for k, v in table.items() if now - v < LINK_APPROVAL_S}
    table[str(device_id)] = now
    e.store.put("link_approved", json.dumps(table))


async def request_link(e: E2EE) -> None:
    """A linked device without its master key: publish our keys to our own devices (in the clear:
    they are public; the server vouches that this device sent them) with one one-time key."""
    m = e.machine
    assert m is not None
    res = await e.c._plain_call("keys.query", {"user_ids": [m.user_id]})
    targets = [int(b["device_id"]) for u in res.get("users") or [] for b in u.get("devices") or []
               if int(b["device_id"]) != m.device_id]
    if not targets:
        return
    otk = next(iter(m.one_time_keys(0).values()))
    stmt = device_statement(m.user_id, m.device_id, m.identity_key, m.signing_key)
    payload = {"alg": "dari.link_request.v1", "identity_key": m.identity_key, "signing_key": m.signing_key,
               "one_time_key": otk, "device_signature": str(m.account.sign(stmt).to_base64())}
    await e.c._plain_call("todevice.send", {"messages": [{"device_id": t, "payload": payload}
                                                            for t in targets]})


async def on_link_request(e: E2EE, uid: int, did: int, p: dict[str, Any]) -> None:
    m, store = e.machine, e.store
    assert m is not None and store is not None
    table = json.loads(store.get("link_approved") or "{}")
    when = table.get(str(did))
    if uid != m.user_id or when is None or time.time() - when > LINK_APPROVAL_S or m.master is None:
        raise E2EEError("not_approved", f"device {did} asked for a link transfer we did not approve")
    ik, sk = str(p["identity_key"]), str(p["signing_key"])
    if not verify(sk, device_statement(uid, did, ik, sk), str(p["device_signature"])):
        raise E2EEError("bad_signature", "link request signature")
    target = Device(uid, did, ik, sk, m.master.public)
    sessions = m.export_sessions()
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for s in sessions:
        n = len(canonical(s))
        if parts[-1] and size + n > LINK_PART - 1024:
            parts.append([])
            size = 0
        parts[-1].append(s)
        size += n
    seed = b64e(m.master.seed)
    otk = str(p["one_time_key"])
    for i, chunk in enumerate(parts):
        payload = m.olm_encrypt(target, otk, "link_transfer",
                                {"master_seed": seed, "part": i, "parts": len(parts), "sessions": chunk})
        await e.c._plain_call("todevice.send", {"messages": [{"device_id": did, "payload": payload}]})
    table.pop(str(did), None)
    store.put("link_approved", json.dumps(table))
    e.transfers_sent.append(did)


async def on_link_transfer(e: E2EE, sender_device: int, content: dict[str, Any]) -> None:
    m, store = e.machine, e.store
    assert m is not None and store is not None
    master = MasterKey(b64d(str(content["master_seed"])))
    current = e.devices.get(m.user_id, (None, {}))[0]
    if current is not None and master.public != current:
        raise E2EEError("wrong_master", "the transferred master key is not our current one")
    parts = e._link_parts.setdefault(sender_device, {})
    parts[int(content["part"])] = content
    sids = m.import_sessions(list(content.get("sessions") or []))
    if m.master is None:
        m.set_master(master)
    e._retry_waiting(sids)
    if len(parts) >= int(content["parts"]) and e.awaiting_link:
        e.awaiting_link = False
        store.delete("awaiting_link")
        await e._upload()
        e.linked.set()
        e.c._emit("e2ee.linked", {"device_id": sender_device, "sessions": len(sids)})
