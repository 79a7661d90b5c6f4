"""The web client as an installable, offline-capable app: the manifest and the service worker.

The service worker is served from the root (/sw.js) so that its scope covers the page at /; its
text is src/dari/web/sw.js with the list of app-shell files and a version (a hash of those files)
filled in, so that a new deploy changes the worker's bytes and the browser installs the new one.
The shell is what the page needs to start: /, the CSS, every module under js/, every translation,
the icons, the manifest and the vendored olm (E2EE: without it an offline page could not
decrypt what it has cached). Nothing else is listed, so API calls, /ws, /lp and media are never
cached (see sw.js).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from aiohttp import web

SHELL_GLOBS = ("app.css", "icon.svg", "js/*.js", "i18n/*.json", "icons/*.png", "vendor/olm/olm.js",
               "vendor/olm/olm.wasm")
MANIFEST = "manifest.webmanifest"


def shell(root: Path) -> tuple[list[str], str]:
    """The URLs of the app shell and a version that changes when any of their bytes do."""
    files = sorted({p for pattern in SHELL_GLOBS for p in root.glob(pattern) if p.is_file()})
    digest = hashlib.sha256()
    for p in [root / "index.html", root / MANIFEST, *files]:
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        digest.update(p.read_bytes() if p.exists() else b"")
    urls = ["/", f"/{MANIFEST}", *(f"/static/{p.relative_to(root).as_posix()}" for p in files)]
    return urls, digest.hexdigest()[:16]


def setup(app: web.Application, root: Path) -> None:
    cache: dict[str, tuple[float, bytes]] = {}

    def worker_body() -> bytes:
        # Rebuilt when a shell file changes (a development tree); a deployed one is read once.
        stamp = max((p.stat().st_mtime for pattern in (*SHELL_GLOBS, "index.html", MANIFEST, "sw.js")
                     for p in root.glob(pattern)), default=0.0)
        if "sw" not in cache or cache["sw"][0] != stamp:
            urls, version = shell(root)
            text = (root / "sw.js").read_text(encoding="utf-8")
            text = text.replace('"__VERSION__"', json.dumps(version)).replace('["__SHELL__"]', json.dumps(urls))
            cache["sw"] = (stamp, text.encode())
        return cache["sw"][1]

    async def service_worker(request: web.Request) -> web.Response:
        # no-cache: the browser checks for a new worker on every navigation (a new deploy is seen).
        return web.Response(body=worker_body(), content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"})

    async def manifest(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(root / MANIFEST, headers={"Cache-Control": "no-cache",
                                                          "Content-Type": "application/manifest+json"})

    if (root / "sw.js").exists():
        app.router.add_get("/sw.js", service_worker)
        app.router.add_get(f"/{MANIFEST}", manifest)
