"""Uploading and downloading files with the SDK.

    info = await upload(client, "photo.jpg")            # chunks over the session: works on any route
    info = await upload(client, data, name="a.bin", http=True)   # plain HTTP POSTs, faster, same upload
    data = await download(client, info["blob_id"])
    msg = await send_file(client, chat_id, "photo.jpg")   # E2EE chat: encrypted on this device first
    data = await download_attachment(client, msg["attachment"])   # decrypted, sha256 checked

An upload survives a dropped connection: after a failed chunk the client asks media.upload_status
for the offset the server has and carries on from there (the Client reconnects by itself).
`http=True` falls back to chunks over the session when plain HTTP to the server does not work
(a relay route, a filtered /media path).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from dari.protocol.errors import DariError, ErrorCode

if TYPE_CHECKING:
    from dari.client.client import Client

HTTP_PIECE = 8 << 20
RETRYABLE = {ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL}
Progress = Callable[[int, int], None]


def _source(src: bytes | str, name: str | None) -> tuple[bytes, str, str]:
    if isinstance(src, bytes):
        # The name's extension says what the bytes are (E2EE: the server cannot look at them).
        return src, name or "file", (mimetypes.guess_type(name)[0] or "") if name else ""
    with open(src, "rb") as fh:
        data = fh.read()
    fname = name or os.path.basename(src)
    return data, fname, mimetypes.guess_type(fname)[0] or ""


async def _http_piece(c: Client, upload_id: str, offset: int, piece: bytes) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http, http.post(
            f"{c.url}/media/upload", params={"upload_id": upload_id, "offset": str(offset)}, data=piece,
            headers={"Authorization": f"Bearer {c.token}"}) as resp:
        body = await resp.json(content_type=None)
    if body.get("error"):
        err = body["error"]
        raise DariError(ErrorCode(err["code"]), err["message"], err.get("details"))
    return int(body["result"]["offset"])


async def send_chunks(c: Client, upload_id: str, data: bytes, offset: int, chunk_size: int, *,
                      http: bool = False, progress: Progress | None = None, retries: int = 20) -> None:
    """Send data[offset:] and resume after failures from the server's offset."""
    failures = 0
    while offset < len(data):
        try:
            if http:
                try:
                    offset = await _http_piece(c, upload_id, offset, data[offset:offset + HTTP_PIECE])
                except (aiohttp.ClientError, OSError, TimeoutError):
                    http = False   # plain HTTP is blocked or down here: the session route still works
                    continue
            else:
                piece = data[offset:offset + chunk_size]
                res = await c.call("media.upload_chunk", upload_id=upload_id, offset=offset,
                                   data=base64.b64encode(piece).decode())
                offset = int(res["offset"])
            failures = 0
            if progress:
                progress(offset, len(data))
        except (DariError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, DariError) else ErrorCode.UNAVAILABLE
            if code not in RETRYABLE and code != ErrorCode.CONFLICT:
                raise
            failures += 1
            if failures > retries:
                raise
            await asyncio.sleep(min(0.1 * 2 ** failures, 3.0))
            offset = await resume_offset(c, upload_id)


async def resume_offset(c: Client, upload_id: str) -> int:
    while True:
        try:
            return int((await c.call("media.upload_status", upload_id=upload_id))["offset"])
        except DariError as err:
            if err.code not in RETRYABLE:
                raise
            await asyncio.sleep(0.3)


