"""Read-only public boards over plain GET, for visitors without an account and for links:

    GET /api/v1/public/boards
    GET /api/v1/public/boards/{board_id}/posts?page=1&per_page=20&q=...&in=title_body
    GET /api/v1/public/posts/{post_id}

Always anonymous (a token, if sent, is ignored), so answers carry only what the board shows anyone:
titles, bodies, display names and handles or masked addresses, no user ids, no poll voters. A
board that is not public, or a hidden post, is a 404 whatever the reason (G9: no existence oracle).
Rate-limited per address like every other route; pages are bounded by the method's own limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dari.protocol import frames
from dari.protocol.errors import DariError, ErrorCode
from dari.server.rest import error_response
from dari.services.peer import current_peer

if TYPE_CHECKING:
    from dari.server.app import ServerState


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DariError(ErrorCode.INVALID_PARAMS, f"{name} must be an integer") from None


async def _answer(request: web.Request, method: str, params: dict[str, Any]) -> web.Response:
    state: ServerState = request.app["state"]
    try:
        if not state.limiter.allow(request.remote):
            raise DariError(ErrorCode.RATE_LIMITED, "too many requests; slow down", {"retry_after_s": 1})
        current_peer.set(request.remote or "")
        try:
            result = await state.services.call(None, method, params)
        except DariError as err:
            if err.code == ErrorCode.FORBIDDEN:   # a chat's board: members only, and not to be probed
                raise DariError(ErrorCode.NOT_FOUND, "no such public board or post") from None
            raise
        return web.Response(body=frames.encode({"result": result}), content_type="application/json",
                            headers={"Cache-Control": "no-cache"})
    except DariError as err:
        state.metrics.errors.labels(err.code.value).inc()
        return error_response(err)
    finally:
        state.metrics.requests.labels("rest").inc()


async def boards(request: web.Request) -> web.Response:
    return await _answer(request, "board.public", {})


async def posts(request: web.Request) -> web.Response:
    try:
        params = {"board_id": int(request.match_info["board_id"]), "page": _int(request, "page", 1),
                  "per_page": _int(request, "per_page", 20), "query": request.query.get("q", ""),
                  "search_in": request.query.get("in", "title_body")}
    except DariError as err:
        return error_response(err)
    return await _answer(request, "board.posts", params)


async def post(request: web.Request) -> web.Response:
    return await _answer(request, "board.post", {"post_id": int(request.match_info["post_id"])})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/public/boards", boards)
    app.router.add_get(r"/api/v1/public/boards/{board_id:[0-9]{1,18}}/posts", posts)
    app.router.add_get(r"/api/v1/public/posts/{post_id:[0-9]{1,18}}", post)
