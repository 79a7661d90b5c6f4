"""The relay's admin port: `GET /healthz` (is the server reachable from here?), `GET /metrics`
(Prometheus) and `GET /obfs4` (the bridge cert to put in the descriptor). Kept off the public
listeners so that a censor probing the relay's address learns nothing from it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from dari import __version__
from dari.relay.forward import Relay


class Admin:
    def __init__(self, relay: Relay, obfs4: dict[str, Any] | None = None) -> None:
        self.relay = relay
        self.obfs4 = obfs4
        self._probe: tuple[float, bool, str] = (0.0, False, "")
        self.runner: web.AppRunner | None = None

    async def _upstream_ok(self) -> tuple[bool, str]:
        at, ok, why = self._probe
        if time.monotonic() - at < 5:
            return ok, why
        host, port = self.relay.config.listeners[0].upstream
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
            w.close()
            ok, why = True, ""
        except (OSError, TimeoutError) as exc:
            ok, why = False, f"upstream {host}:{port} unreachable: {exc or type(exc).__name__}"
        self._probe = (time.monotonic(), ok, why)
        return ok, why

    async def healthz(self, request: web.Request) -> web.Response:
        ok, why = await self._upstream_ok()
        body = {"status": "ok" if ok else "degraded", "version": __version__, "connections": self.relay.active,
                "max_connections": self.relay.config.max_connections}
        if why:
            body["error"] = why
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.relay.metrics.registry), content_type="text/plain",
                            charset="utf-8")

    async def obfs4_info(self, request: web.Request) -> web.Response:
        if not self.obfs4:
            return web.json_response({"error": "this relay runs without obfs4"}, status=404)
        return web.json_response(self.obfs4)

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/obfs4", self.obfs4_info)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port, reuse_address=True).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
