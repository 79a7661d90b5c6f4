"""obfs4 routes for the SDK: obfs4proxy's client side run as a managed pluggable transport.

    async with Obfs4Client() as pt:                 # raises PTNotInstalled with install advice
        book.routes(obfs4=pt)                       # obfs4 relays become stream routes via its SOCKS5

Each connection passes the relay's cert in the SOCKS5 username/password, as pt-spec.txt says.
"""

from __future__ import annotations

import tempfile

from dari.client.links import Route
from dari.relay.descriptor import Descriptor
from dari.relay.pt import ManagedPT, PTError, PTNotInstalled, launch, socks_auth

__all__ = ["Obfs4Client", "PTError", "PTNotInstalled"]


class Obfs4Client:
    def __init__(self, state_dir: str | None = None, binary: str | None = None) -> None:
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="dari-obfs4-")
        self.state_dir = state_dir or (self._tmp.name if self._tmp else "")
        self.binary = binary
        self.pt: ManagedPT | None = None

    async def start(self) -> Obfs4Client:
        if self.pt is None:
            self.pt = await launch(transports=["obfs4"], state_dir=self.state_dir, binary=self.binary)
            method = self.pt.method("obfs4")
            if method.protocol != "socks5":
                await self.close()
                raise PTError(f"obfs4proxy offered {method.protocol}, not socks5")
        return self

    async def __aenter__(self) -> Obfs4Client:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def socks_url(self) -> str:
        if self.pt is None:
            raise PTError("obfs4proxy is not running: call start() first")
        return "socks5://" + self.pt.method("obfs4").address

    def route(self, address: str, cert: str, iat_mode: int = 0, *, pin: str | None = None, sni: str | None = None,
              name: str = "", relay_id: str | None = None) -> Route:
        """A TLS stream to the server, obfs4-wrapped up to the relay at `address`."""
        user, password = socks_auth({"cert": cert, "iat-mode": str(iat_mode)})
        extra = {"socks": self.socks_url, "socks_user": user, "socks_pass": password}
        if relay_id:
            extra["relay"] = relay_id
        return Route("stream", f"tls://{address}", name=name or f"obfs4 {address}", pin=pin, sni=sni, extra=extra)

    def routes_for(self, d: Descriptor) -> list[Route]:
        assert d.obfs4_cert is not None
        many = len(d.addresses) > 1
        return [self.route(a, d.obfs4_cert, d.iat_mode, pin=d.pin, sni=d.sni, relay_id=d.id,
                           name=f"obfs4 {d.id}" + (f" #{i + 1}" if many else ""))
                for i, a in enumerate(d.addresses)]

    async def close(self) -> None:
        if self.pt is not None:
            await self.pt.close()
            self.pt = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
