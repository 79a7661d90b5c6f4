"""Helpers for the relay tests: a `dari relay` subprocess, a byte-recording forwarder, a TLS server
with a stream port, and the admin CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dari.server.tls import pin_of_pem_file
from tests.conftest import ServerProcess, free_port


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    state: Path
    info: dict[str, Any] = field(default_factory=dict)

    def port(self, listener: str = "stream") -> int:
        return int(self.info["listen"][listener].rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def make(*args: str, timeout: float = 20.0) -> RelayProcess:
        n = len(started)
        log_path, state = tmp_path / f"relay-{n}.log", tmp_path / f"relay-state-{n}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dari.cli.main", "relay", *args, "--state", str(state)],
                                    stdout=log, stderr=subprocess.STDOUT)
        relay = RelayProcess(proc, log_path, state)
        started.append(relay)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in relay.log().splitlines():
                if line.startswith('{"relay": "ready"'):
                    relay.info = json.loads(line)
                    return relay
            if proc.poll() is not None:
                raise RuntimeError(f"relay exited early:\n{relay.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"relay did not start:\n{relay.log()}")

    yield make
    for relay in started:
        relay.stop()


def tls_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    srv = server_factory(args=["--tls-self-signed", "--stream-port", str(free_port())])
    srv.stream_port = int(srv.args[srv.args.index("--stream-port") + 1])  # type: ignore[attr-defined]
    srv.pin = pin_of_pem_file(str(srv.data_dir / "tls" / "cert.pem"))  # type: ignore[attr-defined]
    return srv


def dari_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dari.cli.main", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})
    if ok and proc.returncode != 0:
        raise AssertionError(f"dari {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


class Recorder:
    """A forwarder that keeps every byte it carries, to check what an on-path observer sees."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = bytearray()
        self.down = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Recorder:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, buf: bytearray) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    buf += data
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w, self.up), pipe(up_r, writer, self.down))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
