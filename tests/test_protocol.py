"""The protocol core, without sockets: frames decode strictly and every defect is a DariError."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dari.protocol import frames
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode

LIMIT = 1 << 20


def test_request_roundtrip() -> None:
    raw = frames.encode_request(7, "message.send", {"chat_id": 1, "client_id": "a", "text": "안녕"})
    req = frames.decode_request(raw, LIMIT)
    assert (req.id, req.method, req.params["text"]) == (7, "message.send", "안녕")


@pytest.mark.parametrize(("data", "code"), [
    (b"not json", ErrorCode.BAD_FRAME),
    (b"[1,2]", ErrorCode.BAD_FRAME),
    (b'{"id":1}', ErrorCode.BAD_FRAME),
    (b'{"id":1,"method":"x","params":[]}', ErrorCode.BAD_FRAME),
    (b'{"id":1.5,"method":"x"}', ErrorCode.BAD_FRAME),
    (b'{"id":1,"method":"x","extra":1}', ErrorCode.BAD_FRAME),
    (b'{"id":1,"method":""}', ErrorCode.BAD_FRAME),
    (b'{"id":1,"method":"a\xff"}', ErrorCode.BAD_FRAME),
    (b'{"id":"' + b"x" * 100 + b'","method":"a"}', ErrorCode.BAD_FRAME),
    (b" " * (LIMIT + 1), ErrorCode.FRAME_TOO_LARGE),
])
def test_bad_frames_have_stable_codes(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(DariError) as info:
        frames.decode_request(data, LIMIT)
    assert info.value.code == code
    assert info.value.message


def test_request_id_recovered_from_invalid_frame() -> None:
    assert frames.request_id_of(b'{"id": 42, "method": 5}') == 42
    assert frames.request_id_of(b"garbage") is None


def test_unknown_method() -> None:
    with pytest.raises(DariError) as info:
        m.lookup("message.explode")
    assert info.value.code == ErrorCode.UNKNOWN_METHOD


@pytest.mark.parametrize(("method", "params"), [
    ("account.signup", {"handle": "Bad Handle", "display_name": "x", "password": "longenough"}),
    ("account.signup", {"handle": "ok_handle", "display_name": "", "password": "longenough"}),
    ("account.signup", {"handle": "ok_handle", "display_name": "x", "password": "short"}),
    ("message.send", {"chat_id": "1", "client_id": "a", "text": "hi"}),
    ("message.send", {"chat_id": 1, "client_id": "a", "text": "hi", "surprise": True}),
    ("message.send", {"chat_id": 0, "client_id": "a", "text": "hi"}),
    ("message.history", {"chat_id": 1, "limit": 10_000}),
    ("friend.find_by_contacts", {"phone_hashes": ["not-a-hash"]}),
])
def test_invalid_params(method: str, params: dict[str, object]) -> None:
    with pytest.raises(DariError) as info:
        m.parse_params(m.METHODS[method], params)
    assert info.value.code == ErrorCode.INVALID_PARAMS
    assert method in info.value.message


def test_every_method_has_a_summary_and_schema() -> None:
    for spec in m.METHODS.values():
        assert spec.summary
        msgspec.json.schema(spec.params)


def test_error_and_event_encoding() -> None:
    err = frames.decode_server_frame(frames.encode_error(3, DariError(ErrorCode.FORBIDDEN, "no")))
    assert isinstance(err, frames.ResponseFrame) and err.error and err.error.code == "forbidden"
    ev = frames.decode_server_frame(frames.encode_event("typing", {"chat_id": 1}, None))
    assert isinstance(ev, frames.EventFrame) and ev.event == "typing"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=12).map(msgspec.json.encode)))
def test_decoder_never_raises_anything_but_dari_errors(data: bytes) -> None:
    try:
        req = frames.decode_request(data, 4096)
    except DariError as err:
        assert err.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)
        return
    try:
        m.parse_params(m.lookup(req.method), req.params)
    except DariError as err:
        assert err.code in (ErrorCode.UNKNOWN_METHOD, ErrorCode.INVALID_PARAMS)
