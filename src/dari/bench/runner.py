"""Runs the chosen scenarios, each against a fresh local server (or the one at --server)."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from dari.bench.proc import LocalServer, ProcStat, raise_nofile
from dari.bench.track import Meter, new_result

T = TypeVar("T")


@dataclass
class Config:
    scenarios: list[str]
    quick: bool = False
    duration: float | None = None
    users: int | None = None
    connections: int | None = None
    window: int = 1
    rate: float = 0.0
    server: str | None = None
    server_pid: int | None = None
    bind: str | None = None      # the load generator's source address (e.g. 127.0.0.2: more ephemeral ports)
    verbose: bool = True
    e2ee: bool = False           # dm-throughput: end-to-end encrypted chats (bench/e2ee.py)


@dataclass
class Context:
    cfg: Config
    http: aiohttp.ClientSession
    base: str
    server: ProcStat | None
    prefix: str
    notes: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/ws"

    def pick(self, full: T, quick: T) -> T:
        return quick if self.cfg.quick else full

    def meter(self) -> Meter:
        return Meter(self.server)

    def log(self, text: str) -> None:
        if self.cfg.verbose:
            print(f"  {text}", file=sys.stderr, flush=True)


Scenario = Callable[[Context], Awaitable[dict[str, Any]]]


async def _run_one(cfg: Config, name: str, fn: Scenario, base: str, stat: ProcStat | None) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, local_addr=(cfg.bind, 0) if cfg.bind else None)
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        ctx = Context(cfg, http, base.rstrip("/"), stat, f"b{secrets.token_hex(3)}_")
        result = new_result()
        t0 = time.perf_counter()
        result.update(await fn(ctx))
        result["scenario_s"] = round(time.perf_counter() - t0, 1)
        if ctx.notes:
            result["notes"] = ctx.notes
        return result


async def run_bench(cfg: Config, scenarios: dict[str, Scenario],
                    server_env: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    raise_nofile()
    out: dict[str, Any] = {}
    for name in cfg.scenarios:
        if cfg.verbose:
            print(f"[{name}]", file=sys.stderr, flush=True)
        server: LocalServer | None = None
        try:
            if cfg.server:
                base, stat = cfg.server, (ProcStat(cfg.server_pid) if cfg.server_pid else None)
            else:
                server = LocalServer((server_env or {}).get(name))
                await asyncio.to_thread(server.start)
                base, stat = server.url, server.stat
            out[name] = await _run_one(cfg, name, scenarios[name], base, stat)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            if server is not None:
                print(server.log_tail(), file=sys.stderr)
            out[name] = {**new_result(), "error": f"{type(exc).__name__}: {exc}"}
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)
    return out
