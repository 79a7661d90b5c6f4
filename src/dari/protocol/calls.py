"""Method schemas for voice and video calls (issue 12).

Kept apart from methods.py like invites.py; importing this module adds CALL_METHODS to METHODS.
Signaling (SDP offers and answers, ICE candidates) is a bounded, typed payload relayed by the server
between two devices of one call, so it travels on whatever route the session uses.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from dari.protocol.methods import METHODS, Id, MethodSpec, NoParams, P

# One group call has at most this many people in it at once: every device keeps a peer connection
# to every other (a mesh), which a phone's uplink carries for voice up to about this size.
GROUP_CALL_MAX = 8
# A full SDP of Chromium with audio, video and a data channel is 5-8 kB; 32 kB leaves room for
# many codecs without letting one signal fill a connection's buffer.
MAX_SDP = 32768


class CallStart(P):
    chat_id: Id
    video: bool = False


class CallRef(P):
    call_id: Id


class SignalPayload(P):
    type: Literal["offer", "answer", "candidate"]
    sdp: Annotated[str, Meta(max_length=MAX_SDP)] = ""
    # An ICE candidate line ("candidate:..."); "" marks the end of candidates.
    candidate: Annotated[str, Meta(max_length=1024)] = ""
    sdp_mid: Annotated[str, Meta(max_length=64)] | None = None
    sdp_mline_index: Annotated[int, Meta(ge=0, le=64)] | None = None


class CallSignal(P):
    call_id: Id
    to_device: Id
    payload: SignalPayload


def _m(name: str, params: type[P], summary: str, *, writes: bool = True) -> MethodSpec:
    return MethodSpec(name, params, True, summary, writes)


CALL_METHODS: list[MethodSpec] = [
    _m("call.start", CallStart, "Call a 1:1 chat (voice or video) or start a group voice call; rings every"
       " device of the others."),
    _m("call.accept", CallRef, "Answer a ringing call (or join a running group call) on this device."),
    _m("call.decline", CallRef, "Decline a ringing call on all your devices."),
    _m("call.hangup", CallRef, "Leave a call; a 1:1 call (or a group call's last person) ends it."),
    _m("call.signal", CallSignal, "Relay an SDP offer/answer or ICE candidate to a device in the call.",
       writes=False),
    _m("call.current", NoParams, "Calls ringing for you or that you are in (after a reload).", writes=False),
    _m("call.turn_credentials", NoParams, "ICE servers with short-lived TURN credentials for this user.",
       writes=False),
]

METHODS.update((spec.name, spec) for spec in CALL_METHODS)
