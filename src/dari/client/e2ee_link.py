"""Linking a device (docs/e2ee.md, "Linking a device"): the approving device hands the new one the
master key and the chats' history keys.

New device (linked by code, or logged in by password while its user already has a master key): no
master key yet, so it asks its user's other devices with a plain `dari.link_request.v1` to-device
payload (public keys and one one-time key). Existing device: it answers at once only a device it
approved itself (device.link_approve) in the last 15 minutes; any other request from its own user is
kept as a pending key request (event `e2ee.key_request`) until the user shares the keys with it
(`share`) — a password alone must not be enough to obtain the master key. The answer is
`link_transfer` parts over a fresh Olm session. New device: it checks the seed against its user's
current master key, imports the sessions, then uploads its bundle. `reset` makes a new master key
(the explicit way out when no device holds the current one); the other devices notice (`own_master`)
and ask for the new one like a new device.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from dari.client.e2ee.codec import b64d, b64e, canonical
from dari.client.e2ee.keys import Device, MasterKey, device_statement, verify
from dari.client.e2ee.machine import E2EEError
from dari.protocol.errors import DariError, ErrorCode

if TYPE_CHECKING:
    from dari.client.e2ee_sync import E2EE

log = logging.getLogger("dari.e2ee")
LINK_PART = 48 * 1024
LINK_APPROVAL_S = 15 * 60
REQUEST_TTL_S = 7 * 24 * 3600     # a pending key request older than this is dropped
MAX_REQUESTS = 20                 # pending key requests kept (one per device, newest win)


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


def _requests(e: E2EE) -> dict[str, dict[str, Any]]:
    assert e.store is not None
    table: dict[str, dict[str, Any]] = json.loads(e.store.get("key_requests") or "{}")
    now = time.time()
    return {k: v for k, v in table.items() if now - float(v.get("at", 0)) < REQUEST_TTL_S}


def _save_requests(e: E2EE, table: dict[str, dict[str, Any]]) -> None:
    assert e.store is not None
    newest = sorted(table.items(), key=lambda kv: -float(kv[1].get("at", 0)))[:MAX_REQUESTS]
    e.store.put("key_requests", json.dumps(dict(newest)))


def _check_request(uid: int, did: int, p: dict[str, Any]) -> tuple[str, str]:
    fields = ("identity_key", "signing_key", "one_time_key", "device_signature")
    if not all(isinstance(p.get(k), str) and 0 < len(p[k]) <= 200 for k in fields):
        raise E2EEError("bad_request", "link request fields")     # keys are 43, signatures 86 characters
    ik, sk = str(p["identity_key"]), str(p["signing_key"])
    if not verify(sk, device_statement(uid, did, ik, sk), str(p["device_signature"])):
        raise E2EEError("bad_signature", "link request signature")
    return ik, sk


async def _current_device(e: E2EE, did: int) -> dict[str, Any] | None:
    """`did` among our user's current devices (device.list: logged in, not revoked), else None."""
    for d in await e.c._plain_call("device.list", {}):
        if int(d["device_id"]) == did and not d.get("current"):
            return dict(d)
    return None


async def on_link_request(e: E2EE, uid: int, did: int, p: dict[str, Any]) -> None:
    m, store = e.machine, e.store
    assert m is not None and store is not None
    if uid != m.user_id or did == m.device_id:
        raise E2EEError("not_ours", f"user {uid} asked us for our master key")
    if m.master is None or e.awaiting_link:
        return      # we have no (current) master key to give
    ik, _ = _check_request(uid, did, p)
    mine = (await e.query([uid], force=True)).get(uid, {})
    if did in e.transfers_sent or (did in mine and mine[did].identity_key == ik):
        return      # a repeated request from a device that has (or is getting) the keys already
    table = json.loads(store.get("link_approved") or "{}")
    when = table.get(str(did))
    if when is not None and time.time() - when <= LINK_APPROVAL_S:
        await _transfer(e, uid, did, p)
        table.pop(str(did), None)
        store.put("link_approved", json.dumps(table))
        return
    # Not approved here: the user decides (share_keys), after seeing which device asks.
    device = await _current_device(e, did)
    if device is None:
        raise E2EEError("not_a_device", f"device {did} is not a current device of ours")
    requests = _requests(e)
    known = requests.get(str(did))
    requests[str(did)] = {"request": {k: p[k] for k in ("identity_key", "signing_key", "one_time_key",
                                                           "device_signature")},
                          "name": str(device.get("name") or ""), "at": time.time()}
    _save_requests(e, requests)
    if known is None or known["request"]["identity_key"] != p["identity_key"]:
        e.c._emit("e2ee.key_request", {"device_id": did, "device_name": str(device.get("name") or "")})


