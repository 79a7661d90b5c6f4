"""The route manager: race candidate routes with staggered starts (Happy Eyeballs), remember the
winner per network, back off failing routes with jitter, and find a better route again later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from dari.client.links import Link, Route, RouteFailure, open_link

log = logging.getLogger("dari.routes")

STAGGER_S = 0.3


@dataclass
class Attempt:
    route: str
    ok: bool
    stage: str
    reason: str
    elapsed_ms: float


class AllRoutesFailed(Exception):
    def __init__(self, attempts: list[Attempt]) -> None:
        super().__init__("no route to the server: " + "; ".join(f"{a.route} ({a.stage}: {a.reason})"
                                                               for a in attempts))
        self.attempts = attempts


def default_routes(url: str) -> list[Route]:
    """Direct WebSocket first, then long-poll on the same address."""
    url = url.rstrip("/")
    return [Route("ws", url, name="websocket"), Route("longpoll", url, name="long-poll")]


def network_key(routes: list[Route]) -> str:
    """Which network we are on: the local address used toward the first route's host (no packet is
    sent: connecting a UDP socket only picks the source address)."""
    host = urlsplit(routes[0].url).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "unknown"


class RouteManager:
    def __init__(self, routes: list[Route], memory_path: str | None = None) -> None:
        if not routes:
            raise ValueError("at least one route is needed")
        self.routes = routes
        self.memory_path = memory_path
        self.memory: dict[str, str] = self._load()
        self.backoff: dict[str, tuple[float, float]] = {}   # label -> (retry_at, delay)
        self.last_attempts: list[Attempt] = []
        self.current: Route | None = None

    def _load(self) -> dict[str, str]:
        if self.memory_path and os.path.exists(self.memory_path):
            with contextlib.suppress(OSError, ValueError):
                with open(self.memory_path) as fh:
                    data = json.load(fh)
                    if isinstance(data, dict):
                        return {str(k): str(v) for k, v in data.items()}
        return {}

    def _save(self) -> None:
        if not self.memory_path:
            return
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(os.path.abspath(self.memory_path)), exist_ok=True)
            tmp = self.memory_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(self.memory, fh)
            os.replace(tmp, self.memory_path)

    def ordered(self) -> list[Route]:
        """Configured order, the route that worked last time on this network first, routes in
        back-off last."""
        remembered = self.memory.get(network_key(self.routes))
        now = time.monotonic()
        ranked = sorted(enumerate(self.routes), key=lambda ir: (
            self.backoff.get(ir[1].label, (0.0, 0.0))[0] > now, ir[1].label != remembered, ir[0]))
        return [r for _, r in ranked]

    def is_preferred(self, route: Route) -> bool:
        return route == self.routes[0]

    async def connect(self, http: aiohttp.ClientSession, candidates: list[Route] | None = None) -> Link:
        order = candidates if candidates is not None else self.ordered()
        attempts: list[Attempt] = []
        tasks: dict[asyncio.Task[Link], Route] = {}
        started: dict[Route, float] = {}
        winner: Link | None = None
        idx = 0
        try:
            while winner is None and (idx < len(order) or tasks):
                if idx < len(order):
                    route = order[idx]
                    idx += 1
                    started[route] = time.monotonic()
                    tasks[asyncio.create_task(open_link(route, http))] = route
                done, _ = await asyncio.wait(tasks, timeout=STAGGER_S if idx < len(order) else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    route = tasks.pop(task)
                    elapsed = (time.monotonic() - started[route]) * 1000
                    exc = task.exception()
                    if exc is None and winner is None:
                        winner = task.result()
                        attempts.append(Attempt(route.label, True, "ok", "", elapsed))
                    elif exc is None:
                        await task.result().close()
                    else:
                        stage, reason = (exc.stage, exc.reason) if isinstance(exc, RouteFailure) else (
                            "connect", str(exc) or type(exc).__name__)
                        attempts.append(Attempt(route.label, False, stage, reason, elapsed))
                        self._fail(route)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    link = await task
                    await link.close()
        self.last_attempts = attempts
        if winner is None:
            raise AllRoutesFailed(attempts)
        self.current = winner.route
        self.backoff.pop(winner.route.label, None)
        key = network_key(self.routes)
        if self.memory.get(key) != winner.route.label:
            self.memory[key] = winner.route.label
            self._save()
        log.info("connected via %s", winner.route.label)
        return winner

    def _fail(self, route: Route) -> None:
        _, delay = self.backoff.get(route.label, (0.0, 1.0))
        delay = min(delay * 2, 300.0)
        self.backoff[route.label] = (time.monotonic() + delay * (0.5 + random.random()), delay)

    def better_than(self, route: Route) -> list[Route]:
        """Routes configured ahead of the current one, to re-try in the background."""
        return self.routes[: self.routes.index(route)] if route in self.routes else []
