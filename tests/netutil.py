"""A TCP forwarder on loopback that tests can cut and restore, to take a route away mid-session."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.conns: set[asyncio.StreamWriter] = set()
        self.bytes = 0
        self.frozen = False

    async def start(self, port: int = 0) -> CuttableProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.conns |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if self.frozen:
                        continue      # a blackhole: packets vanish, nobody is told
                    self.bytes += len(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.conns -= {writer, up_w}

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a censor's firewall would."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.conns.clear()

    def freeze(self) -> None:
        """Keep connections open but forward nothing, as a censor dropping packets mid-flow does."""
        self.frozen = True

    async def restore(self) -> None:
        self.frozen = False
        if self.server is None:
            await self.start(self.port)
