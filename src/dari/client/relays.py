"""Relays for the SDK: keep the server-signed descriptors a client has learned, and turn them into
routes that join the route manager's candidates (after the configured ones, so a working direct
route always stays preferred and the client moves back to it by itself).

    book = RelayBook("relays.json")                 # or RelayBook(trusted_keys=["ed25519:..."])
    book.add("dari://relay?d=...")                  # an invite link or a scanned QR code
    await refresh_relays(client, book)              # relay.list over the current (pinned) route

The signing key is trusted either from configuration or, on first contact, from `relay.list`
answered over a route whose TLS key is pinned; a key offered over an unpinned route is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from dari.client.links import Route
from dari.relay.descriptor import (
    Descriptor,
    DescriptorError,
    parse_public_key,
    verify_descriptor,
    verify_revocations,
)

if TYPE_CHECKING:
    from dari.client.client import Client
    from dari.client.obfs4 import Obfs4Client
    from dari.client.routes import RouteManager

log = logging.getLogger("dari.relays")


class RelayBook:
    def __init__(self, path: str | None = None, trusted_keys: list[str] | None = None) -> None:
        self.path = path
        self.keys: list[str] = []
        self.blobs: dict[str, str] = {}     # relay id -> signed descriptor
        self.revoked: set[str] = set()
        self.revoked_issued = 0
        self._load()
        for k in trusted_keys or []:
            self.trust(k)

    def trust(self, key: str) -> None:
        parse_public_key(key)   # refuse malformed keys now, not at first use
        if key not in self.keys:
            self.keys.append(key)
            self._save()

    def _verify(self, blob: str) -> Descriptor:
        return verify_descriptor(blob, [parse_public_key(k) for k in self.keys], revoked=self.revoked)

    def add(self, link: str) -> Descriptor:
        """Add a descriptor from an invite link, a QR code's text or a bare blob; raises
        DescriptorError saying what is wrong (malformed, bad signature, expired, revoked)."""
        from dari.relay.descriptor import from_link

        blob = from_link(link)
        d = self._verify(blob)
        old = self.blobs.get(d.id)
        if old is not None:
            with contextlib.suppress(DescriptorError):
                if self._verify(old).issued > d.issued:
                    return self._verify(old)   # never let an older copy replace a rotated one
        self.blobs[d.id] = blob
        self._save()
        return d

    def apply_listing(self, listing: dict[str, Any], *, over_pinned_tls: bool) -> list[str]:
        """Take in a relay.list answer; returns the problems found (each also logged)."""
        problems: list[str] = []
        key = str(listing.get("key", ""))
        if not self.keys:
            if not over_pinned_tls:
                raise DescriptorError("refusing to learn the server's relay-signing key over a route without a "
                                      "pinned TLS key; pin the server or configure the key")
            self.trust(key)
        elif key not in self.keys:
            problems.append(f"the server offered an untrusted signing key {key[:24]}...: ignored")
        keys = [parse_public_key(k) for k in self.keys]
        try:
            rev = verify_revocations(str(listing.get("revoked", "")), keys)
            if rev.issued >= self.revoked_issued:
                self.revoked, self.revoked_issued = set(rev.revoked), rev.issued
        except DescriptorError as exc:
            problems.append(f"revocation list rejected: {exc}")
        for blob in listing.get("relays", []):
            try:
                self.add(str(blob))
            except DescriptorError as exc:
                problems.append(str(exc))
        self.prune()
        for p in problems:
            log.warning("relay.list: %s", p)
        return problems

    def prune(self) -> None:
        """Forget descriptors that expired or were revoked."""
        for rid, blob in list(self.blobs.items()):
            try:
                self._verify(blob)
            except DescriptorError as exc:
                log.info("dropping relay %s: %s", rid, exc)
                del self.blobs[rid]
        self._save()

    def descriptors(self) -> list[Descriptor]:
        out = []
        for blob in self.blobs.values():
            with contextlib.suppress(DescriptorError):
                out.append(self._verify(blob))
        return out

    def routes(self, obfs4: Obfs4Client | None = None) -> list[Route]:
        """Routes through every usable relay; obfs4 relays only when an obfs4 client is running."""
        out: list[Route] = []
        for d in self.descriptors():
            out.extend(descriptor_routes(d, obfs4))
        return out

    def _load(self) -> None:
        if not self.path or not os.path.exists(self.path):
            return
        try:
            with open(self.path) as fh:
                data = json.load(fh)
            self.keys = [str(k) for k in data.get("keys", [])]
            self.blobs = {str(k): str(v) for k, v in data.get("relays", {}).items()}
            self.revoked = {str(r) for r in data.get("revoked", [])}
            self.revoked_issued = int(data.get("revoked_issued", 0))
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable relay book %s: %s", self.path, exc)

    def _save(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"keys": self.keys, "relays": self.blobs, "revoked": sorted(self.revoked),
                       "revoked_issued": self.revoked_issued}, fh)
        os.replace(tmp, self.path)


def descriptor_routes(d: Descriptor, obfs4: Obfs4Client | None = None) -> list[Route]:
    """The routes one descriptor yields. The pin is the server's: TLS runs through the relay."""
    extra = {"relay": d.id}
    many = len(d.addresses) > 1

    def name(prefix: str, i: int) -> str:
        return f"{prefix} {d.id}" + (f" #{i + 1}" if many else "")

    if d.kind == "obfs4":
        return obfs4.routes_for(d) if obfs4 is not None else []
    if d.kind == "https":
        return [r for i, a in enumerate(d.addresses) for r in (
            Route("ws", f"https://{a}", name=name("relay-ws", i), pin=d.pin, sni=d.sni, extra=dict(extra)),
            Route("longpoll", f"https://{a}", name=name("relay-lp", i), pin=d.pin, sni=d.sni, extra=dict(extra)))]
    return [Route("stream", f"tls://{a}", name=name("relay", i), pin=d.pin, sni=d.sni, extra=dict(extra))
            for i, a in enumerate(d.addresses)]


def install_routes(manager: RouteManager, relay_routes: list[Route]) -> None:
    """Replace the relay routes among the candidates, keeping the configured ones first."""
    manager.routes[:] = [r for r in manager.routes if "relay" not in r.extra] + relay_routes


async def refresh_relays(client: Client, book: RelayBook, obfs4: Obfs4Client | None = None) -> list[str]:
    """Fetch relay.list through the current route, update the book and the client's candidates.
    A relay carrying the session that has just been revoked is left at once. Returns problems."""
    listing = await client.call("relay.list")
    current = client.routes.current
    problems = book.apply_listing(listing, over_pinned_tls=bool(current and current.pin))
    routes = book.routes(obfs4)
    install_routes(client.routes, routes)
    if current is not None and "relay" in current.extra and current not in routes:
        log.info("relay %s was revoked or expired: leaving it", current.extra["relay"])
        link = client._link
        if link is not None:
            await link.close()
    return problems


async def refresh_forever(client: Client, book: RelayBook, obfs4: Obfs4Client | None = None,
                          interval: float = 3600.0) -> None:
    """Keep the relay list fresh while the client runs (start it as a task; cancel to stop).
    Failures are logged and retried at the next interval: a stale list still works until expiry."""
    import asyncio
    import random

    from dari.protocol.errors import DariError

    while True:
        try:
            await refresh_relays(client, book, obfs4)
        except (DariError, DescriptorError, OSError, TimeoutError) as exc:
            log.info("relay.list failed, keeping the current list: %s", exc)
        await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
