"""Signed relay descriptors and revocation lists (pure: no I/O).

Wire form: base64url(no padding) of 64 bytes of Ed25519 signature followed by the compact JSON
body. Binary-then-JSON keeps invite links and QR codes short, and signing the exact bytes that
travel means no canonical-JSON rules to get wrong. Every body names its `type`, so a signed
revocation list can never be replayed as a descriptor or the other way round.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from msgspec import Meta

LINK_PREFIX = "dari://relay?d="
MAX_BLOB = 4096   # a descriptor is a few hundred bytes; anything bigger is not one
_SIG = 64
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):([0-9]{1,5})$")

RelayId = Annotated[str, Meta(pattern=r"^[a-z0-9-]{1,40}$")]
Pin = Annotated[str, Meta(pattern=r"^sha256/[A-Za-z0-9+/]{43}=$")]
Kind = Literal["stream", "obfs4", "https"]


class DescriptorError(ValueError):
    """A descriptor or revocation list that must not be used; the message says why."""


class Descriptor(msgspec.Struct, frozen=True, kw_only=True):
    """Where a relay listens and how to talk through it. `pin` is the *server's* key: TLS runs end
    to end through the relay, so the client checks the server, never the relay."""

    type: Literal["relay"] = "relay"
    v: Literal[1] = 1
    id: RelayId
    serial: Annotated[str, Meta(pattern=r"^[0-9a-f]{8,32}$")]
    addresses: Annotated[list[str], Meta(min_length=1, max_length=8)]
    kind: Kind = "stream"
    sni: Annotated[str, Meta(max_length=253)] | None = None
    pin: Pin
    obfs4_cert: Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{40,100}$")] | None = None
    iat_mode: Annotated[int, Meta(ge=0, le=2)] = 0
    issued: int
    expires: int


class Revocations(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["revocations"] = "revocations"
    v: Literal[1] = 1
    revoked: list[str]          # relay ids (every descriptor of the relay) and serials (one issue)
    issued: int


_decoders: dict[type, msgspec.json.Decoder[Any]] = {Descriptor: msgspec.json.Decoder(Descriptor),
                                                     Revocations: msgspec.json.Decoder(Revocations)}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_text(key: Ed25519PublicKey) -> str:
    return "ed25519:" + b64u(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith("ed25519:"):
        raise DescriptorError(f"not an ed25519 key: {text[:20]!r}")
    try:
        return Ed25519PublicKey.from_public_bytes(unb64u(text[8:]))
    except (ValueError, binascii.Error) as exc:
        raise DescriptorError(f"malformed signing key: {exc}") from None


def sign(body: Descriptor | Revocations, key: Ed25519PrivateKey) -> str:
    payload = msgspec.json.encode(body)
    return b64u(key.sign(payload) + payload)


def to_link(blob: str) -> str:
    return LINK_PREFIX + blob


def from_link(text: str) -> str:
    """The blob of a dari://relay?d=... link (a bare blob is accepted too)."""
    text = text.strip()
    if not text.startswith("dari://"):
        return text
    parts = urlsplit(text)
    values = parse_qs(parts.query).get("d")
    if parts.netloc != "relay" or not values:
        raise DescriptorError("not a relay link: expected dari://relay?d=...")
    return values[0]


def _open(blob: str, keys: list[Ed25519PublicKey], kind: type[Descriptor] | type[Revocations]) -> Any:
    if not blob or len(blob) > MAX_BLOB:
        raise DescriptorError("malformed descriptor: empty or too long")
    try:
        raw = unb64u(blob)
    except (ValueError, binascii.Error):
        raise DescriptorError("malformed descriptor: not base64url") from None
    if len(raw) <= _SIG:
        raise DescriptorError("malformed descriptor: too short to carry a signature")
    sig, payload = raw[:_SIG], raw[_SIG:]
    if not keys:
        raise DescriptorError("no trusted server key: learn it from the server over a pinned route first")
    for key in keys:
        try:
            key.verify(sig, payload)
            break
        except InvalidSignature:
            continue
    else:
        raise DescriptorError("bad signature: not signed by the server key this client trusts")
    try:
        return _decoders[kind].decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DescriptorError(f"malformed {kind.__name__.lower()}: {exc}") from None


def verify_descriptor(blob: str, keys: list[Ed25519PublicKey], *, revoked: set[str] | frozenset[str] = frozenset(),
                      now: float | None = None, check_time: bool = True) -> Descriptor:
    """The descriptor, if signed by a trusted key, well-formed, current and not revoked."""
    d: Descriptor = _open(from_link(blob), keys, Descriptor)
    for address in d.addresses:
        m = _ADDRESS.match(address)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise DescriptorError(f"malformed descriptor: bad address {address!r}")
    if d.kind == "obfs4" and not d.obfs4_cert:
        raise DescriptorError("malformed descriptor: an obfs4 relay needs its obfs4 cert")
    t = time.time() if now is None else now
    if check_time and d.expires <= t:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d.expires))
        raise DescriptorError(f"expired descriptor: relay {d.id} expired at {when}")
    if check_time and d.issued > t + 600:
        raise DescriptorError(f"descriptor for relay {d.id} is issued in the future (clock skew?)")
    if d.id in revoked or d.serial in revoked:
        raise DescriptorError(f"revoked descriptor: relay {d.id} (serial {d.serial}) was revoked by the server")
    return d


def verify_revocations(blob: str, keys: list[Ed25519PublicKey]) -> Revocations:
    rev: Revocations = _open(blob, keys, Revocations)
    return rev


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
