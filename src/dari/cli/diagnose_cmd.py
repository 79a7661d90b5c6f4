"""`dari diagnose`: probe every route to a server stage by stage and say why one fails."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

from dari.client.diagnose import NEUTRAL_SNI, Diagnosis, Target, diagnose, render
from dari.client.links import Route


def _routes(args: argparse.Namespace) -> list[Route]:
    if args.route:
        out = []
        for spec in args.route:
            kind, _, url = spec.partition("=")
            if kind not in ("ws", "longpoll", "stream") or not url:
                raise ValueError(f"--route wants KIND=URL with KIND ws, longpoll or stream, not {spec!r}")
            out.append(Route(kind, url.rstrip("/"), name=f"{kind}:{urlsplit(url).netloc}", pin=args.pin,
                             insecure_tls=args.insecure))
        return out
    base = args.server.rstrip("/")
    routes = [Route("ws", base, name="websocket", pin=args.pin, insecure_tls=args.insecure),
              Route("longpoll", base, name="long-poll", pin=args.pin, insecure_tls=args.insecure)]
    if args.stream_port:
        host = urlsplit(base).hostname
        scheme = "tls" if base.startswith("https") else "tcp"
        routes.append(Route("stream", f"{scheme}://{host}:{args.stream_port}",
                            name="tls-stream" if scheme == "tls" else "stream", pin=args.pin,
                            insecure_tls=args.insecure))
    return routes


def _run(args: argparse.Namespace) -> int:
    try:
        routes = _routes(args)
        pinned: dict[str, list[str]] = {}
        for spec in args.address or []:
            host, _, ip = spec.partition("=")
            pinned.setdefault(host, []).append(ip)
        controls = []
        for spec in args.control or []:
            host, _, port = spec.rpartition(":")
            controls.append((host, int(port)))
    except ValueError as exc:
        print(f"error [invalid_params]: {exc}", file=sys.stderr)
        return 2
    target = Target(routes, pinned, args.neutral_sni, controls, args.resolver, args.timeout)
    result = asyncio.run(diagnose(target, args.region, args.asn))
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        print(render(result))
    if args.report and result.working_routes:
        asyncio.run(_report(routes, result, args))
    return 0 if result.verdict == "ok" else 1


async def _report(routes: list[Route], result: Diagnosis, args: argparse.Namespace) -> None:
    from dari.client import Client
    from dari.client.reach_reports import ReportQueue

    queue = ReportQueue(region=args.region, asn=args.asn)
    queue.add_diagnosis(result)
    client = Client(routes[0].url, routes=routes, reconnect=False)
    try:
        sent = await queue.flush(lambda method, **params: client.call(method, **params))
        print(f"reported {sent} samples through {client.route}", file=sys.stderr)
    finally:
        await client.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="find out why a route to the server fails (blocking diagnosis)",
                       description="Probe DNS, TCP, TLS, HTTP, the dari protocol and throughput on every route "
                                   "and classify failures (dns-poison, sni-filter, ip-blackhole, ...).")
    p.add_argument("--server", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--route", action="append", help="KIND=URL (ws, longpoll, stream); repeatable")
    p.add_argument("--stream-port", type=int, help="also probe the frame stream on this port")
    p.add_argument("--address", action="append", help="HOST=IP: a pinned address for a name; repeatable")
    p.add_argument("--pin", help="the server's key pin (sha256/...)")
    p.add_argument("--insecure", action="store_true", help="accept any certificate (self-signed test servers)")
    p.add_argument("--neutral-sni", default=NEUTRAL_SNI, help="TLS name to compare with the real one")
    p.add_argument("--control", action="append", help="HOST:PORT of a neutral site to tell a shutdown")
    p.add_argument("--resolver", help="DNS server to query directly (default: the system's)")
    p.add_argument("--region", default="ZZ", help="country code to report")
    p.add_argument("--asn", default="", help="network (ASxxxx) to report")
    p.add_argument("--timeout", type=float, default=4.0)
    p.add_argument("--report", action="store_true", help="send the result to the server by a working route")
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.set_defaults(func=_run)
