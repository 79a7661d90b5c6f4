"""Diagnosis: probe each route stage by stage and say why it fails.

Stages: dns (system resolver vs pinned addresses, bogons, two answers to one query), tcp (timeout,
reset, unreachable), tls (the real name vs a neutral name to the same address; pin), http (status,
injected pages), application (dari frames over the route), throughput. Classes: dns-failure,
dns-poison, ip-blackhole, tcp-reset, sni-filter, http-filter, tls-interception, dpi-reset, throttled,
feature-block, shutdown, server-down, ok. The result is plain data (see `Diagnosis.to_json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from dari.client import dns
from dari.client.links import Route, RouteFailure, check_pin, open_link
from dari.protocol import frames

FORMAT_VERSION = 1
NEUTRAL_SNI = "www.example.com"
APP_HOLD_S = 1.0
FEATURES = {"chat": "message.send", "friends": "friend.add", "signup": "account.signup",
            "stories": "story.feed", "search": "message.search"}


@dataclass
class Stage:
    name: str
    ok: bool
    cls: str = "ok"
    elapsed_ms: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class RouteDiagnosis:
    route: str
    kind: str
    url: str
    ok: bool = False
    cls: str = "ok"
    stages: list[Stage] = field(default_factory=list)
    throughput_kbps: float | None = None

    @property
    def failed_stage(self) -> str:
        return next((s.name for s in self.stages if not s.ok), "")


@dataclass
class Diagnosis:
    started_at: float
    finished_at: float = 0.0
    region: str = "ZZ"
    asn: str = ""
    routes: list[RouteDiagnosis] = field(default_factory=list)
    features: dict[str, str] = field(default_factory=dict)
    verdict: str = "ok"
    working_routes: list[str] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Target:
    """What the client knows about the service: pinned addresses shipped in its config, the
    server's key pin, a neutral TLS name to compare with, and general-connectivity controls."""

    routes: list[Route]
    addresses: dict[str, list[str]] = field(default_factory=dict)   # hostname -> pinned addresses
    neutral_sni: str = NEUTRAL_SNI
    control_hosts: list[tuple[str, int]] = field(default_factory=list)
    resolver: str | None = None
    timeout: float = 4.0


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


async def probe_dns(host: str, target: Target) -> tuple[Stage, list[str]]:
    """Returns the stage and the addresses worth trying next (pinned ones when DNS lies)."""
    t0 = time.monotonic()
    pinned = target.addresses.get(host, [])
    loop = asyncio.get_running_loop()
    system: list[str] = []
    error = ""
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), target.timeout)
        system = sorted({str(i[4][0]) for i in infos})
    except (OSError, TimeoutError) as exc:
        error = str(exc) or type(exc).__name__
    raw = None
    resolver = target.resolver or dns.system_resolver()
    if resolver:
        raw = await dns.query(host, resolver, timeout=min(2.0, target.timeout))
    evidence: dict[str, Any] = {"system": system, "pinned": pinned}
    if raw is not None:
        evidence["raw_answers"] = raw.distinct_answers
        evidence["raw_responses"] = raw.responses
    if error:
        evidence["error"] = error
        return Stage("dns", False, "dns-failure", _ms(t0), evidence), pinned
    # A private answer alone proves nothing (company networks resolve to private addresses);
    # evidence is an injected second answer, or an answer outside the addresses we pinned.
    injected = raw is not None and len(raw.distinct_answers) > 1
    mismatch = bool(pinned) and not set(system) & set(pinned)
    if injected or mismatch:
        bogus = [a for a in system if dns.is_bogon(a) and a not in pinned]
        evidence["why"] = "two answers to one query" if injected else "answer differs from the pinned addresses"
        if bogus:
            evidence["bogon"] = bogus
        return Stage("dns", False, "dns-poison", _ms(t0), evidence), pinned or [
            a for a in system if not (raw and [a] in raw.distinct_answers[:1])]
    return Stage("dns", True, "ok", _ms(t0), evidence), system


async def probe_tcp(addr: str, port: int, timeout: float) -> Stage:
    t0 = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
        writer.close()
        return Stage("tcp", True, "ok", _ms(t0), {"address": addr})
    except TimeoutError:
        return Stage("tcp", False, "ip-blackhole", _ms(t0), {"address": addr, "error": "timeout"})
    except ConnectionRefusedError:
        return Stage("tcp", False, "tcp-reset", _ms(t0), {"address": addr, "error": "refused"})
    except ConnectionResetError:
        return Stage("tcp", False, "tcp-reset", _ms(t0), {"address": addr, "error": "reset"})
    except OSError as exc:
        unreachable = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        return Stage("tcp", False, "ip-blackhole" if unreachable else "tcp-reset", _ms(t0),
                     {"address": addr, "error": "unreachable" if unreachable else str(exc)})


