"""REST: POST /api/v1/{method} with a JSON object of params, mapped onto the same services."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from dari.protocol import frames
from dari.protocol.errors import DariError, ErrorCode
from dari.services.peer import current_peer

if TYPE_CHECKING:
    from dari.server.app import ServerState

log = logging.getLogger("dari.rest")

HTTP_STATUS = {
    ErrorCode.BAD_FRAME: 400, ErrorCode.INVALID_PARAMS: 400, ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.UNKNOWN_METHOD: 404, ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403,
    ErrorCode.BLOCKED: 403, ErrorCode.NOT_FOUND: 404, ErrorCode.CONFLICT: 409, ErrorCode.RATE_LIMITED: 429,
    ErrorCode.LIMIT_EXCEEDED: 422, ErrorCode.EXPIRED: 409, ErrorCode.RESYNC_NEEDED: 410,
    ErrorCode.UNAVAILABLE: 503, ErrorCode.INTERNAL: 500,
}

_dec = msgspec.json.Decoder(dict)


def error_response(err: DariError) -> web.Response:
    body = frames.encode(frames.ResponseFrame(id=None, error=frames.ErrorBody(err.code.value, err.message,
                                                                              err.details)))
    headers = {"Retry-After": "1"} if err.code == ErrorCode.RATE_LIMITED else None
    return web.Response(body=body, status=HTTP_STATUS.get(err.code, 400), content_type="application/json",
                        headers=headers)


async def rest_handler(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    method = request.match_info["method"]
    started = time.perf_counter()
    try:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        caller = await state.services.accounts.authenticate(token) if token else None
        if not state.limiter.allow(caller.device_id if caller else request.remote):
            raise DariError(ErrorCode.RATE_LIMITED, "too many requests; slow down", {"retry_after_s": 1})
        if method == "session.open":
            raise DariError(ErrorCode.UNKNOWN_METHOD, "session.open is for realtime connections; send"
                            " 'Authorization: Bearer TOKEN' with REST calls")
        limit = state.settings.max_frame_bytes
        if request.content_length is not None and request.content_length > limit:
            raise DariError(ErrorCode.FRAME_TOO_LARGE, f"body is over the limit of {limit} bytes")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise DariError(ErrorCode.FRAME_TOO_LARGE, f"body is over the limit of {limit} bytes")
        try:
            params = _dec.decode(body) if body.strip() else {}
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise DariError(ErrorCode.BAD_FRAME, f"body must be a JSON object: {exc}") from None
        current_peer.set(request.remote or "")
        result = await state.services.call(caller, method, params)
        return web.Response(body=frames.encode({"result": result}), content_type="application/json")
    except DariError as err:
        state.metrics.errors.labels(err.code.value).inc()
        return error_response(err)
    except Exception:
        log.exception("internal error in REST %s", method)
        state.metrics.errors.labels("internal").inc()
        return error_response(DariError(ErrorCode.INTERNAL, "internal error; it was logged"))
    finally:
        state.metrics.requests.labels("rest").inc()
        state.metrics.latency.observe(time.perf_counter() - started)
