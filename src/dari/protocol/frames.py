"""Frames: request (id, method, params), response (id, result | error), event (event, payload, cursor).

Encoding is JSON via msgspec. Decoding is strict and bounded: any defect becomes a DariError with a
stable code, never an exception from deep inside a parser.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dari.protocol.errors import DariError, ErrorCode


class RequestFrame(msgspec.Struct, forbid_unknown_fields=True):
    id: int | str
    method: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ResponseFrame(msgspec.Struct, omit_defaults=True):
    id: int | str | None
    result: Any = None
    error: ErrorBody | None = None


class EventFrame(msgspec.Struct, omit_defaults=True):
    event: str
    payload: Any
    cursor: int | None = None


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(RequestFrame)
_any_decoder = msgspec.json.Decoder()

MAX_ID_LEN = 64
MAX_METHOD_LEN = 64


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decode_request(data: bytes | str, max_bytes: int) -> RequestFrame:
    """Decode one request frame or raise DariError(BAD_FRAME / FRAME_TOO_LARGE)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise DariError(ErrorCode.FRAME_TOO_LARGE, f"frame is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        frame = _request_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise DariError(ErrorCode.BAD_FRAME, f"not a valid request frame: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DariError(ErrorCode.BAD_FRAME, f"frame is not valid JSON/UTF-8: {exc}") from None
    if isinstance(frame.id, str) and len(frame.id) > MAX_ID_LEN:
        raise DariError(ErrorCode.BAD_FRAME, f"request id longer than {MAX_ID_LEN} characters")
    if not frame.method or len(frame.method) > MAX_METHOD_LEN:
        raise DariError(ErrorCode.BAD_FRAME, "method must be a non-empty string of at most 64 characters")
    return frame


def request_id_of(data: bytes | str) -> int | str | None:
    """Best effort: recover the id of a frame that failed validation, so the error can be matched."""
    try:
        obj = _any_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
        if isinstance(rid, str) and len(rid) <= MAX_ID_LEN:
            return rid
    return None


def encode_request(rid: int | str, method: str, params: dict[str, Any]) -> bytes:
    return _encoder.encode(RequestFrame(rid, method, params))


def encode_result(rid: int | str | None, result: Any) -> bytes:
    return _encoder.encode(ResponseFrame(id=rid, result=result))


def encode_error(rid: int | str | None, err: DariError) -> bytes:
    return _encoder.encode(ResponseFrame(id=rid, error=ErrorBody(err.code.value, err.message, err.details)))


def encode_event(event: str, payload: Any, cursor: int | None = None) -> bytes:
    return _encoder.encode(EventFrame(event, payload, cursor))


def decode_server_frame(data: bytes | str) -> ResponseFrame | EventFrame:
    """Client side: a frame from the server is either a response or an event."""
    obj = _any_decoder.decode(data)
    if not isinstance(obj, dict):
        raise DariError(ErrorCode.BAD_FRAME, "server frame is not an object")
    if "event" in obj:
        return msgspec.convert(obj, EventFrame)
    return msgspec.convert(obj, ResponseFrame)