async def _handshake(addr: str, port: int, sni: str, timeout: float) -> tuple[str, bytes | None]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(addr, port, ssl=ctx, server_hostname=sni),
                                           timeout)
    except TimeoutError:
        return "timeout", None
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return "reset", None
    except ssl.SSLError as exc:
        return f"tls-error: {exc.reason or exc}", None
    except OSError as exc:
        return f"error: {exc}", None
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return "ok", der


async def probe_tls(addr: str, port: int, route: Route, host: str, target: Target) -> Stage:
    """Neutral name first: a GFW-style penalty box triggered by the real name would otherwise make
    the neutral handshake fail too and hide the SNI filter."""
    t0 = time.monotonic()
    neutral, _ = await _handshake(addr, port, target.neutral_sni, target.timeout)
    neutral_ms = _ms(t0)
    real, der = await _handshake(addr, port, route.sni or host, target.timeout)
    evidence: dict[str, Any] = {"address": addr, "real_sni": route.sni or host, "real": real,
                                "neutral_sni": target.neutral_sni, "neutral": neutral}
    evidence["neutral_ms"] = neutral_ms
    if real != "ok":
        if neutral == "ok" and real == "timeout" and neutral_ms > 1000:
            # Both names crawl: a slow handshake timing out is throttling, not a name filter.
            return Stage("tls", False, "throttled", _ms(t0), evidence)
        if neutral == "ok":
            return Stage("tls", False, "sni-filter", _ms(t0), evidence)
        cls = "ip-blackhole" if real == "timeout" else "tcp-reset"
        return Stage("tls", False, cls, _ms(t0), evidence)
    if route.pin and der:
        from dari.server.tls import pin_of_der

        got = pin_of_der(der)
        if got != route.pin:
            evidence["pin_expected"], evidence["pin_got"] = route.pin, got
            return Stage("tls", False, "tls-interception", _ms(t0), evidence)
    return Stage("tls", True, "ok", _ms(t0), evidence)


def _ssl_for(route: Route) -> ssl.SSLContext | bool:
    if route.url.startswith(("https", "tls")):
        ctx = ssl.create_default_context()
        if route.pin or route.insecure_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return True


