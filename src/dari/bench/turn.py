"""Run Debian's coturn (`turnserver`) for tests and benchmarks, configured as docs/operations.md
describes for production: the REST-API shared secret (dari signs short-lived credentials), TURN over
TCP and over TLS on their own ports, and no UDP listener, so clients can only reach it the way a
network that blocks UDP lets them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dari.server.tls import self_signed


def turnserver_path() -> str | None:
    return shutil.which("turnserver")


@dataclass
class Turn:
    proc: subprocess.Popen[bytes]
    host: str
    tcp_port: int
    tls_port: int
    secret: str
    log_path: Path

    @property
    def tcp_url(self) -> str:
        return f"turn:{self.host}:{self.tcp_port}?transport=tcp"

    @property
    def tls_url(self) -> str:
        return f"turns:{self.host}:{self.tls_port}?transport=tcp"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def turn_argv(workdir: Path, secret: str, *, host: str, tcp_port: int, tls_port: int,
              relay_ports: tuple[int, int] = (49160, 49400), udp: bool = False, verbose: bool = False) -> list[str]:
    """turnserver's command line: TURN over TCP on `tcp_port` (and UDP there when `udp`), over TLS on
    `tls_port` with a self-signed certificate for `host`, dari's REST-API secret."""
    exe = turnserver_path()
    if exe is None:
        raise FileNotFoundError("turnserver (Debian's coturn) is not installed: apt-get install coturn")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(str(workdir / "tls"), (host, "localhost"))
    args = [exe, "-n", "--listening-ip", host, "--relay-ip", host, "--listening-port", str(tcp_port),
            "--tls-listening-port", str(tls_port), "--use-auth-secret", "--static-auth-secret", secret,
            "--realm", "dari", "--cert", cert, "--pkey", key, "--no-dtls", "--no-cli",
            "--no-multicast-peers", "--min-port", str(relay_ports[0]), "--max-port", str(relay_ports[1]),
            "--pidfile", str(workdir / "turnserver.pid"), "--log-file", "stdout", "--simple-log",
            "--userdb", str(workdir / "turndb"), "--no-software-attribute", "--fingerprint"]
    if not udp:
        args.append("--no-udp")
    if verbose:
        args.append("--verbose")   # logs each request: tests check that allocations were made
    if host.startswith("127.") or host == "::1":
        # Both peers and the relay live on loopback here; production servers keep the default deny.
        args.append("--allow-loopback-peers")
    return args


def start_turn(workdir: Path, secret: str, *, host: str = "127.0.0.1", tcp_port: int = 0, tls_port: int = 0,
               relay_ports: tuple[int, int] = (49160, 49400), verbose: bool = False, timeout: float = 10.0) -> Turn:
    """Start turnserver on `host` (no UDP listener); returns once its TCP and TLS listeners accept."""
    tcp_port, tls_port = tcp_port or _free_port(), tls_port or _free_port()
    args = turn_argv(workdir, secret, host=host, tcp_port=tcp_port, tls_port=tls_port, relay_ports=relay_ports,
                     verbose=verbose)
    log_path = workdir / "turnserver.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    turn = Turn(proc, host, tcp_port, tls_port, secret, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"turnserver exited early:\n{turn.log()[-3000:]}")
        try:
            with socket.create_connection((host, tcp_port), timeout=0.2), \
                    socket.create_connection((host, tls_port), timeout=0.2):
                return turn
        except OSError:
            time.sleep(0.05)
    turn.stop()
    raise RuntimeError(f"turnserver did not start:\n{turn.log()[-3000:]}")