async def upload(c: Client, src: bytes | str, *, name: str | None = None, http: bool = False,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Upload a file (path or bytes); returns the blob: blob_id, type, size, width, height, thumbnail_id..."""
    data, fname, guessed = _source(src, name)
    begin = await c.call("media.upload_begin", size=len(data), name=fname[:255], declared_type=guessed)
    await send_chunks(c, begin["upload_id"], data, 0, int(begin["chunk_size"]), http=http, progress=progress)
    return dict(await c.call("media.upload_finish", upload_id=begin["upload_id"]))


async def send_file(c: Client, chat_id: int, src: bytes | str, *, caption: str = "", kind: str | None = None,
                    name: str | None = None, http: bool = False, client_id: str | None = None) -> dict[str, Any]:
    import uuid

    if await _is_e2ee_chat(c, chat_id):
        return await send_encrypted(c, chat_id, src, caption=caption, kind=kind, name=name, http=http,
                                    client_id=client_id)
    blob = await upload(c, src, name=name, http=http)
    return dict(await c.call("message.send_media", chat_id=chat_id, client_id=client_id or uuid.uuid4().hex,
                             blob_id=blob["blob_id"], caption=caption, kind=kind, name=blob.get("name")))


async def download(c: Client, blob_id: str, *, thumb: bool = False, http: bool = True) -> bytes:
    """A blob's bytes: one HTTP GET where that works, else media.read pieces over the session."""
    if http:
        path = f"/media/{blob_id}" + ("/thumb" if thumb else "")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, session.get(
                    c.url + path, headers={"Authorization": f"Bearer {c.token}"}) as resp:
                if resp.status == 200:
                    return await resp.read()
                body = await resp.json(content_type=None)
                err = body["error"]
                raise DariError(ErrorCode(err["code"]), err["message"], err.get("details"))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            pass
    out = bytearray()
    while True:
        res = await c.call("media.read", blob_id=blob_id, offset=len(out), thumb=thumb)
        out += base64.b64decode(res["data"])
        if res["eof"] or not res["data"]:
            return bytes(out)


# -- end-to-end encrypted chats ---------------------------------------------------------------------
async def _is_e2ee_chat(c: Client, chat_id: int) -> bool:
    return c.e2ee is not None and await c.e2ee.wait_ready() and await c.e2ee.chat_is_e2ee(chat_id)


async def send_encrypted(c: Client, chat_id: int, src: bytes | str, *, caption: str = "", kind: str | None = None,
                         name: str | None = None, http: bool = False, client_id: str | None = None,
                         reply_to: int | None = None) -> dict[str, Any]:
    """Into an E2EE chat: photos lose EXIF/GPS here, then the file (and its thumbnail) is encrypted
    with AES-256-GCM and uploaded as random bytes; the key travels inside the Megolm envelope."""
    import uuid

    from dari.client.e2ee import files

    assert c.e2ee is not None
    data, fname, _ = _source(src, name)
    # What the server would have found out (type from the bytes, size, length, thumbnail) and done
    # (metadata stripped from photos) happens here, before the bytes become random to it.
    info, data = await asyncio.to_thread(_inspect, data)
    kind = kind or {"image": "image", "video": "video", "audio": "voice"}.get(info.kind, "file")
    att: dict[str, Any] = {"kind": kind, "mime": info.mime, "name": fname[:255]}
    att.update({k: v for k, v in (("width", info.width), ("height", info.height), ("duration_ms", info.duration_ms))
                if v is not None})
    blobs: list[str] = []
    if info.thumbnail:
        thumb = files.seal(info.thumbnail)
        tblob = await upload(c, thumb.blob, name="encrypted", http=http)
        blobs.append(tblob["blob_id"])
        tw, th = _image_size(info.thumbnail)
        att["thumb"] = {"blob_id": tblob["blob_id"], "key": thumb.key, "iv": thumb.iv, "sha256": thumb.sha256,
                        "width": tw, "height": th}
    sealed = files.seal(data)
    blob = await upload(c, sealed.blob, name="encrypted", http=http)
    att.update(blob_id=blob["blob_id"], key=sealed.key, iv=sealed.iv, sha256=sealed.sha256, size=len(data))
    blobs.insert(0, blob["blob_id"])
    env = await c.e2ee.encrypt(chat_id, {"type": "media", "text": caption, "attachment": att})
    res = await c._plain_call("message.send", {"chat_id": chat_id, "client_id": client_id or uuid.uuid4().hex,
                                               "e2ee": env, "attachments": blobs,
                                               **({"reply_to": reply_to} if reply_to else {})})
    return dict(c.e2ee.decrypt_result("message.send", res))


async def send_sticker(c: Client, chat_id: int, sticker_id: int, *, client_id: str | None = None,
                       reply_to: int | None = None) -> dict[str, Any]:
    """A sticker; into an E2EE chat as an encrypted `sticker` message (the server refuses
    message.send_sticker there), carrying the sticker as the server would describe it."""
    import uuid

    cid = client_id or uuid.uuid4().hex
    if not await _is_e2ee_chat(c, chat_id):
        return dict(await c.call("message.send_sticker", chat_id=chat_id, client_id=cid, sticker_id=sticker_id,
                                 reply_to=reply_to))
    assert c.e2ee is not None
    sticker = None
    for pack in await c.call("sticker.installed"):
        for s in pack.get("stickers") or []:
            if s.get("sticker_id") == sticker_id:
                sticker = {**s, "pack_id": pack["pack_id"]}
    if sticker is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no sticker {sticker_id} in your installed packs")
    env = await c.e2ee.encrypt(chat_id, {"type": "sticker", "attachment": sticker})
    res = await c._plain_call("message.send", {"chat_id": chat_id, "client_id": cid, "e2ee": env,
                                               **({"reply_to": reply_to} if reply_to else {})})
    return dict(c.e2ee.decrypt_result("message.send", res))


def _inspect(data: bytes) -> tuple[Any, bytes]:
    """The server's own media inspection (services/mediaproc.py), run on this device."""
    import tempfile

    from dari.services import mediaproc

    with tempfile.TemporaryDirectory(prefix="dari-media-") as tmp:
        path = os.path.join(tmp, "file")
        with open(path, "wb") as fh:
            fh.write(data)
        info = mediaproc.process(path)
        if info.replaced:
            with open(path, "rb") as fh:
                data = fh.read()
    return info, data


def _image_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return int(img.width), int(img.height)


async def download_attachment(c: Client, att: dict[str, Any], *, thumb: bool = False, http: bool = True) -> bytes:
    """An attachment's bytes: an encrypted one is decrypted and checked against its sha256."""
    from dari.client.e2ee import files

    if "key" not in att:
        return await download(c, str(att["blob_id"]), thumb=thumb, http=http)
    part = att["thumb"] if thumb else att
    blob = await download(c, str(part["blob_id"]), http=http)
    try:
        return files.open_sealed(blob, str(part["key"]), str(part["iv"]), part.get("sha256"))
    except ValueError as exc:
        raise DariError(ErrorCode.INVALID_PARAMS, f"attachment: {exc}") from None