async def probe_http(route: Route, http: aiohttp.ClientSession, timeout: float) -> Stage:
    t0 = time.monotonic()
    try:
        async with http.get(f"{route.url}/healthz", ssl=_ssl_for(route), server_hostname=route.sni,
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if route.pin and resp.connection is not None and resp.connection.transport is not None:
                check_pin(route, resp.connection.transport.get_extra_info("ssl_object"))
            body = await resp.content.read(2048)
            status = resp.status
    except RouteFailure as exc:
        return Stage("http", False, "tls-interception", _ms(t0), {"error": exc.reason})
    except aiohttp.ClientSSLError as exc:
        return Stage("http", False, "tls-interception", _ms(t0), {"error": str(exc)})
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Stage("http", False, "http-filter", _ms(t0), {"error": str(exc) or type(exc).__name__})
    try:
        ours = status == 200 and "version" in msgspec.json.decode(body)
    except msgspec.DecodeError:
        ours = False
    if not ours:
        return Stage("http", False, "http-filter", _ms(t0), {"status": status, "body": body[:200].decode(
            "utf-8", "replace")})
    return Stage("http", True, "ok", _ms(t0), {"status": status})


async def probe_http_at(route: Route, host: str, addr: str, port: int, http: aiohttp.ClientSession,
                        timeout: float) -> Stage:
    """GET /healthz from a known address while naming the service in Host, as a browser would."""
    t0 = time.monotonic()
    url = f"http://{addr if ':' not in addr else f'[{addr}]'}:{port}/healthz"
    try:
        async with http.get(url, headers={"Host": f"{host}:{port}"},
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.content.read(2048)
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Stage("http", False, "http-filter", _ms(t0), {"address": addr, "error": str(exc) or type(exc).__name__})
    try:
        ours = status == 200 and "version" in msgspec.json.decode(body)
    except msgspec.DecodeError:
        ours = False
    if not ours:
        return Stage("http", False, "http-filter", _ms(t0), {"address": addr, "status": status})
    return Stage("http", True, "ok", _ms(t0), {"address": addr, "status": status})


async def probe_app(route: Route, http: aiohttp.ClientSession, timeout: float,
                    probe_bytes: int) -> tuple[Stage, float | None]:
    t0 = time.monotonic()
    try:
        link = await asyncio.wait_for(open_link(route, http), timeout * 2)
    except RouteFailure as exc:
        cls = {"http": "http-filter", "tls": "tls-interception"}.get(exc.stage, "dpi-reset")
        return Stage("app", False, cls, _ms(t0), {"stage": exc.stage, "error": exc.reason}), None
    except (TimeoutError, OSError) as exc:
        return Stage("app", False, "dpi-reset", _ms(t0), {"error": str(exc) or type(exc).__name__}), None
    try:
        await link.send(frames.encode_request(1, "server.info", {}))
        first = await asyncio.wait_for(link.recv(), timeout)
        if first is None:
            return Stage("app", False, "dpi-reset", _ms(t0), {"error": "stream closed after the first frame"}), None
        t1 = time.monotonic()
        await link.send(frames.encode_request(2, "reach.probe", {"bytes": probe_bytes}))
        data = await asyncio.wait_for(link.recv(), timeout * 3)
        if data is None:
            return Stage("app", False, "dpi-reset", _ms(t0), {"error": "stream killed mid-way"}), None
        kbps = len(data) * 8 / 1000 / max(time.monotonic() - t1, 1e-4)
        # Fingerprinting middleboxes let a stream start, then kill it once it looks like dari:
        # talk once more after a pause before calling the route healthy.
        await asyncio.sleep(APP_HOLD_S)
        await link.send(frames.encode_request(3, "session.ping", {}))
        late = await asyncio.wait_for(link.recv(), timeout)
        if late is None:
            return Stage("app", False, "dpi-reset", _ms(t0), {"error": f"stream killed after {APP_HOLD_S} s",
                                                              "probe_bytes": len(data)}), None
        return Stage("app", True, "ok", _ms(t0), {"probe_bytes": len(data)}), round(kbps, 1)
    except TimeoutError:
        return Stage("app", False, "throttled", _ms(t0), {"error": "no answer in time"}), None
    except Exception as exc:  # a route that breaks in any way is a finding
        return Stage("app", False, "dpi-reset", _ms(t0), {"error": str(exc) or type(exc).__name__}), None
    finally:
        with contextlib.suppress(Exception):
            await link.close()


async def diagnose_route(route: Route, target: Target, http: aiohttp.ClientSession,
                         probe_bytes: int = 131072) -> RouteDiagnosis:
    parts = urlsplit(route.url)
    host = parts.hostname or ""
    tls = parts.scheme in ("https", "tls")
    port = parts.port or (443 if tls else 80)
    rd = RouteDiagnosis(route.label, route.kind, route.url)
    if route.extra.get("socks"):
        # Through a proxy the local network only sees the proxy: go straight to the application.
        stage, kbps = await probe_app(route, http, target.timeout, probe_bytes)
        rd.stages.append(stage)
        rd.ok, rd.cls, rd.throughput_kbps = stage.ok, stage.cls, kbps
        return rd
    addresses = [host]
    dns_poisoned: Stage | None = None
    if not _is_ip(host):
        stage, addresses = await probe_dns(host, target)
        rd.stages.append(stage)
        if not stage.ok:
            if not addresses:
                return _failed(rd, stage)
            dns_poisoned = stage
    tcp = None
    for addr in addresses[:2]:
        tcp = await probe_tcp(addr, port, target.timeout)
        if tcp.ok:
            break
    assert tcp is not None
    rd.stages.append(tcp)
    if dns_poisoned is not None:
        # The route as configured (by name) is broken by the resolver; later stages would only
        # re-resolve the name and measure the forgery. Note whether the pinned addresses answer,
        # and whether HTTP naming the service is filtered too (LINE 2014: both at once).
        dns_poisoned.evidence["pinned_reachable"] = tcp.ok
        if tcp.ok and route.kind in ("ws", "longpoll") and not tls:
            http_stage = await probe_http_at(route, host, tcp.evidence["address"], port, http, target.timeout)
            rd.stages.append(http_stage)
        return _failed(rd, dns_poisoned)
    if not tcp.ok:
        return _failed(rd, tcp)
    addr = tcp.evidence["address"]
    if tls:
        stage = await probe_tls(addr, port, route, host, target)
        rd.stages.append(stage)
        if not stage.ok:
            return _failed(rd, stage)
    if route.kind in ("ws", "longpoll"):
        stage = await probe_http(route, http, target.timeout)
        rd.stages.append(stage)
        if not stage.ok:
            return _failed(rd, stage)
    stage, kbps = await probe_app(route, http, target.timeout, probe_bytes)
    slow_before = any(s.elapsed_ms > 800 for s in rd.stages)
    if not stage.ok and slow_before and "imeout" in str(stage.evidence.get("error", "")) + stage.cls:
        # Every earlier stage crawled and this one ran out of time: a throttled path, not a
        # middlebox that kills dari's stream.
        stage.cls = "throttled"
    rd.stages.append(stage)
    rd.throughput_kbps = kbps
    if not stage.ok:
        return _failed(rd, stage)
    rd.ok, rd.cls = True, "ok"
    return rd


def _failed(rd: RouteDiagnosis, stage: Stage) -> RouteDiagnosis:
    rd.ok, rd.cls = False, stage.cls
    return rd


async def probe_features(route: Route, http: aiohttp.ClientSession, timeout: float) -> dict[str, str]:
    """Call each feature's REST endpoint without credentials: dari answers every one with a JSON
    error; a reset, timeout or foreign page on some of them means those features are filtered."""
    out: dict[str, str] = {}
    for feature, method in FEATURES.items():
        try:
            async with http.post(f"{route.url}/api/v1/{method}", data=b"{}", ssl=_ssl_for(route),
                                 server_hostname=route.sni, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.content.read(2048)
            data = msgspec.json.decode(body)
            out[feature] = "ok" if isinstance(data, dict) and ("error" in data or "result" in data) else "filtered"
        except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError):
            out[feature] = "filtered"
    return out


async def diagnose(target: Target, region: str = "ZZ", asn: str = "", probe_bytes: int = 131072) -> Diagnosis:
    d = Diagnosis(started_at=time.time(), region=region, asn=asn)
    async with aiohttp.ClientSession() as http:
        d.routes = list(await asyncio.gather(*(diagnose_route(r, target, http, probe_bytes)
                                               for r in target.routes)))
        http_routes = [r for r, rd in zip(target.routes, d.routes, strict=True)
                       if r.kind in ("ws", "longpoll") and any(s.name == "http" and s.ok for s in rd.stages)]
        if http_routes:
            d.features = await probe_features(http_routes[0], http, target.timeout)
        controls = [await probe_tcp(h, p, target.timeout) for h, p in target.control_hosts]
    _throttle(d)
    filtered = [f for f, v in d.features.items() if v != "ok"]
    if filtered and d.features.get("chat") == "ok":
        for rd in d.routes:
            if rd.ok and rd.kind in ("ws", "longpoll"):
                rd.cls = "feature-block"
    d.working_routes = [rd.route for rd in d.routes if rd.ok]
    d.verdict = _verdict(d, controls)
    d.finished_at = time.time()
    return d


def _throttle(d: Diagnosis) -> None:
    speeds = [rd.throughput_kbps for rd in d.routes if rd.ok and rd.throughput_kbps]
    if len(speeds) < 2:
        return
    best = max(speeds)
    for rd in d.routes:
        # Both relative and absolute: a short probe on a fresh connection is noisy (slow start).
        if rd.ok and rd.throughput_kbps is not None and rd.throughput_kbps < best / 5 and rd.throughput_kbps < 500:
            rd.cls = "throttled"


def _verdict(d: Diagnosis, controls: list[Stage]) -> str:
    failing = [rd for rd in d.routes if rd.cls != "ok"]
    if not failing:
        return "ok"
    if not d.working_routes:
        classes = {rd.cls for rd in d.routes}
        if controls and not any(c.ok for c in controls):
            return "shutdown"
        direct = [rd for rd in d.routes if not rd.route.startswith("relay")]
        relays = [rd for rd in d.routes if rd.route.startswith("relay")]
        refused = bool(direct) and all(any(s.evidence.get("error") == "refused" for s in rd.stages) for rd in direct)
        # Our own host answers "nothing listens here" and relays are reachable but cannot reach it.
        relays_up = all(any(s.name == "tcp" and s.ok for s in rd.stages) for rd in relays)
        if refused and relays_up:
            return "server-down"
        if classes <= {"ip-blackhole", "dns-failure"} and len(d.routes) > 1:
            return "shutdown"
    # The preferred route's problem is the headline; the report lists every route.
    return failing[0].cls


def render(d: Diagnosis) -> str:
    lines = [f"verdict: {d.verdict}" + (f"   working: {', '.join(d.working_routes)}" if d.working_routes else
                                       "   no route works")]
    for rd in d.routes:
        mark = "ok " if rd.ok else "FAIL"
        speed = f"  {rd.throughput_kbps:.0f} kbit/s" if rd.throughput_kbps else ""
        lines.append(f"  [{mark}] {rd.route:<22} {rd.cls:<16}{speed}")
        for s in rd.stages:
            detail = ", ".join(f"{k}={v}" for k, v in s.evidence.items() if v not in ("", [], None))
            lines.append(f"         {s.name:<5} {'ok' if s.ok else s.cls:<16} {s.elapsed_ms:>7.1f} ms  {detail[:110]}")
    if d.features:
        lines.append("  features: " + ", ".join(f"{k}={v}" for k, v in d.features.items()))
    return "\n".join(lines)
