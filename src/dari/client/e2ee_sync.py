"""E2EE over a Client (docs/e2ee.md): keys up, room keys out and in, messages decrypted in place.

The Client calls in here at four points: after `session.open` (`start`), for each event it reads
(`on_event`, synchronous so the event order is kept), around `call()` (`before_call` /
`after_call`), and in the outbox. Everything that needs the network runs in background tasks and
uses the Client's plain calls, never the intercepted ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from dari.client import e2ee_link
from dari.client.e2ee.keys import Device, MasterKey, safety_number, safety_qr, verify_bundle
from dari.client.e2ee.machine import UNKNOWN_SESSION, E2EEError, Machine
from dari.client.e2ee.store import CryptoStore
from dari.protocol.errors import DariError, ErrorCode

if TYPE_CHECKING:
    from dari.client.client import Client, Event

log = logging.getLogger("dari.e2ee")
INTERNAL_EVENTS = {"keys.changed", "keys.low", "todevice.pending"}
WAITING_MESSAGE = ("this device is waiting for your other device to share your encrypted chats' keys"
                   " (approve it there: `dari device share-keys`, or Settings on the phone); if you have no"
                   " other device any more, reset your keys (`dari account reset-keys`)")
NOTICE = "🔒 This message could not be decrypted"
MAX_WAITING = 5000
TODEVICE_BATCH = 200


def notice(reason: str) -> str:
    return f"{NOTICE} ({reason})"


class E2EE:
    def __init__(self, client: Client, path: str | None) -> None:
        self.c = client
        self.path = path
        self.store: CryptoStore | None = None
        self.machine: Machine | None = None
        self.ready = asyncio.Event()                # keys are up: we can encrypt
        self.synced = asyncio.Event()               # ...and the keys queued for us are in: we can decrypt
        self.disabled: str | None = None           # why E2EE is off on this client (server without it...)
        self.awaiting_link = False                  # waiting for our user's (current) master key
        self.devices: dict[int, tuple[str | None, dict[int, Device]]] = {}
        self.members: dict[int, set[int]] = {}
        self.chats: dict[int, dict[str, Any]] = {}  # chat_id -> {"e2ee": bool, "title": str}
        self.waiting: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        self.keys_changed = 0                       # keys.changed handled (tests wait on it)
        self._lock = asyncio.Lock()                 # one to-device drain at a time
        self._upload_lock = asyncio.Lock()
        self._chat_locks: dict[int, asyncio.Lock] = {}
        self._link_parts: dict[int, dict[int, dict[str, Any]]] = {}
        self.linked = asyncio.Event()
        self._gating = 0
        self._held: collections.deque[Event] = collections.deque()
        self.transfers_sent: list[int] = []
        self._resetting = False                     # our own new master key is on its way up

    # -- setup -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.machine is not None and self.disabled is None

    @property
    def state(self) -> str:
        """"off" (E2EE unavailable on this client), "starting", "ready", or "waiting_for_approval"
        (our user has a master key this device does not hold: another device must share it)."""
        if self.disabled is not None:
            return "off"
        if self.machine is None or not self.ready.is_set():
            return "starting"
        return "waiting_for_approval" if self.awaiting_link else "ready"

    async def start(self) -> None:
        """After session.open: load or create the account, upload keys, drain queued to-device."""
        try:
            await self._start()
        except DariError as err:
            if err.code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL):
                return      # passing trouble: the next session.open tries again
            self._disable(f"{err.code.value}: {err.message}")
        except E2EEError as err:
            self._disable(str(err))
        except Exception as exc:      # never let E2EE setup take the session down
            self._disable(repr(exc))

    def _disable(self, why: str) -> None:
        self.disabled = why
        log.warning("end-to-end encryption is off on this client: %s", why)
        self.ready.set()
        self.synced.set()

    async def _start(self) -> None:
        assert self.c.user is not None and self.c.device_id is not None
        uid, did = int(self.c.user["user_id"]), int(self.c.device_id)
        if self.machine is None or (self.machine.user_id, self.machine.device_id) != (uid, did):
            if self.store is None or self.machine is not None:
                # One store per device: the path may name it ("crypto-{user_id}-{device_id}.db").
                if self.store is not None:
                    self.store.close()
                path = self.path.format(user_id=uid, device_id=did) if self.path else None
                self.store = CryptoStore(path)
            self.machine = Machine(self.store, uid, did)
            self.awaiting_link = self.awaiting_link or self.store.get("awaiting_link") == "1"
        m, store = self.machine, self.store
        assert store is not None
        if m.master is None and not self.awaiting_link:
            # A new master key would make our user's other devices unverified for every contact:
            # only the first device makes one; later ones ask a device that holds it.
            res = await self.c._plain_call("keys.query", {"user_ids": [uid]})
            users = res.get("users") or []
            if any(int(b["device_id"]) == did and b.get("identity_key") != m.identity_key
                   for u in users for b in u.get("devices") or []):
                # The same device reopened without its crypto store: its keys cannot be replaced.
                raise DariError(ErrorCode.CONFLICT, "this device already has other encryption keys"
                                " (its crypto store is not here)")
            self.awaiting_link = any(u.get("master_key") for u in users)
            if not self.awaiting_link:
                m.set_master(MasterKey.generate())
        if self.awaiting_link:
            store.put("awaiting_link", "1")
            await self._request_link()
        else:
            await self._upload()
            # A reset on another device while this one was away: _learn notices and says so.
            await self.query([uid], force=True)
        self.ready.set()
        try:
            await self.drain()
        finally:
            self.synced.set()

    async def _upload(self) -> None:
        async with self._upload_lock:    # keys.low comes once per claim below the mark: top up once
            await self._upload_locked()

    async def _upload_locked(self) -> None:
        m, store = self.machine, self.store
        assert m is not None and store is not None
        fresh = store.get("uploaded") != (m.master.public if m.master else "")
        count = 0 if fresh else int((await self.c._plain_call("keys.count", {}))["one_time_key_count"])
        params: dict[str, Any] = {"one_time_keys": m.one_time_keys(count)}
        if fresh:
            params.update(m.bundle())
            params["fallback_key"] = m.fallback_key()
        if params["one_time_keys"] or fresh:
            await self.c._plain_call("keys.upload", params)
            m.mark_published()
        if fresh:
            store.put("uploaded", m.master.public if m.master else "")

    async def wait_ready(self, *, synced: bool = False) -> bool:
        ev = self.synced if synced else self.ready
        if not ev.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), self.c.call_timeout)
        return self.active

    # -- events ----------------------------------------------------------------------------
    def hold(self) -> bool:
        """Before session.open: hold the app's events (the replay may come right behind the answer)
        until our keys are up and queued to-device messages are in, so replayed messages decrypt at
        once. False when E2EE is off (nothing held)."""
        if self.disabled is not None:
            return False
        self._gating += 1
        return True

    def release(self) -> None:
        self._gating -= 1
        while self._held and not self._gating:
            self._pass(self._held.popleft())

    def session_opened(self) -> None:
        """After a held session.open: set up, then release the events."""
        self.c._background(self._gated(self.start()))

    def on_frame(self, ev: Event) -> None:
        """Every event from the server, in order. Keys and to-device events are ours (handled here,
        not shown to the app). The server queues a room key before the message it opens, so while
        a `todevice.pending` is being drained later events wait, in order, and then decrypt."""
        if ev.name in INTERNAL_EVENTS:
            p = ev.payload if isinstance(ev.payload, dict) else {}
            if ev.name == "todevice.pending" and self.hold():
                self.c._background(self._gated(self._internal(ev.name, p)))
            elif self.machine is not None and self.disabled is None:
                self.c._background(self._internal(ev.name, p))
            return
        if ev.name == "session.live" and self.machine is not None and self.disabled is None:
            # todevice.pending is a signal, not a stored event: what came while we were connecting.
            self.c._background(self._internal("todevice.pending", {}))
        if self._gating or self._held:
            self._held.append(ev)
            return
        self._pass(ev)

    def _pass(self, ev: Event) -> None:
        try:
            self.on_event(ev.name, ev.payload)
        except Exception as exc:   # the event still reaches the app; a terminal gets no traceback
            log.warning("E2EE could not process %s: %r", ev.name, exc)
        self.c._events.put_nowait(ev)
        if ev.name == "session.live":
            self.c._live.set()   # wait_live() still means: everything replayed is in the queue

    async def _gated(self, work: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(work, self.c.call_timeout)
        except Exception as exc:     # the events go on regardless
            log.debug("E2EE: %s", exc)
        finally:
            self.release()

    def on_event(self, name: str, payload: Any) -> None:
        """Decrypt an app event in place and keep the caches current."""
        if not isinstance(payload, dict):
            return
        chat_id = payload.get("chat_id")
        if name == "message.new":
            if payload.get("kind") == "system" and isinstance(chat_id, int):
                # A member joined, left, or E2EE was switched on: ask the server again before sending.
                self.members.pop(chat_id, None)
                self.chats.pop(chat_id, None)
            self.decrypt_message(payload)
        elif name == "message.edited" and payload.get("e2ee"):
            self.decrypt_message(payload, edited=True)
        elif name == "message.unsent" and self.store is not None and isinstance(chat_id, int):
            self.store.unindex(chat_id, int(payload.get("seq") or 0))
        elif name in ("chat.members", "chat.left", "chat.removed") and isinstance(chat_id, int):
            self.members.pop(chat_id, None)
        elif name == "chat.e2ee" and isinstance(chat_id, int):
            self.chats.pop(chat_id, None)     # switched on: the next send asks the server again

    async def _internal(self, name: str, p: dict[str, Any]) -> None:
        try:
            await self.wait_ready()
            if not self.active:
                return
            if name == "todevice.pending":
                await self.drain()
            elif name == "keys.low":
                await self._upload()
            elif name == "keys.changed":
                uid = int(p.get("user_id") or 0)
                self.devices.pop(uid, None)
                self.keys_changed += 1
                await self.query([uid], force=True)
                if self.awaiting_link and uid == self.machine.user_id:  # type: ignore[union-attr]
                    await self._request_link()
        except (DariError, TimeoutError) as exc:
            log.debug("E2EE %s: %s", name, exc)
        except Exception as exc:
            log.warning("E2EE %s failed: %r", name, exc)

    # -- decrypting ------------------------------------------------------------------------
    def decrypt_message(self, msg: dict[str, Any], *, edited: bool = False) -> dict[str, Any]:
        """Fill msg["text"] (and kind/attachment for media) from msg["e2ee"]; msg["e2ee_status"] says
        "ok" or why not. Messages without an envelope are left alone."""
        env = msg.get("e2ee")
        if not isinstance(env, dict):
            return msg
        if self.machine is None:
            msg.update(text=notice("not_ready"), e2ee_status="not_ready")
            return msg
        probe = dict(msg)
        if edited and "sender_id" not in probe:
            s = self.store.inbound(str(env.get("session_id", ""))) if self.store else None
            probe["sender_id"] = s.sender_id if s else None
        res = self.machine.decrypt(probe)
        if res.status != "ok":
            msg.update(text=notice(res.status), e2ee_status=res.status)
            if res.status == UNKNOWN_SESSION and isinstance(msg.get("seq"), int):
                waiting = self.waiting.setdefault(res.session_id, {})
                if sum(len(w) for w in self.waiting.values()) < MAX_WAITING:
                    waiting[(int(msg["chat_id"]), int(msg["seq"]))] = {**probe, "_edited": edited}
            return msg
        content = res.content
        msg["e2ee_status"] = "ok"
        msg["text"] = str(content.get("text") or "")
        ctype = content.get("type")
        if ctype == "edit" and not msg.get("edited_at"):
            msg["edited_at"] = msg.get("created_at")
        att = content.get("attachment")
        if ctype == "media" and isinstance(att, dict):
            msg["kind"], msg["attachment"] = str(att.get("kind") or "file"), att
            if self.store is not None and isinstance(att.get("blob_id"), str) and "key" in att:
                self.store.remember_attachment(int(msg["chat_id"]), att)
        elif ctype == "sticker" and isinstance(att, dict):
            msg["kind"], msg["attachment"] = "sticker", att
        elif ctype in ("text", "edit") and msg.get("kind") == "encrypted":
            msg["kind"] = "text"
        if self.store is not None and isinstance(msg.get("seq"), int) and not msg.get("unsent") \
                and msg.get("kind") != "sticker":
            self.store.index(int(msg["chat_id"]), int(msg["seq"]), int(probe.get("sender_id") or 0),
                             int(msg.get("created_at") or msg.get("edited_at") or 0), msg["text"],
                             kind=str(msg.get("kind") or "text"),
                             attachment=att if isinstance(att, dict) else None)
        return msg

    def decrypt_result(self, method: str, result: Any) -> Any:
        if self.machine is None:
            return result
        if method in ("message.send", "message.edit", "message.send_media", "message.get") and isinstance(result, dict):
            self.decrypt_message(result)
        elif method == "message.history" and isinstance(result, dict):
            for m in result.get("messages") or []:
                self.decrypt_message(m)
        elif method == "chat.list" and isinstance(result, list):
            for ch in result:
                self.chats[int(ch["chat_id"])] = {"e2ee": bool(ch.get("e2ee")), "title": ch.get("title") or ""}
                if isinstance(ch.get("last_message"), dict):
                    self.decrypt_message(ch["last_message"])
        elif method in ("chat.get", "chat.open_direct", "chat.create_group", "chat.invite", "chat.remove_member",
                        "chat.enable_e2ee") and isinstance(result, dict) and "chat_id" in result:
            self._note_chat(result)
        return result

    def _note_chat(self, d: dict[str, Any]) -> None:
        cid = int(d["chat_id"])
        self.chats[cid] = {"e2ee": bool(d.get("e2ee")), "title": d.get("title") or ""}
        if "members" in d:
            self.members[cid] = {int(m["user_id"]) for m in d["members"]}

    def _retry_waiting(self, session_ids: list[str]) -> None:
        for sid in session_ids:
            for msg in (self.waiting.pop(sid, None) or {}).values():
                edited = bool(msg.pop("_edited", False))
                self.decrypt_message(msg, edited=edited)
                if msg.get("e2ee_status") == "ok":
                    self.c._emit("message.decrypted", msg)

    # -- sending ---------------------------------------------------------------------------
    async def chat_is_e2ee(self, chat_id: int) -> bool:
        info = self.chats.get(chat_id)
        if info is None:
            self._note_chat(await self.c._plain_call("chat.get", {"chat_id": chat_id}))
            info = self.chats[chat_id]
        return bool(info["e2ee"])

    async def prepare(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """message.send / message.edit with `text` into an E2EE chat: the envelope instead."""
        chat_id = params.get("chat_id")
        if "text" not in params or not isinstance(chat_id, int):
            return params
        active = await self.wait_ready()
        if not await self.chat_is_e2ee(chat_id):
            return params
        if not active:
            # Never hand the server the text of an encrypted chat, even for it to refuse.
            raise DariError(ErrorCode.INVALID_PARAMS, f"chat {chat_id} is end-to-end encrypted but encryption is"
                            f" off on this client ({self.disabled})", {"reason": "e2ee_unavailable"})
        out = {k: v for k, v in params.items() if k != "text"}
        if method == "message.edit":
            content: dict[str, Any] = {"type": "edit", "text": params["text"]}
        else:
            content = {"type": "text", "text": params["text"], "client_id": params.get("client_id", "")}
        out["e2ee"] = await self.encrypt(chat_id, content)
        return out

    async def encrypt(self, chat_id: int, content: dict[str, Any]) -> dict[str, Any]:
        m = self.machine
        if m is None or not self.active:
            raise DariError(ErrorCode.UNAVAILABLE, f"end-to-end encryption is not available: {self.disabled}")
        if m.master is None or self.awaiting_link:
            raise DariError(ErrorCode.FORBIDDEN, WAITING_MESSAGE, {"reason": "awaiting_keys"})
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            members = await self.members_of(chat_id)
            devices = await self.query(sorted(members))
            target = {d.device_id: d for uid in members for d in devices.get(uid, {}).values()
                      if d.device_id != m.device_id}
            keys = {did: d.identity_key for did, d in target.items()}
            if m.needs_rotation(chat_id, members, keys):
                m.new_outbound(chat_id, members)
            o = m.outbound(chat_id)
            assert o is not None
            missing = [d for did, d in target.items() if did not in o.shared]
            if missing:
                shared = await self._send_olm(missing, "room_key", m.room_key(chat_id))
                m.mark_shared(chat_id, {d.device_id: d.identity_key for d in shared}, members)
            elif set(o.members) != members:
                m.mark_shared(chat_id, {}, members)
            return m.encrypt(chat_id, content)

    async def members_of(self, chat_id: int) -> set[int]:
        if chat_id not in self.members:
            self._note_chat(await self.c._plain_call("chat.get", {"chat_id": chat_id}))
        return set(self.members[chat_id])

    async def query(self, user_ids: list[int], *, force: bool = False) -> dict[int, dict[int, Device]]:
        """Verified devices per user (cached until keys.changed), pinning master keys on first use."""
        want = [u for u in user_ids if force or u not in self.devices]
        for i in range(0, len(want), 1000):
            res = await self.c._plain_call("keys.query", {"user_ids": want[i:i + 1000]})
            for u in res.get("users") or []:
                self._learn(int(u["user_id"]), u.get("master_key"), u.get("devices") or [])
            for uid in want[i:i + 1000]:
                self.devices.setdefault(uid, (None, {}))
        return {u: self.devices.get(u, (None, {}))[1] for u in user_ids}

    def _learn(self, uid: int, master: str | None, bundles: list[dict[str, Any]]) -> None:
        assert self.machine is not None and self.store is not None
        verified: dict[int, Device] = {}
        if master:
            for b in bundles:
                d = verify_bundle(b, uid, master)
                if d is not None:
                    verified[d.device_id] = d
            if uid == self.machine.user_id:
                self._own_master(master)
            else:
                pinned = self.store.contact(uid)
                if pinned is None:
                    self.store.pin(uid, master)
                elif pinned.master_key != master:
                    self.store.pin(uid, master, verified=False, changed=True)
                    self.c._emit("e2ee.key_changed", {
                        "user_id": uid, "master_key": master, "previous": pinned.master_key,
                        "was_verified": pinned.verified})
        self.devices[uid] = (master, verified)

    def _own_master(self, master: str) -> None:
        e2ee_link.own_master(self, master)

    async def reset(self) -> dict[str, Any]:
        return await e2ee_link.reset(self)

    async def _send_olm(self, devices: list[Device], kind: str, content: dict[str, Any]) -> list[Device]:
        """Olm-encrypt one content to each device (claiming one-time keys where no session exists) and
        send them; returns the devices it went to."""
        m = self.machine
        assert m is not None
        need = [d.device_id for d in devices if not m.has_olm_session(d.identity_key)]
        claimed: dict[str, Any] = {}
        for i in range(0, len(need), 1000):
            res = await self.c._plain_call("keys.claim", {"device_ids": need[i:i + 1000]})
            claimed.update(res.get("keys") or {})
        msgs, sent = [], []
        for d in devices:
            key = claimed.get(str(d.device_id))
            try:
                payload = m.olm_encrypt(d, key["key"] if isinstance(key, dict) else None, kind, content)
            except E2EEError:
                continue     # no session and no key left: it gets the next rotation's key
            msgs.append({"device_id": d.device_id, "payload": payload})
            sent.append(d)
        for i in range(0, len(msgs), TODEVICE_BATCH):
            await self.c._plain_call("todevice.send", {"messages": msgs[i:i + TODEVICE_BATCH]})
        return sent

    # -- receiving to-device ---------------------------------------------------------------
    async def drain(self) -> None:
        """Fetch, handle and acknowledge every queued to-device message."""
        async with self._lock:
            while True:
                res = await self.c._plain_call("todevice.fetch", {"after": 0, "limit": 100})
                items = res.get("messages") or []
                for item in items:
                    try:
                        await self._handle(item)
                    except (E2EEError, ValueError, KeyError, TypeError) as exc:
                        log.info("dropped a to-device message from %s/%s: %s", item.get("sender_id"),
                                 item.get("sender_device"), exc)
                if items:
                    await self.c._plain_call("todevice.ack", {"up_to": int(items[-1]["id"])})
                if not res.get("has_more") or not items:
                    return

    async def _sender(self, uid: int, did: int, key: str) -> Device | None:
        d = (await self.query([uid])).get(uid, {}).get(did)
        if d is None or d.identity_key != key:
            d = (await self.query([uid], force=True)).get(uid, {}).get(did)
        return d

    async def _handle(self, item: dict[str, Any]) -> None:
        m = self.machine
        assert m is not None
        payload = item["payload"]
        if isinstance(payload, str):
            payload = json.loads(payload)
        uid, did = int(item["sender_id"]), int(item["sender_device"])
        if payload.get("alg") == "dari.link_request.v1":
            await self._on_link_request(uid, did, payload)
            return
        sender = await self._sender(uid, did, str(payload.get("sender_key", "")))
        plain = m.olm_decrypt(payload, uid, did, sender)
        assert sender is not None
        content = plain["content"]
        if plain["type"] == "room_key":
            sid = m.add_room_key(content, sender)
            self._retry_waiting([sid])
        elif plain["type"] == "link_transfer" and uid == m.user_id:
            await self._on_link_transfer(did, content)

    # -- device link (e2ee_link.py) ---------------------------------------------------------
    def approved(self, device_id: int) -> None:
        e2ee_link.approved(self, device_id)

    async def _request_link(self) -> None:
        await e2ee_link.request_link(self)

    async def _on_link_request(self, uid: int, did: int, p: dict[str, Any]) -> None:
        await e2ee_link.on_link_request(self, uid, did, p)

    async def _on_link_transfer(self, sender_device: int, content: dict[str, Any]) -> None:
        await e2ee_link.on_link_transfer(self, sender_device, content)

    async def key_requests(self) -> list[dict[str, Any]]:
        if not await self.wait_ready(synced=True) or self.machine is None:
            return []
        return await e2ee_link.pending_requests(self)

    async def share_keys(self, device_id: int) -> None:
        if not await self.wait_ready(synced=True) or self.machine is None:
            raise DariError(ErrorCode.UNAVAILABLE, f"end-to-end encryption is not available: {self.disabled}")
        try:
            await e2ee_link.share(self, device_id)
        except E2EEError as err:
            raise DariError(ErrorCode.NOT_FOUND if err.reason in ("no_request", "not_a_device")
                            else ErrorCode.FORBIDDEN, str(err), {"reason": err.reason}) from None

    # -- verification and search -----------------------------------------------------------
    async def safety(self, user_id: int) -> dict[str, Any]:
        """The safety number with a contact (12 groups of 5 digits) and the QR payload."""
        active = await self.wait_ready()
        m = self.machine
        if active and m is not None and (m.master is None or self.awaiting_link):
            raise DariError(ErrorCode.FORBIDDEN, WAITING_MESSAGE, {"reason": "awaiting_keys"})
        if not active or m is None or m.master is None:
            raise DariError(ErrorCode.UNAVAILABLE, f"end-to-end encryption is not available: {self.disabled}")
        await self.query([user_id], force=True)
        master = self.devices.get(user_id, (None, {}))[0]
        if master is None:
            raise DariError(ErrorCode.NOT_FOUND, "that user has no end-to-end encryption keys yet")
        pinned = self.store.contact(user_id) if self.store else None
        return {"user_id": user_id, "master_key": master,
                "safety_number": safety_number(m.user_id, m.master.public, user_id, master),
                "qr": safety_qr(m.user_id, m.master.public, user_id, master),
                "verified": bool(pinned and pinned.verified and pinned.master_key == master),
                "changed": bool(pinned and pinned.changed)}

    async def mark_verified(self, user_id: int) -> dict[str, Any]:
        info = await self.safety(user_id)
        assert self.store is not None
        self.store.pin(user_id, info["master_key"], verified=True)
        return {**info, "verified": True, "changed": False}

    async def catch_up_index(self, chat_id: int | None = None, per_chat: int = 500) -> None:
        """Decrypt (and so index) what arrived in our E2EE chats since we last looked: a device that
        was not running when messages came (the CLI between commands) still finds them."""
        if self.store is None:
            return
        chats = [ch for ch in self.decrypt_result("chat.list", await self.c._plain_call("chat.list", {}))
                 if ch.get("e2ee") and chat_id in (None, ch["chat_id"])]
        for ch in chats:
            cid, last = int(ch["chat_id"]), int(ch.get("last_seq") or 0)
            done = int(self.store.get(f"indexed:{cid}") or 0)
            before, seen = None, 0
            while last > done and seen < per_chat:
                params: dict[str, Any] = {"chat_id": cid, "limit": 100}
                if before is not None:
                    params["before_seq"] = before
                try:
                    page = self.decrypt_result("message.history",
                                               await self.c._plain_call("message.history", params))
                except DariError:
                    break
                msgs = page.get("messages") or []
                seen += len(msgs)
                if not msgs or not page.get("has_more") or int(msgs[0]["seq"]) <= done:
                    break
                before = int(msgs[0]["seq"])
            self.store.put(f"indexed:{cid}", str(last))

    async def search(self, query: str, chat_id: int | None, limit: int) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        await self.catch_up_index(chat_id)
        hits = self.store.search(query, chat_id, limit)
        for h in hits:
            h.setdefault("chat_title", (self.chats.get(h["chat_id"]) or {}).get("title", ""))
            h["e2ee"] = True
        return hits

    async def find_attachment(self, blob_id: str, per_chat: int = 200) -> dict[str, Any] | None:
        """The decrypted attachment (key included) of an encrypted blob: from the store, else by
        reading the recent history of our E2EE chats (which remembers what it decrypts)."""
        if not await self.wait_ready(synced=True) or self.store is None:
            return None
        found = self.store.attachment(blob_id)
        if found is not None:
            return found
        for ch in await self.c._plain_call("chat.list", {}):
            if not ch.get("e2ee"):
                continue
            before: int | None = None
            seen = 0
            while seen < per_chat:
                params: dict[str, Any] = {"chat_id": ch["chat_id"], "limit": 100}
                if before is not None:
                    params["before_seq"] = before
                page = self.decrypt_result("message.history", await self.c._plain_call("message.history", params))
                msgs = page.get("messages") or []
                seen += len(msgs)
                if self.store is not None and (found := self.store.attachment(blob_id)) is not None:
                    return found
                if not page.get("has_more") or not msgs:
                    break
                before = int(msgs[0]["seq"])
        return None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
            self.machine = None