async def pending_requests(e: E2EE) -> list[dict[str, Any]]:
    """Key requests waiting for the user, from devices still logged in (device.list)."""
    table = _requests(e)
    current = {int(d["device_id"]) for d in await e.c._plain_call("device.list", {}) if not d.get("current")}
    live = {k: v for k, v in table.items() if int(k) in current}
    if len(live) != len(table):
        _save_requests(e, live)
    return [{"device_id": int(k), "device_name": v["name"], "requested_at": int(float(v["at"]) * 1000)}
            for k, v in sorted(live.items(), key=lambda kv: float(kv[1]["at"]))]


async def share(e: E2EE, did: int) -> None:
    """The user approved device `did`'s key request: send it the master key and history keys."""
    m = e.machine
    assert m is not None
    if m.master is None or e.awaiting_link:
        raise E2EEError("awaiting_link", "this device does not hold your current encryption keys itself")
    requests = _requests(e)
    entry = requests.get(str(did))
    if entry is None:
        raise E2EEError("no_request", f"device {did} has not asked for the encryption keys")
    if await _current_device(e, did) is None:
        requests.pop(str(did), None)
        _save_requests(e, requests)
        raise E2EEError("not_a_device", f"device {did} is not a current device of your account")
    _check_request(m.user_id, did, entry["request"])
    await _transfer(e, m.user_id, did, entry["request"])
    requests.pop(str(did), None)
    _save_requests(e, requests)


async def _transfer(e: E2EE, uid: int, did: int, p: dict[str, Any]) -> None:
    m = e.machine
    assert m is not None and m.master is not None
    ik, sk = _check_request(uid, did, p)
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
    if m.master is None or (e.awaiting_link and m.master.public != master.public):
        m.set_master(master)     # first key, or the new one after a reset on another device
    e._retry_waiting(sids)
    if len(parts) >= int(content["parts"]) and e.awaiting_link:
        e.awaiting_link = False
        store.delete("awaiting_link")
        await e._upload()
        e.linked.set()
        e.c._emit("e2ee.linked", {"device_id": sender_device, "sessions": len(sids)})


def own_master(e: E2EE, master: str) -> None:
    """Our user's master key on the server is not ours: another device reset it. This device is no
    longer trusted by contacts; it says so and asks for the new key like a new device."""
    m, store = e.machine, e.store
    assert m is not None and store is not None
    if m.master is None or m.master.public == master or e.awaiting_link or e._resetting:
        return
    e.awaiting_link = True
    store.put("awaiting_link", "1")
    log.info("our master key was reset on another device")
    e.c._emit("e2ee.own_key_reset", {"master_key": master, "previous": m.master.public})
    e.c._background(_request_link_quietly(e))


async def _request_link_quietly(e: E2EE) -> None:
    try:
        await request_link(e)
    except (DariError, TimeoutError) as exc:     # asked again on the next session.open
        log.debug("E2EE link request: %s", exc)


async def reset(e: E2EE) -> dict[str, Any]:
    """A new master key for our user (no other device can share the current one): contacts see
    "security code changed" and our other devices must be approved again."""
    active = await e.wait_ready()
    m, store = e.machine, e.store
    if not active or m is None or store is None:
        raise DariError(ErrorCode.UNAVAILABLE, f"end-to-end encryption is not available: {e.disabled}")
    previous = m.master.public if m.master else None
    e._resetting = True      # our own keys.changed must not read as a reset elsewhere
    try:
        m.set_master(MasterKey.generate())
        await e._upload()
    finally:
        e._resetting = False
    e.awaiting_link = False
    store.delete("awaiting_link")
    e.devices.pop(m.user_id, None)
    e.linked.set()
    assert m.master is not None
    return {"master_key": m.master.public, "previous": previous}
