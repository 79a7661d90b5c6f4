"""The wire protocol: frames, method schemas and error codes. Pure: no I/O here."""

from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.frames import (
    ErrorBody,
    EventFrame,
    RequestFrame,
    ResponseFrame,
    decode_request,
    encode_error,
    encode_event,
    encode_result,
)

__all__ = [
    "DariError",
    "ErrorBody",
    "ErrorCode",
    "EventFrame",
    "RequestFrame",
    "ResponseFrame",
    "decode_request",
    "encode_error",
    "encode_event",
    "encode_result",
]
