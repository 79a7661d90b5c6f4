"""TCP forwarders for the lab: the server's TLS front (terminates TLS on :443/:8443 and passes plain
bytes to `dari serve`, as nginx would) and the stand-in relay (passes TLS through untouched, so the
client's pin still checks the server's key end to end).

Run: python -m dari.lab.forward --map 443=127.0.0.1:7000:tls --map 8443=127.0.0.1:80:tls \
         --cert C --key K
     python -m dari.lab.forward --map 443=10.77.10.2:443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from dari.lab.middlebox import pipe

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def forwarder(host: str, port: int) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    return handle


async def chargen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes as fast as the path takes them, for throughput probes (bounded: 64 MiB a connection)."""
    block = bytes(range(32, 127)) * 690
    with contextlib.suppress(ConnectionError, OSError):
        for _ in range((64 << 20) // len(block)):
            writer.write(block)
            await writer.drain()
    writer.close()


async def run(maps: list[str], cert: str | None, key: str | None, host: str, chargen_port: int = 0) -> None:
    ctx: ssl.SSLContext | None = None
    if cert and key:
        from dari.server.tls import server_context

        ctx = server_context(cert, key)
    servers = []
    if chargen_port:
        servers.append(await asyncio.start_server(chargen, host, chargen_port, reuse_address=True))
        print(f"forward: chargen on :{chargen_port}", flush=True)
    for spec in maps:
        listen, target = spec.split("=", 1)
        parts = target.split(":")
        tls = len(parts) > 2 and parts[2] == "tls"
        if tls and ctx is None:
            raise SystemExit(f"--map {spec}: tls needs --cert and --key")
        servers.append(await asyncio.start_server(forwarder(parts[0], int(parts[1])), host, int(listen),
                                                  ssl=ctx if tls else None, reuse_address=True))
        print(f"forward: :{listen} -> {parts[0]}:{parts[1]}{' (TLS terminated)' if tls else ''}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    ap = argparse.ArgumentParser(description="the censorship lab's TCP forwarder / TLS front")
    ap.add_argument("--map", action="append", default=[], help="LISTEN_PORT=HOST:PORT[:tls]")
    ap.add_argument("--chargen", type=int, default=0, help="also serve bulk bytes on this port")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--host", default="0.0.0.0")
    args = ap.parse_args()
    asyncio.run(run(args.map, args.cert, args.key, args.host, args.chargen))


if __name__ == "__main__":
    main()
