"""A minimal DNS A/AAAA query over UDP that keeps listening after the first answer: on-path
injectors (the GFW's style) answer first with a forged address and the real resolver answers
later, so two different answers to one query are evidence of poisoning."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass, field

QTYPE = {"A": 1, "AAAA": 28}


@dataclass
class DnsAnswer:
    addresses: list[str] = field(default_factory=list)
    rcode: int = 0
    responses: int = 0                        # datagrams answering our id
    distinct_answers: list[list[str]] = field(default_factory=list)
    error: str = ""


def build_query(name: str, qtype: str = "A") -> tuple[int, bytes]:
    qid = secrets.randbits(16)
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)   # recursion desired
    labels = b"".join(bytes([len(p)]) + p.encode("idna") for p in name.rstrip(".").split("."))
    return qid, header + labels + b"\x00" + struct.pack(">HH", QTYPE[qtype], 1)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n & 0xC0 == 0xC0:
            return pos + 2
        if n == 0:
            return pos + 1
        pos += n + 1


def parse_response(data: bytes, qid: int) -> tuple[int, list[str]] | None:
    """(rcode, addresses) or None if this datagram is not an answer to our query."""
    if len(data) < 12:
        return None
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    if rid != qid or not flags & 0x8000:
        return None
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        pos += rdlen
        if rtype == 1 and rdlen == 4:
            out.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == 28 and rdlen == 16:
            out.append(str(ipaddress.IPv6Address(rdata)))
    return flags & 0x000F, out


def system_resolver() -> str | None:
    try:
        with open("/etc/resolv.conf") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    return None


async def query(name: str, server: str, qtype: str = "A", timeout: float = 2.0, linger: float = 0.5) -> DnsAnswer:
    """Send one query; collect every answer until `linger` seconds after the first (or `timeout`)."""
    loop = asyncio.get_running_loop()
    qid, packet = build_query(name, qtype)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    result = DnsAnswer()
    try:
        await loop.sock_connect(sock, (server, 53))
        await loop.sock_sendall(sock, packet)
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), remaining)
            except TimeoutError:
                break
            parsed = parse_response(data, qid)
            if parsed is None:
                continue
            rcode, addrs = parsed
            if result.responses == 0:
                result.rcode, result.addresses = rcode, addrs
                deadline = min(deadline, loop.time() + linger)
            result.responses += 1
            if sorted(addrs) not in result.distinct_answers:
                result.distinct_answers.append(sorted(addrs))
        if result.responses == 0:
            result.error = "timeout"
    except OSError as exc:
        result.error = str(exc)
    finally:
        sock.close()
    return result


def is_bogon(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return bool(ip.is_private or ip.is_loopback or ip.is_reserved or ip.is_unspecified or ip.is_link_local
                or ip.is_multicast)
