"""QR codes drawn with segno: GET /link/qr/CODE.svg (the code a new device shows for linking),
GET /relay/qr.svg?d=DESCRIPTOR (a relay invite link, for Settings in the web client), and
GET /qr/add/CODE.svg and /qr/join/CODE.svg (a friend invite and an open chat's join link), and
GET /qr/verify.svg?d=dari-verify:1:... (two users' public master keys, for comparing security codes)."""

from __future__ import annotations

import asyncio
import io
import re

import segno
from aiohttp import web

from dari.relay.descriptor import LINK_PREFIX, DescriptorError, verify_descriptor
from dari.relay.registry import RelayRegistry

_CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$")
_PAGE_CODE = re.compile(r"^[A-Za-z0-9_-]{6,32}$")
_VERIFY = re.compile(r"^dari-verify:1:[0-9]{1,15}:[A-Za-z0-9+/]{43}:[0-9]{1,15}:[A-Za-z0-9+/]{43}$")


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


def page_link(request: web.Request, kind: str, code: str) -> str:
    """The page's own link, ORIGIN/#/add/CODE or ORIGIN/#/join/CODE, as the browser that asked sees
    this server (its Host header), so the code scans to the address that works for it."""
    return f"{request.scheme}://{request.host}/#/{kind}/{code}"


async def page_qr(request: web.Request) -> web.Response:
    """Draws only a link into this server's page with a code-shaped argument: no QR service for
    arbitrary text, and nothing is looked up (a revoked code draws a link that says so when opened)."""
    kind, code = request.match_info["kind"], request.match_info["code"]
    if kind not in ("add", "join") or not _PAGE_CODE.match(code):
        raise web.HTTPNotFound(text="not an invite or join code")
    return web.Response(body=_svg(page_link(request, kind, code), 5), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600"})


async def verify_qr(request: web.Request) -> web.Response:
    """Only the shape of docs/e2ee.md's verification string (user ids and Ed25519 public keys, which
    are public): no QR service for arbitrary text."""
    text = request.query.get("d", "")
    if not _VERIFY.match(text):
        raise web.HTTPBadRequest(text="not a dari-verify string")
    return web.Response(body=_svg(text, 4), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600"})


def setup(app: web.Application, data_dir: str) -> None:
    app["relay_registry"] = RelayRegistry(data_dir)
    app.router.add_get("/link/qr/{code}.svg", link_qr)
    app.router.add_get("/relay/qr.svg", relay_qr)
    app.router.add_get("/qr/verify.svg", verify_qr)
    app.router.add_get("/qr/{kind}/{code}.svg", page_qr)
