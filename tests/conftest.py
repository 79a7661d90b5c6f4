"""Shared fixtures: a real `dari serve` subprocess on loopback with its own SQLite data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dari.client import Client

PASSWORD = "correct horse battery"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "DARI_ARGON2_TIME_COST": "1", "DARI_ARGON2_MEMORY_KIB": "8192",
               "DARI_RATE_PER_S": "100000", "DARI_RATE_BURST": "100000", **self.extra_env}
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dari.cli.main", "serve", "--port", str(self.port), "--data-dir",
             str(self.data_dir), *self.args], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(extra_env: dict[str, str] | None = None, args: list[str] | None = None,
             data_dir: Path | None = None, port: int | None = None) -> ServerProcess:
        d = data_dir or tmp_path / f"server-{len(started)}"
        d.mkdir(parents=True, exist_ok=True)
        srv = ServerProcess(d, port or free_port(), extra_env or {}, args or [])
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        if srv.proc and srv.proc.poll() is None:
            srv.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


@pytest.fixture
async def make_user(server: ServerProcess) -> AsyncIterator[Callable[..., object]]:
    """make_user("alice") -> a logged-in, live Client for a new account (handle gets a unique suffix)."""
    clients: list[Client] = []

    async def make(name: str, *, url: str | None = None, outbox_path: str | None = None,
                   device_name: str = "test") -> Client:
        handle = f"{name}_{uuid.uuid4().hex[:6]}"
        c = Client(url or server.url, outbox_path=outbox_path)
        await c.signup(handle, name.title(), PASSWORD, device_name=device_name)
        await c.wait_live()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download is not available here). Missing chromium
    skips, except under CI=true where it fails."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Debian's chromium is not installed: run `apt-get install -y chromium`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Debian's Chromium through Playwright."""
    from playwright.async_api import async_playwright

    exe = chromium_path()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        await b.close()
