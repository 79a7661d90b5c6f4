"""Plain HTTP for media, for speed where the route allows it: the same uploads and the same access
rules as the media.* methods, without base64 or frame limits.

    POST /media/upload?upload_id=U&offset=N   raw bytes      -> {"offset": N'}
    GET  /media/{blob_id}                      Range-capable
    GET  /media/{blob_id}/thumb

`Authorization: Bearer TOKEN` on each request. `setup` also starts the content services' background
work (default sticker pack, expiry pruner); app.py calls it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from dari.protocol.errors import DariError, ErrorCode
from dari.server.rest import error_response
from dari.services.core import Caller
from dari.services.peer import current_peer

if TYPE_CHECKING:
    from dari.server.app import ServerState

# Types a browser may render inline; anything else downloads, so an uploaded HTML file can never
# run as a page of this origin.
_INLINE = {"image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4", "video/webm", "video/quicktime",
           "audio/ogg", "audio/mpeg", "audio/mp4", "audio/wav", "audio/aac"}


async def _caller(request: web.Request, *, required: bool = True) -> Caller | None:
    state: ServerState = request.app["state"]
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    caller = await state.services.accounts.authenticate(token) if token else None
    if caller is None and required:
        raise DariError(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer TOKEN'")
    if not state.limiter.allow(caller.device_id if caller else request.remote):
        raise DariError(ErrorCode.RATE_LIMITED, "too many requests; slow down", {"retry_after_s": 1})
    current_peer.set(request.remote or "")
    return caller


async def upload(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    try:
        caller = await _caller(request)
        assert caller is not None
        upload_id = request.query.get("upload_id", "")
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise DariError(ErrorCode.INVALID_PARAMS, "offset must be an integer") from None

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(256 * 1024):
                yield chunk

        new = await state.services.content.media.write(caller, upload_id, offset, body())
        return web.json_response({"result": {"offset": new}})
    except DariError as err:
        return error_response(err)


async def download(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    try:
        caller = await _caller(request)
        assert caller is not None
        media = state.services.content.media
        blob = await media.blob_for(caller.user_id, request.match_info["blob_id"].lower())
        thumb = request.path.endswith("/thumb")
        target = blob.thumbnail_id if thumb else blob.blob_id
        if target is None:
            raise DariError(ErrorCode.NOT_FOUND, "this file has no thumbnail")
        mime = "image/webp" if thumb else blob.type
        headers = {"Content-Type": mime, "Cache-Control": "private, max-age=86400, immutable",
                   "ETag": f'"{target}"', "Content-Disposition": "inline" if mime in _INLINE else "attachment"}
        path = media.store.local_path(target)
        if path is not None:
            return web.FileResponse(path, headers=headers)
        data = await asyncio.to_thread(media.store.read, target)
        return web.Response(body=data, headers=headers)
    except DariError as err:
        return error_response(err)
    except ValueError:
        return error_response(DariError(ErrorCode.INVALID_PARAMS, "not a blob id"))


def setup(app: web.Application, state: ServerState) -> None:
    app.router.add_post("/media/upload", upload)
    app.router.add_get("/media/{blob_id:[0-9a-fA-F]{64}}", download)
    app.router.add_get("/media/{blob_id:[0-9a-fA-F]{64}}/thumb", download)

    async def started(app: web.Application) -> None:
        content = state.services.content
        await content.start()
        if state.settings.media_prune_interval_s > 0:
            state.spawn(
                content.media.prune_forever(state.settings.media_prune_interval_s))

    app.on_startup.append(started)
