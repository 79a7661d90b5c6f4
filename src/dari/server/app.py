"""The aiohttp application: routes, shared state, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import signal
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from dari import __version__
from dari.bus import open_bus
from dari.config import Settings
from dari.server import link_qr, media_http, public_http, pwa
from dari.server.control import control_forever
from dari.server.hub import ConnectionHub
from dari.server.longpoll import LongPoll
from dari.server.metrics import Metrics
from dari.server.openapi import build_openapi
from dari.server.ratelimit import RateLimiter
from dari.server.rest import rest_handler
from dari.server.session import Session
from dari.server.stream import stream_handler
from dari.server.tls import pin_of_pem_file, self_signed, server_context
from dari.server.websocket import websocket_handler
from dari.services.core import now_ms
from dari.services.registry import Services
from dari.storage import StoredEvent, open_database

log = logging.getLogger("dari.server")
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
# Browsers compile WebAssembly only when served as application/wasm; some systems' mime.types lack it.
mimetypes.add_type("application/wasm", ".wasm")
# 'wasm-unsafe-eval': the E2EE module compiles olm.wasm (vendor/olm); it allows WebAssembly only, not eval().
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:;"
       " media-src 'self' blob:;"
       " connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@dataclass
class ServerState:
    settings: Settings
    services: Services
    hub: ConnectionHub
    metrics: Metrics
    limiter: RateLimiter
    sessions: set[Session] = field(default_factory=set)
    background: set[asyncio.Future[Any]] = field(default_factory=set)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run in the background; the reference is held until it finishes (the loop keeps only weak ones),
        then dropped, so presence changes and webhooks do not accumulate finished tasks for ever."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def build_state(settings: Settings) -> ServerState:
    db = open_database(settings.database_url(), data_dir=settings.data_dir)
    bus = open_bus(settings.bus)
    services = Services(settings, db, bus)
    hub = ConnectionHub()
    bus.hub = hub
    state = ServerState(settings, services, hub, Metrics(db), RateLimiter(settings.rate_per_s, settings.rate_burst))

    def online(uid: int) -> None:
        state.spawn(services.presence.went_online(uid))

    def offline(uid: int) -> None:
        state.spawn(services.presence.went_offline(uid))

    hub.on_online, hub.on_offline = online, offline

    def device_presence(uid: int, did: int, is_online: bool) -> None:
        if not is_online:
            services.accounts.mark_seen(did)    # "last seen" is when it left, not when it came
            services.calls.device_offline(uid, did)
        # The account's device lists show "online" live; deferred so a session being opened gets
        # its session.open answer first.
        asyncio.get_running_loop().call_soon(bus.ephemeral, [uid], "device.presence",
                                             {"device_id": did, "online": is_online, "at": now_ms()})

    hub.on_device = device_presence

    def on_commit(events: list[StoredEvent]) -> None:
        stored = sum(1 for ev in events if ev.type == "message.new")
        if stored:
            state.metrics.messages.inc(stored)
        before = hub.delivered
        bus.publish(events)
        state.metrics.events_out.inc(hub.delivered - before)

    db.on_commit = on_commit

    def recovered() -> None:
        # The shared bus was away: deliveries from other processes may be missing. Replay stored
        # events to every live session from its cursor; duplicates are filtered by cursor.
        for session in list(state.sessions):
            state.spawn(session.catch_up())

    bus.on_recovered = recovered
    return state


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def metrics(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    state.metrics.connections.set(state.hub.connections())
    state.metrics.reach_ratios(state.services.reach.ratios)
    state.metrics.open_incidents(await state.services.core.db.read(
        lambda tx: [(str(r[0]), str(r[1])) for r in tx.all("SELECT region, class FROM incidents"
                                                              " WHERE closed_at IS NULL")]))
    return web.Response(body=state.metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=msgspec.json.encode(request.app["openapi"]), content_type="application/json")


async def admin_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_ROOT / "admin" / "index.html", headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_ROOT / "index.html"
    if page.exists():
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
    return web.Response(text=f"dari {__version__}: connect a client to /ws or use /api/v1/METHOD\n")


async def post_webhook(url: str, kind: str, incident: dict[str, object]) -> None:
    """Tell the operator's alerting about an incident; a failing webhook is logged, never fatal."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(url, json={"event": f"incident.{kind}", "incident": incident}) as resp:
                if resp.status >= 300:
                    log.warning("incident webhook answered HTTP %s", resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("incident webhook failed: %s", exc)


@web.middleware
async def security_headers(request: web.Request, handler):  # type: ignore[no-untyped-def]
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/static/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "public, max-age=300, must-revalidate"
    return response


def create_app(state: ServerState) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=state.settings.max_frame_bytes + 1024)
    app["state"] = state
    app["openapi"] = build_openapi()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/ws", websocket_handler)
    longpoll = LongPoll(state)
    longpoll.routes(app)
    app.router.add_post("/api/v1/{method}", rest_handler)
    public_http.setup(app)
    app.router.add_get("/", index)
    app.router.add_get("/admin", admin_page)
    link_qr.setup(app, state.settings.data_dir)
    if WEB_ROOT.exists():
        app.router.add_static("/static/", WEB_ROOT, follow_symlinks=False)
        pwa.setup(app, WEB_ROOT)   # /sw.js (the root scope) and /manifest.webmanifest

    async def on_startup(app: web.Application) -> None:
        await state.services.start()
        bus = state.services.core.bus
        bus.namespace = state.services.core.cluster_id
        if bus.shared:
            bus.load_head = state.services.sync.head
            bus.load_range = state.services.sync.events_between
        await bus.start()
        reach = state.services.reach
        reach.listeners.append(lambda kind, incident: state.metrics.incident_changed(kind, incident))
        if state.settings.incident_webhook:
            reach.listeners.append(lambda kind, incident: state.spawn(
                post_webhook(state.settings.incident_webhook, kind, incident)))
        state.spawn(reach.evaluate_forever())
        if state.settings.control_probe_s > 0:
            tls = bool(state.settings.tls_cert or state.settings.tls_self_signed)
            state.spawn(control_forever(state, tls))
        state.spawn(state.services.sync.prune_forever(state.settings.prune_interval_s))
        state.spawn(longpoll.reap_forever())

    async def on_shutdown(app: web.Application) -> None:
        longpoll.close_all()
        for session in list(state.sessions):
            session.close(1001, "server shutting down")

    async def on_cleanup(app: web.Application) -> None:
        for task in list(state.background):
            task.cancel()
        # Closing the database finishes every queued write (in-flight commits) before returning.
        await state.services.close()
        await state.services.core.bus.close()

    app.on_startup.append(on_startup)
    media_http.setup(app, state)   # media upload/download routes; starts the content services after on_startup
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def run_server(settings: Settings, ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> None:
    state = build_state(settings)
    app = create_app(state)
    ssl_ctx = None
    cert, key = settings.tls_cert, settings.tls_key
    if settings.tls_self_signed and not cert:
        cert, key = self_signed(os.path.join(settings.data_dir, "tls"))
    if cert:
        ssl_ctx = server_context(cert, key)
        log.info("TLS on; clients may pin the server key %s", pin_of_pem_file(cert))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5)
    await runner.setup()
    shared_port = settings.workers > 1   # several processes accept on one port (SO_REUSEPORT)
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True, reuse_port=shared_port,
                       backlog=4096, ssl_context=ssl_ctx)
    await site.start()
    stream_server = None
    if settings.stream_port:
        stream_server = await asyncio.start_server(stream_handler(state), settings.host, settings.stream_port,
                                                   ssl=ssl_ctx, reuse_address=True, reuse_port=shared_port,
                                                   backlog=4096)
        log.info("frame stream (%s) on %s:%s", "TLS" if ssl_ctx else "plain TCP", settings.host,
                 settings.stream_port)
    if settings.demo and os.environ.get("DARI_WORKER_INDEX", "0") == "0":
        from dari.server.demo import seed_demo

        await seed_demo(state.services)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("dari %s listening on %s://%s:%s (database %s)", __version__, "https" if ssl_ctx else "http",
             settings.host, settings.port, state.services.core.db.url)
    if ready:
        ready.set()
    await stop.wait()
    log.info("shutting down: closing connections and finishing in-flight commits")
    if stream_server is not None:
        stream_server.close()
    await runner.cleanup()
    log.info("stopped")
