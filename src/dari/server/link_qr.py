"""QR codes drawn with segno: GET /link/qr/CODE.svg (the code a new device shows for linking) and
GET /relay/qr.svg?d=DESCRIPTOR (a relay invite link, for Settings in the web client)."""

from __future__ import annotations

import asyncio
import io
import re

import segno
from aiohttp import web

from dari.relay.descriptor import LINK_PREFIX, DescriptorError, verify_descriptor
from dari.relay.registry import RelayRegistry

_CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$")


def _svg(text: str, scale: int) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=scale, border=2, dark="#1d2430", xmldecl=False)
    return out.getvalue()


async def link_qr(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if not _CODE.match(code):
        raise web.HTTPNotFound(text="not a link code")
    return web.Response(body=_svg(f"dari://link?code={code}", 6), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


async def relay_qr(request: web.Request) -> web.Response:
    """Only descriptors this server signed and that are still current: the page already holds the
    link (from relay.list), so this reveals nothing, and it is no QR service for arbitrary text."""
    blob = request.query.get("d", "")
    registry: RelayRegistry = request.app["relay_registry"]
    try:
        key, revoked = await asyncio.to_thread(lambda: (registry.key.public_key(), registry.revoked()))
        verify_descriptor(blob, [key], revoked=revoked)
    except DescriptorError as exc:
        raise web.HTTPBadRequest(text=f"not a current relay descriptor of this server: {exc}") from None
    return web.Response(body=_svg(LINK_PREFIX + blob, 4), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600"})


def setup(app: web.Application, data_dir: str) -> None:
    app["relay_registry"] = RelayRegistry(data_dir)
    app.router.add_get("/link/qr/{code}.svg", link_qr)
    app.router.add_get("/relay/qr.svg", relay_qr)
