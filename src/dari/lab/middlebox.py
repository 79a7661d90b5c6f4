"""The censor's transparent middlebox, run inside the censor router's namespace.

nftables `tproxy` hands it the censored clients' TCP connections (to the ports a scenario
intercepts) and their DNS queries; it sees each connection's original destination as its own
local address and opens the upstream leg from the client's own address (IP_TRANSPARENT), so the
server sees the real client. What it does is set by a JSON policy file, re-read on change:

    {"sni":  {"names": ["dari.test"], "penalty_s": 5},           reset ClientHello naming these, then
                                                                   put (client, server) in the penalty box
     "http": {"hosts": [...], "paths": ["/api/v1/friend.add"],    filter every request of a connection
              "action": "reset" | "page"},                         by Host or path prefix
     "fingerprint": {"delay_s": 0.3},                              reset streams that look like dari's
                                                                   frames, shortly after they start
     "dns_inject": {"names": [...], "answer": "10.77.99.1"}}      answer first with a forged address;
                                                                   the real answer follows (two answers)

Everything else passes untouched. Each action is appended as a JSON line to the events file.
Run: python -m dari.lab.middlebox --policy P.json --events E.jsonl --tcp-port 15001 --dns-port 15053
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import time
from typing import Any

from dari.lab.dns import PolicyFile, build_answer, name_matches, parse_query
from dari.lab.netns import IP_RECVORIGDSTADDR, IP_TRANSPARENT

BASE_TABLE = "dari_lab"          # holds the penalty set; made by dari.lab.censor
FIRST_BYTES_WAIT_S = 0.5         # a client silent this long (server speaks first) is spliced uninspected
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")
BLOCK_PAGE = (b"<html><head><title>Access denied</title></head><body><h1>Access denied</h1>"
              b"<p>The page you requested cannot be displayed.</p></body></html>")


# -- what the censor recognises ----------------------------------------------------------------------
def tls_record_complete(data: bytes) -> bool:
    return len(data) >= 5 and len(data) >= 5 + struct.unpack(">H", data[3:5])[0]


def parse_sni(data: bytes) -> str | None:
    """The server name in a TLS ClientHello, or None (not a ClientHello, no SNI, truncated)."""
    try:
        if data[0] != 0x16 or data[5] != 0x01:
            return None
        pos = 5 + 4 + 2 + 32                     # record hdr, handshake hdr, version, random
        pos += 1 + data[pos]                     # session id
        pos += 2 + struct.unpack_from(">H", data, pos)[0]   # cipher suites
        pos += 1 + data[pos]                     # compression methods
        end = pos + 2 + struct.unpack_from(">H", data, pos)[0]
        pos += 2
        while pos + 4 <= end:
            etype, elen = struct.unpack_from(">HH", data, pos)
            pos += 4
            if etype == 0:                       # server_name: list len, type, name len, name
                if data[pos + 2] == 0:
                    nlen = struct.unpack_from(">H", data, pos + 3)[0]
                    return data[pos + 5:pos + 5 + nlen].decode("ascii", "replace").lower()
                return None
            pos += elen
    except (IndexError, struct.error):
        return None
    return None


def looks_like_dari(data: bytes) -> bool:
    """dari's stream: a 4-byte big-endian length, then a JSON object with a "method" (or plain JSON
    frames). A real DPI box keys on the same: a plausible length prefix and the JSON that follows."""
    if len(data) >= 6:
        (size,) = struct.unpack(">I", data[:4])
        if 2 <= size <= 16 << 20 and data[4:5] == b"{" and (b'"method"' in data[:512] or b'"id"' in data[:64]):
            return True
    return data[:1] == b"{" and b'"method"' in data[:512]


def parse_http_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return parts[0], parts[1] if len(parts) > 1 else "/", headers


def http_blocked(policy: dict[str, Any], path: str, headers: dict[str, str]) -> str | None:
    host = headers.get("host", "").rsplit(":", 1)[0].lower()
    if name_matches(host, policy.get("hosts", [])):
        return f"host {host}"
    for prefix in policy.get("paths", []):
        if path.split("?", 1)[0].startswith(prefix):
            return f"path {prefix}"
    return None


# -- plumbing ----------------------------------------------------------------------------------------
def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as an injected reset looks to the endpoint."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if dst.can_write_eof():
            dst.write_eof()


async def open_transparent(client_ip: str, dst: tuple[str, int],
                           timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to `dst` from the client's own address, so the server sees who really connects."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.bind((client_ip, 0))
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, dst), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class Middlebox:
    def __init__(self, policy_path: str, events_path: str | None) -> None:
        self.policy = PolicyFile(policy_path)
        self.events_path = events_path

    def event(self, action: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "action": action, **fields})
        print(line, flush=True)
        if self.events_path:
            with open(self.events_path, "a") as fh:
                fh.write(line + "\n")

    async def penalize(self, client_ip: str, server_ip: str, seconds: float) -> None:
        proc = await asyncio.create_subprocess_exec(
            "nft", "add", "element", "ip", BASE_TABLE, "penalty",
            f"{{ {client_ip} . {server_ip} timeout {max(1, round(seconds))}s }}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode:
            self.event("error", what="penalty box", detail=err.decode().strip())

    # -- TCP ---------------------------------------------------------------------------------------
    async def handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_ip, client_port = writer.get_extra_info("peername")[:2]
        dst = writer.get_extra_info("sockname")[:2]
        flow = {"client": f"{client_ip}:{client_port}", "server": f"{dst[0]}:{dst[1]}"}
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                first = await asyncio.wait_for(reader.read(65536), FIRST_BYTES_WAIT_S)
            except TimeoutError:
                first = b""
            if not first and reader.at_eof():
                writer.close()
                return
            policy = self.policy.get()
            if first[:1] == b"\x16":
                while not tls_record_complete(first) and len(first) < 16384:
                    more = await asyncio.wait_for(reader.read(16384), 5)
                    if not more:
                        break
                    first += more
                sni = parse_sni(first)
                rule = policy.get("sni")
                if rule and sni and name_matches(sni, rule.get("names", [])):
                    reset(writer)
                    penalty = float(rule.get("penalty_s", 0))
                    self.event("sni-reset", sni=sni, penalty_s=penalty, **flow)
                    if penalty > 0:
                        await self.penalize(client_ip, dst[0], penalty)
                    return
            up_reader, upstream = await open_transparent(client_ip, dst)
            if first.startswith(HTTP_METHODS) and policy.get("http"):
                await self.http_session(reader, writer, up_reader, upstream, first, policy["http"], flow)
                return
            upstream.write(first)
            tasks = [asyncio.create_task(pipe(reader, upstream)), asyncio.create_task(pipe(up_reader, writer))]
            fp = policy.get("fingerprint")
            if fp is not None and looks_like_dari(first):
                # Let the stream start (its first frames get through), then kill it: "reset mid-way".
                done, _ = await asyncio.wait(tasks, timeout=float(fp.get("delay_s", 0.3)))
                if not done:
                    self.event("dpi-reset", pattern="length-prefixed JSON frames", **flow)
                    reset(writer)
                    reset(upstream)
            await asyncio.gather(*tasks, return_exceptions=True)
        except (ConnectionRefusedError, ConnectionResetError):
            reset(writer)         # the server refused or reset: the client should see it the same way
        except (OSError, TimeoutError):
            writer.close()
        finally:
            if upstream is not None:
                upstream.close()
            writer.close()

    async def http_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, buf: bytes,
                           rule: dict[str, Any], flow: dict[str, str]) -> None:
        """Check every request of a keep-alive connection, not just the first: a client reusing a
        connection for a blocked path must not slip through."""
        down = asyncio.create_task(pipe(up_reader, writer))
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    more = await reader.read(65536)
                    if not more:
                        return
                    buf += more
                    if len(buf) > 65536:
                        upstream.write(buf)       # not HTTP we can follow: pass the rest through
                        await pipe(reader, upstream)
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                method, path, headers = parse_http_head(head)
                why = http_blocked(rule, path, headers)
                if why:
                    self.event("http-filter", method=method, path=path, host=headers.get("host", ""), why=why,
                               response=rule.get("action", "reset"), **flow)
                    down.cancel()
                    if rule.get("action") == "page":
                        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nConnection: close\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(BLOCK_PAGE) + BLOCK_PAGE)
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        writer.close()
                    else:
                        reset(writer)
                    reset(upstream)
                    return
                upstream.write(head + b"\r\n\r\n")
                if headers.get("upgrade") or "chunked" in headers.get("transfer-encoding", ""):
                    upstream.write(buf)             # a WebSocket or a chunked body: raw from here on
                    await pipe(reader, upstream)
                    return
                need = int(headers.get("content-length", "0") or 0)
                while len(buf) < need:
                    more = await reader.read(65536)
                    if not more:
                        return
                    buf += more
                upstream.write(buf[:need])
                buf = buf[need:]
                await upstream.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if upstream.can_write_eof() and not upstream.is_closing():
                    upstream.write_eof()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down

    # -- DNS ---------------------------------------------------------------------------------------
    def start_dns(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._dns_readable, sock)

    def _dns_readable(self, sock: socket.socket) -> None:
        try:
            data, anc, _, src = sock.recvmsg(4096, 64)
        except BlockingIOError:
            return
        orig = None
        for level, kind, value in anc:
            if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:
                port, addr = struct.unpack_from(">H4s", value, 2)
                orig = (socket.inet_ntoa(addr), port)
        if orig is not None:
            asyncio.get_running_loop().create_task(self.dns_query(data, src, orig))

    async def dns_query(self, data: bytes, client: tuple[str, int], resolver: tuple[str, int]) -> None:
        """Inject a forged answer first, then pass the query on and relay the real answer too: the
        client's stub resolver takes the first, a careful one sees two answers to one query."""
        reply_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            reply_sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            reply_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reply_sock.bind(resolver)            # answer as the resolver the client asked
            rule = self.policy.get().get("dns_inject")
            try:
                query = parse_query(data)
            except (ValueError, IndexError, struct.error):
                query = None
            if rule and query is not None and name_matches(query.name, rule.get("names", [])):
                forged = build_answer(query, [rule["answer"]] if query.qtype == 1 else [])
                reply_sock.sendto(forged, client)
                self.event("dns-inject", name=query.name, qtype=query.qtype, answer=rule["answer"],
                           client=f"{client[0]}:{client[1]}")
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.setblocking(False)
                await loop.sock_connect(up, resolver)
                await loop.sock_sendall(up, data)
                try:
                    real = await asyncio.wait_for(loop.sock_recv(up, 4096), 3)
                except TimeoutError:
                    return
            reply_sock.sendto(real, client)
        except OSError as exc:
            self.event("error", what="dns", detail=str(exc))
        finally:
            reply_sock.close()


async def run(policy: str, events: str | None, tcp_port: int, dns_port: int) -> None:
    box = Middlebox(policy, events)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", tcp_port))
    server = await asyncio.start_server(box.handle_tcp, sock=sock, backlog=1024)
    box.start_dns(dns_port)
    print(f"middlebox: tcp on :{tcp_port}, dns on :{dns_port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description="the censorship lab's transparent middlebox")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--events")
    ap.add_argument("--tcp-port", type=int, default=15001)
    ap.add_argument("--dns-port", type=int, default=15053)
    args = ap.parse_args()
    asyncio.run(run(args.policy, args.events, args.tcp_port, args.dns_port))


if __name__ == "__main__":
    main()
