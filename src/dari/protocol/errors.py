"""Stable error codes. Clients branch on `code`; `message` is for people."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"              # not JSON, not an object, invalid UTF-8, missing fields
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"    # wrong types, out-of-range values, bad handles
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"              # authenticated but not allowed (not a member, not owner)
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"                # handle taken, already a member
    BLOCKED = "blocked"                  # the other user blocked you
    RATE_LIMITED = "rate_limited"
    LIMIT_EXCEEDED = "limit_exceeded"    # message too long, group full
    EXPIRED = "expired"                  # unsend window passed
    RESYNC_NEEDED = "resync_needed"      # cursor older than the retained event window
    UNAVAILABLE = "unavailable"          # storage down: retry later, the outbox keeps the message
    INTERNAL = "internal"


RETRYABLE = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL})


class DariError(Exception):
    """An error meant for the caller: it crosses the wire as {code, message, details}."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def __repr__(self) -> str:
        return f"DariError({self.code.value!r}, {self.message!r})"
