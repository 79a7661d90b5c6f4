"""E2EE across the wire: real `dari serve` processes on 127.0.0.1. To-device signals reach only the
target device (also when it is connected to another node), key changes reach contacts, encrypted
messages go out as envelopes, and encrypted blobs download over HTTP for members only."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD
from tests.e2ee_util import bundle, curve_key, envelope
from tests.test_scaleout import FAST, REDIS, require_redis
from tests.test_storage_contract import pg_url  # noqa: F401  (fixture)


# These tests speak the wire protocol with hand-made bundles and envelopes (tests/e2ee_util.py), so
# the SDK's own E2EE (which would upload its real keys first) is off.
async def _user(url: str, name: str) -> Client:
    c = Client(url, e2ee=False)
    await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
    await c.wait_live()
    return c


async def _second_device(url: str, first: Client) -> Client:
    c = Client(url, e2ee=False)
    await c.login(first.user["handle"], PASSWORD, device_name="pc")
    await c.wait_live()
    return c


async def _until(c: Client, name: str) -> list[Any]:
    """Every event up to and including the first `name`: signals to one connection arrive in the
    order they were sent, so what came before a later signal shows what was (wrongly) delivered."""
    seen = []
    while True:
        ev = await c.next_event(timeout=10)
        seen.append(ev)
        if ev.name == name:
            return seen


def _names(events: list[Any]) -> list[str]:
    return [e.name for e in events]


async def _send(sender: Client, device_id: int, n: int) -> None:
    await sender.call("todevice.send", messages=[{"device_id": device_id, "payload": {"alg": "olm.v1", "i": i}}
                                                 for i in range(n)])


async def test_todevice_reaches_only_the_target_device_and_keys_changed_reaches_contacts(server: Any) -> None:
    alice = await _user(server.url, "alice")
    bob = await _user(server.url, "bob")
    bob_pc = await _second_device(server.url, bob)
    clients = [alice, bob, bob_pc]
    try:
        await alice.call("friend.add", handle=bob.user["handle"])
        master = Ed25519PrivateKey.generate()
        await bob.call("keys.upload", **bundle(bob.user["user_id"], bob.device_id, master),
                       one_time_keys={f"k{i}": curve_key() for i in range(10)})
        for c in (alice, bob, bob_pc):     # the friend, and the user's own devices
            ev = await c.next_event("keys.changed", timeout=10)
            assert ev.payload == {"user_id": bob.user["user_id"]}

        claimed = await alice.call("keys.claim", device_ids=[bob.device_id])
        assert not claimed["keys"][str(bob.device_id)]["fallback"]
        low = await bob.next_event("keys.low", timeout=10)            # 9 left: below 10
        assert low.payload == {"one_time_key_count": 9}

        # Two messages for the phone, then one for the PC: each device hears only of its own queue.
        await _send(alice, bob.device_id, 2)
        assert (await bob.next_event("todevice.pending", timeout=10)).payload == {"count": 2}
        await _send(alice, bob_pc.device_id, 1)
        seen = await _until(bob_pc, "todevice.pending")
        assert seen[-1].payload == {"count": 1}
        assert "keys.low" not in _names(seen) and _names(seen).count("todevice.pending") == 1
        await _send(alice, bob.device_id, 1)
        assert (await bob.next_event("todevice.pending", timeout=10)).payload == {"count": 3}

        got = await bob.call("todevice.fetch")
        assert [m["payload"] for m in got["messages"]] == [{"alg": "olm.v1", "i": i} for i in (0, 1, 0)]
        assert [m["payload"]["i"] for m in (await bob_pc.call("todevice.fetch"))["messages"]] == [0]
    finally:
        for c in clients:
            await c.close()


async def test_encrypted_chat_over_the_wire_and_blob_download_for_members_only(server: Any) -> None:
    alice = await _user(server.url, "alice")
    bob = await _user(server.url, "bob")
    eve = await _user(server.url, "eve")
    try:
        chat = await alice.call("chat.create_group", title="secret", member_ids=[bob.user["user_id"]], e2ee=True)
        assert chat["e2ee"]
        err = await asyncio.gather(alice.call("message.send", chat_id=chat["chat_id"], client_id="p", text="hi"),
                                   return_exceptions=True)
        assert isinstance(err[0], DariError) and err[0].details == {"reason": "e2ee_required"}

        ciphertext = os.urandom(20000)
        async with aiohttp.ClientSession() as http:
            begun = await alice.call("media.upload_begin", size=len(ciphertext), name="x")
            auth = {"Authorization": f"Bearer {alice.token}"}
            async with http.post(f"{server.url}/media/upload?upload_id={begun['upload_id']}&offset=0",
                                 data=ciphertext, headers=auth) as resp:
                assert resp.status == 200
            blob = (await alice.call("media.upload_finish", upload_id=begun["upload_id"]))["blob_id"]
            env = envelope(alice.device_id)
            sent = await alice.call("message.send", chat_id=chat["chat_id"], client_id="m1", e2ee=env,
                                    attachments=[blob])
            assert sent["kind"] == "encrypted" and sent["e2ee"] == env
            got = await bob.next_event("message.new", timeout=10)
            while got.payload["kind"] != "encrypted":
                got = await bob.next_event("message.new", timeout=10)
            assert got.payload["e2ee"] == env and got.payload["text"] == ""

            async with http.get(f"{server.url}/media/{blob}", headers={"Authorization": f"Bearer {bob.token}"}) as r:
                assert r.status == 200 and await r.read() == ciphertext
            async with http.get(f"{server.url}/media/{blob}", headers={"Authorization": f"Bearer {eve.token}"}) as r:
                assert r.status == 403
    finally:
        for c in (alice, bob, eve):
            await c.close()


async def test_todevice_pending_crosses_nodes(server_factory: Any, pg_url: str) -> None:  # noqa: F811
    require_redis()
    n1, n2 = (server_factory(extra_env=FAST, args=["--database", pg_url, "--bus", REDIS]) for _ in range(2))
    alice = await _user(n1.url, "alice")
    bob = await _user(n2.url, "bob")
    bob_pc = await _second_device(n1.url, bob)
    try:
        # bob's phone is on node 2, his PC on node 1 with alice: each signal reaches its device only.
        await _send(alice, bob.device_id, 2)
        assert (await bob.next_event("todevice.pending", timeout=10)).payload == {"count": 2}
        await _send(alice, bob_pc.device_id, 1)
        seen = await _until(bob_pc, "todevice.pending")
        assert seen[-1].payload == {"count": 1} and _names(seen).count("todevice.pending") == 1
        await _send(bob_pc, bob.device_id, 1)       # from node 1 to node 2 again
        assert (await bob.next_event("todevice.pending", timeout=10)).payload == {"count": 3}
        err = await asyncio.gather(bob.call("todevice.ack", up_to=-1), return_exceptions=True)
        assert isinstance(err[0], DariError) and err[0].code == ErrorCode.INVALID_PARAMS
    finally:
        for c in (alice, bob, bob_pc):
            await c.close()
