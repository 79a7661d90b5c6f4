"""Server-side network of a reachability report: country and ASN of the reporting peer's address,
from MaxMind databases (GeoLite2-Country / GeoLite2-ASN, or any MMDB in their layout) that the
operator supplies (`geoip_country_db`, `geoip_asn_db`). Optional: without them reports keep what
the client declared. Needs the `maxminddb` package (`pip install 'dari[geoip]'`).

Which wins when both the client's declaration and the lookup exist (`resolve`):

- the peer is a listed relay or proxy (`geoip_proxies`): the peer address is that relay's, so the
  declaration is kept and nothing is looked up;
- the peer is a public address (a direct connection): the lookup wins, and the declaration only
  fills what the databases do not know; a client's guess (or a made-up region) cannot override it;
- the peer is not public (loopback, private, link-local: a relay, reverse proxy or lab on this host
  or LAN): the declaration wins, and the lookup only fills what the client left out.

Each stored sample records where its region and ASN came from: `client`, `geoip` or `none`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from dari.config import Settings

log = logging.getLogger("dari.geoip")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
RECHECK_S = 60.0     # how often a database file is checked for replacement (geoipupdate renames a new one in)

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Network:
    region: str
    asn: str
    region_source: str      # client | geoip | none
    asn_source: str


def _parse_addr(peer: str) -> Addr | None:
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_networks(text: str) -> list[Net]:
    """`geoip_proxies`: comma-separated addresses or CIDR networks."""
    nets = []
    for part in text.split(","):
        if part.strip():
            try:
                nets.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"geoip_proxies: {part.strip()!r} is not an address or network") from None
    return nets


class _Db:
    """One MMDB file, reopened when the file at its path is replaced."""

    def __init__(self, setting: str, path: str) -> None:
        self.setting, self.path = setting, path
        self.reader = self._open()
        self.stamp = self._stamp()
        self.checked = time.monotonic()

    def _stamp(self) -> tuple[int, int, float]:
        st = os.stat(self.path)
        return st.st_ino, st.st_size, st.st_mtime

    def _open(self) -> Any:
        try:
            import maxminddb
        except ImportError:
            raise ValueError(f"{self.setting} is set but the maxminddb package is not installed:"
                             " pip install 'dari[geoip]'") from None
        if not os.path.isfile(self.path):
            raise ValueError(f"{self.setting}: {self.path} does not exist or is not a file")
        try:
            reader = maxminddb.open_database(self.path)
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise ValueError(f"{self.setting}: {self.path} is not a MaxMind DB (.mmdb) file: {exc}") from None
        log.info("%s: %s (%s, built %s)", self.setting, self.path, reader.metadata().database_type,
                 time.strftime("%Y-%m-%d", time.gmtime(reader.metadata().build_epoch)))
        return reader

    def get(self, addr: Addr) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self.checked >= RECHECK_S:
            self.checked = now
            try:
                stamp = self._stamp()
                if stamp != self.stamp:
                    self.reader, self.stamp = self._open(), stamp
            except (OSError, ValueError) as exc:
                log.warning("keeping the loaded %s: %s", self.setting, exc)
        try:
            rec = self.reader.get(addr)
        except ValueError:      # an IPv6 address in an IPv4-only database
            return None
        return rec if isinstance(rec, dict) else None


class GeoIP:
    def __init__(self, country_db: str = "", asn_db: str = "", proxies: str = "") -> None:
        self.country = _Db("geoip_country_db", country_db) if country_db else None
        self.asn = _Db("geoip_asn_db", asn_db) if asn_db else None
        self.proxies = parse_networks(proxies)

    @classmethod
    def from_settings(cls, s: Settings) -> GeoIP | None:
        """None when no database is configured; ValueError (a startup error) when one cannot be used."""
        if not (s.geoip_country_db or s.geoip_asn_db):
            if s.geoip_proxies:
                parse_networks(s.geoip_proxies)
            return None
        return cls(s.geoip_country_db, s.geoip_asn_db, s.geoip_proxies)

    def lookup(self, peer: str) -> tuple[str, str]:
        """(country code or "", "AS<number>" or "") for an address."""
        addr = _parse_addr(peer)
        if addr is None:
            return "", ""
        region = asn = ""
        if self.country is not None and (rec := self.country.get(addr)):
            for key in ("country", "registered_country"):   # GeoIP2/GeoLite2 Country and City layout
                code = (rec.get(key) or {}).get("iso_code")
                if isinstance(code, str) and _COUNTRY.match(code):
                    region = code
                    break
            else:
                code = rec.get("country_code")                 # flat layouts (some free country databases)
                region = code if isinstance(code, str) and _COUNTRY.match(code) else ""
        if self.asn is not None and (rec := self.asn.get(addr)):
            number = rec.get("autonomous_system_number")
            asn = f"AS{number}" if isinstance(number, int) and 0 < number < 10**10 else ""
        return region, asn

    def peer_kind(self, peer: str) -> str:
        """direct (a public address), proxy (a listed relay or proxy) or local (anything else)."""
        addr = _parse_addr(peer)
        if addr is None:
            return "local"
        if any(addr.version == net.version and addr in net for net in self.proxies):
            return "proxy"
        return "direct" if addr.is_global else "local"

    def resolve(self, declared_region: str, declared_asn: str, peer: str) -> Network:
        kind = self.peer_kind(peer)
        return resolve(declared_region, declared_asn, kind, self.lookup(peer) if kind != "proxy" else ("", ""))


def resolve(declared_region: str, declared_asn: str, peer_kind: str, looked_up: tuple[str, str]) -> Network:
    """The report's network from what the client declared and what the lookup found (see the module doc)."""
    declared = (declared_region if declared_region != "ZZ" else "", declared_asn)
    first, second = (looked_up, declared) if peer_kind == "direct" else (declared, looked_up)
    first_src, second_src = ("geoip", "client") if peer_kind == "direct" else ("client", "geoip")
    values = []
    for i in range(2):
        if first[i]:
            values.append((first[i], first_src))
        elif second[i]:
            values.append((second[i], second_src))
        else:
            values.append(("ZZ" if i == 0 else "", "none"))
    (region, region_src), (asn, asn_src) = values
    return Network(region, asn, region_src, asn_src)


def client_only(declared_region: str, declared_asn: str) -> Network:
    """Without databases: the declaration as it is."""
    return Network(declared_region, declared_asn, "client" if declared_region != "ZZ" else "none",
                   "client" if declared_asn else "none")
