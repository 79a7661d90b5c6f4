"""`dari serve --workers N`: N server processes accepting on one port (SO_REUSEPORT), sharing
storage and a Redis bus. This supervisor forwards SIGTERM and restarts a worker that dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("dari.workers")


def run_workers(argv: list[str], count: int) -> int:
    """argv: the `serve` arguments to pass on (without --workers)."""
    stopping = False
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}

    def spawn(i: int) -> None:
        env = {**os.environ, "DARI_WORKERS": str(count), "DARI_WORKER_INDEX": str(i)}
        procs[i] = subprocess.Popen([sys.executable, "-m", "dari.cli.main", "serve", *argv], env=env)
        started[i] = time.monotonic()
        log.info("worker %d started (pid %d)", i, procs[i].pid)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(count):
        spawn(i)
    while True:
        time.sleep(0.2)
        if stopping:
            deadline = time.monotonic() + 30
            for p in procs.values():
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
            return 0
        for i, p in list(procs.items()):
            if p.poll() is not None:
                # A crash loop would burn the machine: wait a little longer the faster it dies.
                quick = time.monotonic() - started[i] < 5
                log.warning("worker %d exited with %s; restarting%s", i, p.returncode, " in 2 s" if quick else "")
                if quick:
                    time.sleep(2)
                spawn(i)
