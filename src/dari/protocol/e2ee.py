"""Method schemas for end-to-end encryption: device keys, to-device messages, switching a chat to
E2EE (docs/e2ee.md). Kept apart from methods.py like invites.py; importing this module adds
E2EE_METHODS to METHODS.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from dari.protocol.envelope import Key32, KeyId, Signature
from dari.protocol.methods import METHODS, ChatRef, Id, MethodSpec, NoParams, P

MAX_OTK_PER_CALL = 100
MAX_TODEVICE_PER_CALL = 200
MAX_TODEVICE_PAYLOAD = 65536        # bytes of the payload's canonical JSON


class FallbackKey(P):
    key_id: KeyId
    key: Key32


class KeysUpload(P):
    # The bundle: all five on a device's first upload; later calls may leave them out and only top up.
    identity_key: Key32 | None = None
    signing_key: Key32 | None = None
    master_key: Key32 | None = None
    device_signature: Signature | None = None
    master_signature: Signature | None = None
    one_time_keys: Annotated[dict[KeyId, Key32], Meta(max_length=MAX_OTK_PER_CALL)] = msgspec.field(
        default_factory=dict)
    fallback_key: FallbackKey | None = None


class KeysQuery(P):
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)]


class KeysClaim(P):
    device_ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)]


class ToDeviceMessage(P):
    device_id: Id
    payload: dict[str, Any]


class ToDeviceSend(P):
    messages: Annotated[list[ToDeviceMessage], Meta(min_length=1, max_length=MAX_TODEVICE_PER_CALL)]


class ToDeviceFetch(P):
    after: Annotated[int, Meta(ge=0, le=2**62)] = 0
    limit: Annotated[int, Meta(ge=1, le=500)] = 100


class ToDeviceAck(P):
    up_to: Annotated[int, Meta(ge=0, le=2**62)]


def _m(name: str, params: type[P], summary: str, *, writes: bool = True) -> MethodSpec:
    return MethodSpec(name, params, True, summary, writes)


E2EE_METHODS: list[MethodSpec] = [
    _m("keys.upload", KeysUpload, "Upload this device's signed key bundle, one-time keys and fallback key."),
    _m("keys.query", KeysQuery, "Users' master keys and the signed key bundles of their devices.", writes=False),
    _m("keys.claim", KeysClaim, "Take one one-time key (else the fallback key) of each device, to start"
       " Olm sessions."),
    _m("keys.count", NoParams, "How many one-time keys this device has left, and whether it has a fallback key.",
       writes=False),
    _m("todevice.send", ToDeviceSend, "Queue opaque messages (Olm) for other devices."),
    _m("todevice.fetch", ToDeviceFetch, "This device's queued to-device messages, oldest first.",
       writes=False),
    _m("todevice.ack", ToDeviceAck, "Delete this device's to-device messages up to an id."),
    _m("chat.enable_e2ee", ChatRef, "Turn on end-to-end encryption in a 1:1 or group chat (never off)."),
]

METHODS.update((spec.name, spec) for spec in E2EE_METHODS)
