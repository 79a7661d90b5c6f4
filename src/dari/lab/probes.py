"""Direct checks with plain sockets, run from inside a lab namespace: what a block does to DNS, TCP,
TLS, HTTP, dari's frame stream and throughput, each reduced to an `Outcome` (kind + detail).

They are deliberately dumb (no retries, no classification across stages): they tell what the
network did, for the lab's own tests and its demo timeline. Classifying is the SDK's diagnosis.

In-process (a socket made inside the namespace, see netns.in_netns):
    probes.tcp(ns, "10.77.10.2", 80)        -> Outcome(kind="ok" | "timeout" | "refused" | ...)
From a shell:
    ip netns exec NS python -m dari.lab.probes tcp 10.77.10.2 80
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dari.lab.dns import build_query, parse_answer
from dari.lab.netns import in_netns
from dari.lab.topology import DNS_IP

DARI_REQUEST = b'{"id":%d,"method":"server.info","params":{}}'


@dataclass
class Outcome:
    kind: str                 # ok | timeout | refused | reset | unreachable | eof | blocked-page | tls-error | ...
    detail: str = ""
    elapsed_ms: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def __str__(self) -> str:
        return self.kind + (f" ({self.detail})" if self.detail else "")


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls-error"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        return "reset"
    return "error"


def _timed(fn: Callable[[], Outcome]) -> Outcome:
    start = time.monotonic()
    try:
        out = fn()
    except (OSError, ssl.SSLError) as exc:
        out = Outcome(_kind(exc), str(exc) or type(exc).__name__)
    out.elapsed_ms = round((time.monotonic() - start) * 1000, 1)
    return out


def _socket(ns: str | None, kind: int = socket.SOCK_STREAM) -> socket.socket:
    if ns is None:
        return socket.socket(socket.AF_INET, kind)
    return in_netns(ns, lambda: socket.socket(socket.AF_INET, kind))


def _connect(ns: str | None, host: str, port: int, timeout: float) -> socket.socket:
    s = _socket(ns)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


# -- the probes --------------------------------------------------------------------------------------
def dns(ns: str | None, name: str, server: str = DNS_IP, timeout: float = 2.0, window: float = 0.4) -> Outcome:
    """Every answer to one A query within `window` after the first: an on-path injector shows up as
    two answers (the forged one first). data: answers = [[addr, ...], ...], rcodes."""
    def run() -> Outcome:
        with _socket(ns, socket.SOCK_DGRAM) as s:
            qid = random.randrange(1, 65535)
            s.sendto(build_query(name, qid), (server, 53))
            answers: list[list[str]] = []
            rcodes: list[int] = []
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    data, _ = s.recvfrom(4096)
                except TimeoutError:
                    break
                rid, rcode, addrs = parse_answer(data)
                if rid != qid:
                    continue
                answers.append(addrs)
                rcodes.append(rcode)
                deadline = min(deadline, time.monotonic() + window)
            if not answers:
                return Outcome("timeout", f"no answer from {server}")
            first = answers[0]
            detail = ", ".join(first) if first else ("NXDOMAIN" if rcodes[0] == 3 else f"rcode {rcodes[0]}")
            if len(answers) > 1:
                detail += f"; {len(answers)} answers: " + " | ".join(",".join(a) or "-" for a in answers)
            return Outcome("ok", detail, data={"answers": answers, "rcodes": rcodes, "first": first})
    return _timed(run)


def tcp(ns: str | None, host: str, port: int, timeout: float = 3.0) -> Outcome:
    def run() -> Outcome:
        _connect(ns, host, port, timeout).close()
        return Outcome("ok")
    return _timed(run)


def tls(ns: str | None, host: str, port: int = 443, sni: str | None = None, timeout: float = 3.0) -> Outcome:
    """A TLS handshake naming `sni` (none when None). The lab's certificates are self-signed: this
    checks what the network does, not who answers."""
    def run() -> Outcome:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = _connect(ns, host, port, timeout)
        try:
            with ctx.wrap_socket(raw, server_hostname=sni) as t:
                return Outcome("ok", t.version() or "")
        except ssl.SSLEOFError as exc:
            return Outcome("eof", str(exc))
        finally:
            raw.close()
    return _timed(run)


def http(ns: str | None, host: str, port: int = 80, path: str = "/healthz", hostname: str | None = None,
         method: str = "GET", body: bytes = b"", timeout: float = 3.0) -> Outcome:
    """One HTTP/1.1 request; kind "ok" with data.status, "reset", "eof" (closed with no response)..."""
    def run() -> Outcome:
        with _connect(ns, host, port, timeout) as s:
            head = (f"{method} {path} HTTP/1.1\r\nHost: {hostname or host}\r\nConnection: close\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
            s.sendall(head.encode() + body)
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
            raw = b"".join(chunks)
        if not raw:
            return Outcome("eof", "closed without a response")
        status_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(status_line.split(" ")[1]) if " " in status_line else 0
        text = raw.split(b"\r\n\r\n", 1)[-1][:300].decode("utf-8", "replace")
        return Outcome("ok", f"HTTP {status}", data={"status": status, "body": text})
    return _timed(run)


def _frames(sock: socket.socket | ssl.SSLSocket, count: int, interval: float) -> Outcome:
    got = 0
    for i in range(count):
        frame = DARI_REQUEST % (i + 1)
        try:
            sock.sendall(struct.pack(">I", len(frame)) + frame)
            header = _recv_exact(sock, 4)
            _recv_exact(sock, struct.unpack(">I", header)[0])
        except (OSError, ssl.SSLError, EOFError) as exc:
            kind = "eof" if isinstance(exc, EOFError) else _kind(exc)
            return Outcome(kind, f"after {got} of {count} frames answered", data={"answered": got})
        got += 1
        time.sleep(interval)
    return Outcome("ok", f"{got} frames answered", data={"answered": got})


def _recv_exact(sock: socket.socket | ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError("closed by peer")
        buf += data
    return buf


def dari_stream(ns: str | None, host: str, port: int = 7000, count: int = 5, interval: float = 0.2,
                tls_sni: str | None = None, use_tls: bool = False, timeout: float = 3.0) -> Outcome:
    """Send `count` dari request frames (4-byte length + JSON) one by one and read each answer,
    over plain TCP or TLS. A fingerprinting censor kills the plain one part-way."""
    def run() -> Outcome:
        raw = _connect(ns, host, port, timeout)
        try:
            if use_tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                with ctx.wrap_socket(raw, server_hostname=tls_sni) as t:
                    return _frames(t, count, interval)
            return _frames(raw, count, interval)
        finally:
            raw.close()
    return _timed(run)


def throughput(ns: str | None, host: str, port: int = 7019, seconds: float = 2.0, limit: int = 32 << 20) -> Outcome:
    """Bytes per second read from the server namespace's chargen within `seconds`."""
    def run() -> Outcome:
        with _connect(ns, host, port, 3.0) as s:
            s.settimeout(0.2)
            start, total = time.monotonic(), 0
            while time.monotonic() - start < seconds and total < limit:
                with contextlib.suppress(TimeoutError):
                    data = s.recv(65536)
                    if not data:
                        break
                    total += len(data)
            elapsed = time.monotonic() - start
        rate = total / elapsed if elapsed > 0 else 0.0
        shown = f"{rate * 8 / 1e6:.0f} Mbit/s" if rate * 8 >= 10e6 else f"{rate * 8 / 1000:.0f} kbit/s"
        return Outcome("ok", shown, data={"bytes": total, "bytes_per_s": rate})
    return _timed(run)


PROBES: dict[str, Callable[..., Outcome]] = {"dns": dns, "tcp": tcp, "tls": tls, "http": http,
                                               "dari-stream": dari_stream, "throughput": throughput}


def main(argv: list[str] | None = None) -> int:
    """`python -m dari.lab.probes NAME ARG... [--key value]`; prints the Outcome as JSON."""
    ap = argparse.ArgumentParser(description="lab probes (run inside a namespace)")
    ap.add_argument("probe", choices=sorted(PROBES))
    ap.add_argument("args", nargs="*")
    ap.add_argument("--kw", action="append", default=[], help="KEY=JSON keyword argument")
    ns = ap.parse_args(argv)
    args: list[Any] = [int(a) if a.isdigit() else a for a in ns.args]
    kwargs = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in ns.kw)}
    out = PROBES[ns.probe](None, *args, **kwargs)
    print(json.dumps(asdict(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
