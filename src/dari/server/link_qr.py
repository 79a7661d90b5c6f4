"""GET /link/qr/CODE.svg: the QR code a new device shows for linking (drawn with segno)."""

from __future__ import annotations

import io
import re

import segno
from aiohttp import web

_CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}$")


async def link_qr(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if not _CODE.match(code):
        raise web.HTTPNotFound(text="not a link code")
    out = io.BytesIO()
    segno.make(f"dari://link?code={code}", error="m").save(out, kind="svg", scale=6, border=2, dark="#1d2430",
                                                          xmldecl=False)
    return web.Response(body=out.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/link/qr/{code}.svg", link_qr)
