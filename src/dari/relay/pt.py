"""Pluggable transports run as managed child processes (Tor's PT 1.0 spec, pt-spec.txt).

The parent passes configuration in TOR_PT_* environment variables and reads the child's status
lines on stdout: VERSION, then CMETHOD (client: a local SOCKS5 address per transport) or SMETHOD
(server: the address it listens on), ending with CMETHODS DONE / SMETHODS DONE, or *-ERROR lines.
With TOR_PT_EXIT_ON_STDIN_CLOSE=1 the child exits when we close its stdin, so it never outlives
us even if we are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field

log = logging.getLogger("dari.pt")
INSTALL_HINT = ("obfs4proxy is not installed. Install it (Debian/Ubuntu: `sudo apt-get install obfs4proxy`) "
                "or set DARI_OBFS4PROXY to its path; obfs4 routes are unavailable until then.")


class PTError(RuntimeError):
    """The transport could not be started; the message is meant for a person."""


class PTNotInstalled(PTError):
    pass


@dataclass
class Method:
    transport: str
    address: str                                     # host:port
    protocol: str = ""                               # client side: "socks5"
    args: dict[str, str] = field(default_factory=dict)  # server side: ARGS:cert=...,iat-mode=0


def find_binary(binary: str | None = None) -> str:
    name = binary or os.environ.get("DARI_OBFS4PROXY") or "obfs4proxy"
    path = name if os.path.sep in name and os.access(name, os.X_OK) else shutil.which(name)
    if not path:
        raise PTNotInstalled(INSTALL_HINT)
    return path


def parse_args(text: str) -> dict[str, str]:
    """SMETHOD's ARGS:k=v,k=v with backslash escapes."""
    out: dict[str, str] = {}
    key, cur, esc, in_value = "", "", False, False
    for ch in text + ",":
        if esc:
            cur, esc = cur + ch, False
        elif ch == "\\":
            esc = True
        elif ch == "=" and not in_value:
            key, cur, in_value = cur, "", True
        elif ch == ",":
            if key:
                out[key] = cur
            key, cur, in_value = "", "", False
        else:
            cur += ch
    return out


def socks_auth(args: dict[str, str]) -> tuple[str, str]:
    """Per-connection transport arguments as SOCKS5 username/password (pt-spec 3.5): k=v;k=v with
    backslash escapes, split at 255 bytes; a single NUL as password when it all fits in the username."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(";", "\\;").replace("=", "\\=")

    blob = ";".join(f"{esc(k)}={esc(v)}" for k, v in args.items())
    if len(blob) <= 255:
        return blob, "\0"
    return blob[:255], blob[255:]


class ManagedPT:
    def __init__(self, proc: asyncio.subprocess.Process, methods: list[Method]) -> None:
        self.proc = proc
        self.methods = methods
        self._drain = asyncio.create_task(self._drain_stdout())

    async def _drain_stdout(self) -> None:
        # The child blocks if nobody reads its stdout; keep reading and log what it says.
        assert self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while line := await self.proc.stdout.readline():
                log.debug("pt: %s", line.decode(errors="replace").rstrip())

    def method(self, transport: str) -> Method:
        for m in self.methods:
            if m.transport == transport:
                return m
        raise PTError(f"the transport did not offer {transport}")

    async def close(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._drain.cancel()


async def launch(*, transports: list[str], state_dir: str, server: dict[str, str] | None = None,
                 binary: str | None = None, timeout: float = 15.0, log_level: str = "") -> ManagedPT:
    """Start the PT binary. `server` holds TOR_PT_SERVER_BINDADDR / TOR_PT_ORPORT for the server
    side; without it the client side is started."""
    path = find_binary(binary)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOR_PT_MANAGED_TRANSPORT_VER": "1",
           "TOR_PT_STATE_LOCATION": state_dir, "TOR_PT_EXIT_ON_STDIN_CLOSE": "1"}
    if server is not None:
        env["TOR_PT_SERVER_TRANSPORTS"] = ",".join(transports)
        env.update(server)
    else:
        env["TOR_PT_CLIENT_TRANSPORTS"] = ",".join(transports)
    argv = [path] + (["-enableLogging", "-logLevel", log_level] if log_level else [])
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError as exc:
        raise PTNotInstalled(f"{INSTALL_HINT} ({exc})") from None
    try:
        methods = await asyncio.wait_for(_handshake(proc, server is not None), timeout)
    except BaseException as exc:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise PTError(f"{os.path.basename(path)} did not report its methods within {timeout:.0f} s") from None
        raise
    return ManagedPT(proc, methods)


async def _handshake(proc: asyncio.subprocess.Process, server: bool) -> list[Method]:
    assert proc.stdout is not None
    kw = "SMETHOD" if server else "CMETHOD"
    methods: list[Method] = []
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise PTError(f"the transport exited during start-up (code {await proc.wait()})")
        line = raw.decode(errors="replace").strip()
        word, _, rest = line.partition(" ")
        if word == "VERSION" and rest != "1":
            raise PTError(f"unsupported PT protocol version {rest}")
        elif word in ("VERSION-ERROR", "ENV-ERROR", "PROXY-ERROR"):
            raise PTError(f"the transport refused its configuration: {line}")
        elif word == f"{kw}-ERROR":
            raise PTError(f"the transport could not start: {rest}")
        elif word == kw:
            parts = rest.split()
            if server and len(parts) >= 2:
                args = next((parse_args(p[5:]) for p in parts[2:] if p.startswith("ARGS:")), {})
                methods.append(Method(parts[0], parts[1], args=args))
            elif not server and len(parts) >= 3:
                methods.append(Method(parts[0], parts[2], protocol=parts[1]))
        elif word == f"{kw}S" and rest == "DONE":
            if not methods:
                raise PTError("the transport offered no methods")
            return methods
