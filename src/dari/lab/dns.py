"""A small DNS codec and the lab's resolver.

The resolver answers A queries for the lab's names honestly, and, when its policy file says so,
lies to clients from chosen networks (an ISP resolver doing the censor's work: LINE 2014):

    {"poison": {"names": ["chat.dari.test", ...], "sources": ["10.77.1.0/24"],
                "action": "answer" | "nxdomain" | "servfail" | "drop", "answer": "10.77.99.1"}}

The policy file is re-read when it changes, so the lab applies and lifts blocks at run time.
Run: python -m dari.lab.dns --zone ZONE.json --policy POLICY.json [--port 53]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, cast

QTYPE_A = 1
QTYPE_AAAA = 28
RCODE_OK, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 2, 3
_HDR = struct.Struct(">HHHHHH")


@dataclass
class Query:
    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question: bytes      # the question section as sent, echoed in the answer


def parse_query(data: bytes) -> Query:
    qid, flags, qd, _, _, _ = _HDR.unpack_from(data)
    if qd < 1:
        raise ValueError("no question")
    pos, labels = 12, []
    while True:
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    qtype, qclass = struct.unpack_from(">HH", data, pos)
    return Query(qid, flags, ".".join(labels).lower().rstrip("."), qtype, qclass, data[12:pos + 4])


def build_query(name: str, qid: int, qtype: int = QTYPE_A) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return _HDR.pack(qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)


def build_answer(query: Query, addresses: list[str], rcode: int = RCODE_OK, ttl: int = 300) -> bytes:
    flags = 0x8000 | (query.flags & 0x0100) | 0x0080 | rcode     # QR, RD copied, RA
    answers = b""
    for addr in addresses:
        # 0xC00C points at the name in the question (offset 12)
        answers += struct.pack(">HHHIH", 0xC00C, QTYPE_A, 1, ttl, 4) + socket.inet_aton(addr)
    return _HDR.pack(query.id, flags, 1, len(addresses), 0, 0) + query.question + answers


def parse_answer(data: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, A addresses) of a response."""
    qid, flags, qd, an, _, _ = _HDR.unpack_from(data)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    addrs = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _, _, rdlen = struct.unpack_from(">HHIH", data, pos)
        pos += 10
        if rtype == QTYPE_A and rdlen == 4:
            addrs.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return qid, flags & 0xF, addrs


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0:
            return pos + 2
        pos += 1 + n


class PolicyFile:
    """A JSON file re-read when its modification time changes (cheap enough per packet)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.mtime = -1.0
        self.data: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        if not self.path:
            return self.data
        try:
            mtime = os.stat(self.path).st_mtime_ns / 1e9
        except FileNotFoundError:
            self.data, self.mtime = {}, -1.0
            return self.data
        if mtime != self.mtime:
            try:
                with open(self.path) as fh:
                    self.data = json.load(fh)
                self.mtime = mtime
            except (OSError, ValueError):
                pass    # half-written: keep the previous policy until the next read
        return self.data


def in_any(addr: str, nets: list[str]) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ip in ipaddress.ip_network(n, strict=False) for n in nets)


def name_matches(name: str, names: list[str]) -> bool:
    """Exact name or any subdomain of a listed name ("dari.test" covers "chat.dari.test")."""
    name = name.lower().rstrip(".")
    return any(name == n or name.endswith("." + n) for n in names)


class Resolver(asyncio.DatagramProtocol):
    def __init__(self, zone: dict[str, str], policy: PolicyFile) -> None:
        self.zone = {k.lower(): v for k, v in zone.items()}
        self.policy = policy
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = parse_query(data)
        except (ValueError, IndexError, struct.error):
            return
        reply = self.answer(query, addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def answer(self, query: Query, source: str) -> bytes | None:
        poison = self.policy.get().get("poison")
        if poison and name_matches(query.name, poison.get("names", [])) and in_any(source, poison.get("sources", [])):
            action = poison.get("action", "answer")
            if action == "drop":
                return None
            if action == "nxdomain":
                return build_answer(query, [], RCODE_NXDOMAIN)
            if action == "servfail":
                return build_answer(query, [], RCODE_SERVFAIL)
            return build_answer(query, [poison["answer"]] if query.qtype == QTYPE_A else [])
        addr = self.zone.get(query.name)
        if addr is None:
            return build_answer(query, [], RCODE_NXDOMAIN)
        return build_answer(query, [addr] if query.qtype == QTYPE_A else [])


async def serve(zone: dict[str, str], policy_path: str | None, host: str = "0.0.0.0", port: int = 53) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: Resolver(zone, PolicyFile(policy_path)),
                                                      local_addr=(host, port))
    print(f"dns: answering on {host}:{port} for {len(zone)} names", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


def main() -> None:
    ap = argparse.ArgumentParser(description="the censorship lab's DNS resolver")
    ap.add_argument("--zone", required=True, help="JSON object name -> IPv4 address")
    ap.add_argument("--policy", help="JSON policy file (see module docstring)")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=53)
    args = ap.parse_args()
    with open(args.zone) as fh:
        zone = json.load(fh)
    asyncio.run(serve(zone, args.policy, args.host, args.port))


if __name__ == "__main__":
    main()
