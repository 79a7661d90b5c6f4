"""The server under test: a `dari serve` subprocess on a free loopback port, and /proc readings."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Test-grade settings: argon2 cheap enough that signing up a thousand users takes seconds, and rate
# limits out of the way of a load generator that sends from few devices very fast.
BENCH_ENV = {
    "DARI_ARGON2_TIME_COST": "1",
    "DARI_ARGON2_MEMORY_KIB": "8192",
    "DARI_RATE_PER_S": "1000000",
    "DARI_RATE_BURST": "1000000",
    "DARI_LOG_LEVEL": "warning",
}
_TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile(want: int = 1 << 18) -> int:
    """Raise this process's open-file limit (children inherit it): to `want` where the system lets
    us (root may raise the hard limit up to fs.nr_open), else the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= max(hard, want)):
        return soft if soft != resource.RLIM_INFINITY else want
    targets = [want] if hard == resource.RLIM_INFINITY or hard >= want else [want, hard]
    for target in targets:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard) if hard != resource.RLIM_INFINITY
                                                        else hard))
            return target
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcStat:
    """CPU time and resident memory of a process, read from /proc/PID."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            stat = fh.read()
        # The command name may contain spaces: fields are counted after its closing parenthesis.
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime, all threads

    def _status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
        return 0

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS:")

    def peak_rss_kb(self) -> int:
        return self._status_kb("VmHWM:")


class LocalServer:
    """A fresh `dari serve` on a temporary data dir; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="dari-bench-"))
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stat(self) -> ProcStat:
        assert self.proc is not None
        return ProcStat(self.proc.pid)

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, **BENCH_ENV, **self.extra_env}
        log = open(self.data_dir / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dari.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=raise_nofile)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dari serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dari serve did not start within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.data_dir / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
