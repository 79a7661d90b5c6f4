"""The server's own control: it probes its routes from its side, so that its health is known
independently of what clients report. A failing control turns "blocked" into "server-down"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from dari.client.links import Route, RouteFailure, open_link
from dari.protocol import frames

if TYPE_CHECKING:
    from dari.server.app import ServerState

log = logging.getLogger("dari.control")


def control_routes(state: ServerState, tls: bool) -> list[Route]:
    s = state.settings
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    base = f"{'https' if tls else 'http'}://{host}:{s.port}"
    routes = [Route("ws", base, name="websocket", insecure_tls=tls),
              Route("longpoll", base, name="long-poll", insecure_tls=tls)]
    if s.stream_port:
        routes.append(Route("stream", f"{'tls' if tls else 'tcp'}://{host}:{s.stream_port}",
                            name="tls-stream" if tls else "stream", insecure_tls=tls))
    return routes


async def probe(route: Route, http: aiohttp.ClientSession, timeout: float = 5.0) -> tuple[bool, str]:
    try:
        link = await asyncio.wait_for(open_link(route, http), timeout)
    except RouteFailure as exc:
        return False, f"{exc.stage}: {exc.reason}"
    except (TimeoutError, OSError) as exc:
        return False, f"connect: {exc or type(exc).__name__}"
    try:
        await link.send(frames.encode_request(1, "server.info", {}))
        data = await asyncio.wait_for(link.recv(), timeout)
        if data is None:
            return False, "closed before answering"
        reply = msgspec.json.decode(data)
        return (True, "") if isinstance(reply, dict) and "result" in reply else (False, "unexpected answer")
    except Exception as exc:  # any failure of our own endpoint is the finding, not a crash
        return False, f"application: {exc or type(exc).__name__}"
    finally:
        with contextlib.suppress(Exception):
            await link.close()


async def control_forever(state: ServerState, tls: bool) -> None:
    routes = control_routes(state, tls)
    async with aiohttp.ClientSession() as http:
        while True:
            await asyncio.sleep(state.settings.control_probe_s)
            for route in routes:
                ok, detail = await probe(route, http)
                if not ok:
                    log.warning("control probe of %s failed: %s", route.label, detail)
                with contextlib.suppress(Exception):
                    await state.services.reach.record_control(route.label, ok, detail)
