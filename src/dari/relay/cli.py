"""`dari relay` (run a relay, share one) and `dari admin relay` (the server operator's relay list)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from dari.relay.descriptor import Descriptor, DescriptorError, to_link


def _rate(text: str) -> float:
    """Bytes per second, with an optional K/M/G suffix (powers of 1024)."""
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    try:
        return float(text[:-1] if mult > 1 else text) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (bytes/s, e.g. 512K or 2M)") from None


def register(sub: Any) -> None:
    p = sub.add_parser("relay", help="run a relay that forwards encrypted client streams to the server",
                       description="Forward client connections to a dari server without decrypting them.")
    p.add_argument("--upstream", help="the server's TLS stream port, HOST:PORT")
    p.add_argument("--listen", help="where clients connect for the stream, HOST:PORT")
    p.add_argument("--https-upstream", help="the server's HTTPS port, for WebSocket and long-poll clients")
    p.add_argument("--https-listen", help="where those clients connect, HOST:PORT")
    p.add_argument("--terminate-tls", action="store_true",
                   help="browsers: accept TLS on --https-listen with this relay's own certificate and open a "
                        "new TLS session to the server. Such a relay SEES FRAMES (see docs/operations.md)")
    p.add_argument("--tls-cert", help="certificate for --terminate-tls (default: a self-signed one in --state)")
    p.add_argument("--tls-key", help="key for --tls-cert")
    p.add_argument("--upstream-pin", help="with --terminate-tls: the server key pin (sha256/...) to check")
    p.add_argument("--max-connections", type=int, default=1000)
    p.add_argument("--rate", type=_rate, default=0.0, help="per-connection bandwidth, bytes/s (e.g. 256K); 0: off")
    p.add_argument("--total-rate", type=_rate, default=0.0, help="bandwidth over all connections, bytes/s; 0: off")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="close connections silent this long (s)")
    p.add_argument("--admin", help="HOST:PORT for GET /healthz, /metrics and /obfs4 (keep it private)")
    p.add_argument("--obfs4", help="also accept obfs4 on HOST:PORT (runs obfs4proxy as a managed transport)")
    p.add_argument("--state", default="dari-relay", help="state dir (obfs4 keys, self-signed certificate)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_run)
    rs = p.add_subparsers(dest="relay_sub")
    share = rs.add_parser("share", help="print a relay's invite link and its QR code")
    share.add_argument("relay_id", nargs="?", help="relay id from `dari admin relay list`")
    share.add_argument("--data-dir", default="dari-data", help="the server's data dir (holds the signing key)")
    share.add_argument("--link", help="print the QR code of this dari://relay?d=... link instead")
    share.add_argument("--no-qr", action="store_true")
    share.set_defaults(func=_share)

    admin = _subgroup(sub, "admin", "server operator commands")
    ra = admin.add_parser("relay", help="the relays this server vouches for").add_subparsers(
        dest="admin_relay_sub", required=True)
    add = ra.add_parser("add", help="issue a signed descriptor for a relay")
    add.add_argument("--address", action="append", required=True, help="HOST:PORT clients dial (repeatable)")
    add.add_argument("--kind", choices=["stream", "obfs4", "https"], default="stream")
    add.add_argument("--sni", help="TLS server name clients send through this relay (a neutral name)")
    add.add_argument("--pin", help="the server's key pin (default: read from --tls-cert or DATA_DIR/tls/cert.pem)")
    add.add_argument("--tls-cert", help="the server's certificate, to compute the pin from")
    add.add_argument("--obfs4-cert", help="the relay's obfs4 cert (from its GET /obfs4 or bridge line)")
    add.add_argument("--obfs4-state", help="or the relay's --state dir, to read the cert from")
    add.add_argument("--iat-mode", type=int, default=None)
    add.add_argument("--days", type=float, default=30.0, help="descriptor lifetime")
    add.add_argument("--id", dest="relay_id", help="relay id (default: random)")
    lst = ra.add_parser("list", help="relays and their descriptors' expiry")
    rev = ra.add_parser("revoke", help="withdraw a relay: clients drop it at their next refresh")
    rev.add_argument("relay_id")
    rot = ra.add_parser("rotate", help="re-issue a relay's descriptor (new serial and expiry; old one revoked)")
    rot.add_argument("relay_id")
    rot.add_argument("--days", type=float)
    rot.add_argument("--address", action="append")
    rot.add_argument("--sni")
    rot.add_argument("--pin")
    for q in (add, lst, rev, rot):
        q.add_argument("--data-dir", default="dari-data", help="the server's data dir")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=_admin)


def _subgroup(sub: Any, name: str, help_: str) -> Any:
    """The subcommands of `dari NAME`, creating the group unless another module already did."""
    existing = sub.choices.get(name)
    if existing is not None and existing._subparsers is not None:
        return existing._subparsers._group_actions[0]
    return sub.add_parser(name, help=help_).add_subparsers(dest=f"{name}_sub", required=True)


# -- dari relay ----------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from dari.logs import setup_logging

    if not args.upstream and not args.https_upstream:
        print("dari relay: give --upstream HOST:PORT (the server's TLS stream port) and/or --https-upstream",
              file=sys.stderr)
        return 2
    setup_logging(args.log_level, False)
    try:
        return asyncio.run(_serve(args))
    except (ValueError, OSError) as exc:
        print(f"dari relay: {exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace) -> int:
    from dari.relay.admin import Admin
    from dari.relay.forward import Listener, Relay, RelayConfig, parse_address
    from dari.relay.pt import PTError

    listeners: list[Listener] = []
    if args.upstream:
        listen = args.listen or ("127.0.0.1:0" if args.obfs4 else None)
        if not listen:
            raise ValueError("--upstream needs --listen (or --obfs4 for an obfs4-only relay)")
        listeners.append(Listener("stream", parse_address(listen), parse_address(args.upstream)))
    if args.https_upstream:
        if not args.https_listen:
            raise ValueError("--https-upstream needs --https-listen")
        lst = Listener("https", parse_address(args.https_listen), parse_address(args.https_upstream))
        if args.terminate_tls:
            _terminating(lst, args)
        listeners.append(lst)
    relay = await Relay(RelayConfig(listeners, args.max_connections, args.rate, args.total_rate,
                                    args.idle_timeout)).start()
    pt = None
    obfs4: dict[str, Any] | None = None
    if args.obfs4:
        if not args.upstream:
            raise ValueError("--obfs4 forwards into the stream listener: give --upstream too")
        from dari.relay.obfs4 import start_server

        host = listeners[0].listen[0]
        orport = f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{relay.port(0)}"
        try:
            pt, cert, iat = await start_server(args.obfs4, orport, os.path.join(args.state, "obfs4"))
        except PTError as exc:
            await relay.close()
            print(f"dari relay: obfs4: {exc}", file=sys.stderr)
            return 1
        obfs4 = {"address": pt.method("obfs4").address, "cert": cert, "iat_mode": iat}
    admin = None
    if args.admin:
        admin = Admin(relay, obfs4)
        await admin.start(*parse_address(args.admin))
    ready = {"listen": {lst.name: f"{lst.listen[0]}:{relay.port(i)}" for i, lst in enumerate(listeners)},
             "obfs4": obfs4, "admin": args.admin}
    print(json.dumps({"relay": "ready", **ready}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if pt is not None:
        await pt.close()
    if admin is not None:
        await admin.close()
    await relay.close()
    return 0


def _terminating(lst: Any, args: argparse.Namespace) -> None:
    import ssl

    from dari.server.tls import self_signed, server_context

    cert, key = args.tls_cert, args.tls_key
    if not cert:
        cert, key = self_signed(os.path.join(args.state, "tls"))
    lst.terminate = server_context(cert, key)
    up = ssl.create_default_context()
    if args.upstream_pin:
        up.check_hostname = False
        up.verify_mode = ssl.CERT_NONE   # the pin, checked after the handshake, replaces CA checks
    lst.upstream_tls, lst.upstream_pin = up, args.upstream_pin


# -- dari relay share ----------------------------------------------------------------------------
def _share(args: argparse.Namespace) -> int:
    if args.link:
        link = args.link.strip()
    elif args.relay_id:
        from dari.relay.registry import RelayRegistry

        try:
            link = to_link(RelayRegistry(args.data_dir).get(args.relay_id))
        except KeyError:
            print(f"dari relay share: no relay {args.relay_id} in {args.data_dir}", file=sys.stderr)
            return 1
    else:
        print("dari relay share: give a relay id (with --data-dir) or --link", file=sys.stderr)
        return 2
    print(link)
    if not args.no_qr:
        try:
            import segno
        except ImportError:
            print("(install segno to see the QR code: pip install segno)", file=sys.stderr)
            return 0
        segno.make(link, error="l").terminal(out=sys.stdout, compact=True)
    return 0


# -- dari admin relay ----------------------------------------------------------------------------
def _row(d: Descriptor, blob: str) -> dict[str, Any]:
    return {"id": d.id, "kind": d.kind, "addresses": d.addresses, "sni": d.sni, "serial": d.serial,
            "issued": d.issued, "expires": d.expires, "expired": d.expires <= time.time(), "link": to_link(blob)}


def _admin(args: argparse.Namespace) -> int:
    from dari.relay.registry import RelayRegistry

    reg = RelayRegistry(args.data_dir)
    sub = args.admin_relay_sub
    try:
        if sub == "add":
            d, blob = reg.add(**_add_fields(args))
            out: Any = _row(d, blob)
        elif sub == "rotate":
            d, blob = reg.rotate(args.relay_id, days=args.days, addresses=args.address, sni=args.sni, pin=args.pin)
            out = _row(d, blob)
        elif sub == "revoke":
            reg.revoke(args.relay_id)
            out = {"revoked": args.relay_id}
        else:
            out = {"key": reg.public_key(), "relays": [_row(d, b) for d, b in reg.entries()]}
    except KeyError as exc:
        print(f"dari admin relay {sub}: no relay {exc.args[0]} in {args.data_dir}", file=sys.stderr)
        return 1
    except (ValueError, OSError, DescriptorError) as exc:
        print(f"dari admin relay {sub}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out))
    elif sub == "list":
        print(f"server signing key {out['key']}")
        for r in out["relays"]:
            state = "EXPIRED" if r["expired"] else "expires " + time.strftime("%Y-%m-%d", time.gmtime(r["expires"]))
            print(f"{r['id']:<14} {r['kind']:<7} {','.join(r['addresses']):<30} sni={r['sni'] or '-'} {state}")
    elif sub == "revoke":
        print(f"revoked {args.relay_id}; clients drop it at their next relay.list")
    else:
        print(f"{out['id']}: {out['kind']} relay at {', '.join(out['addresses'])}, expires "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(out['expires']))}")
        print(out["link"])
    return 0


def _add_fields(args: argparse.Namespace) -> dict[str, Any]:
    from dari.server.tls import pin_of_pem_file

    pin = args.pin
    if not pin:
        cert = args.tls_cert or os.path.join(args.data_dir, "tls", "cert.pem")
        if not os.path.exists(cert):
            raise ValueError("no server pin: give --pin sha256/... or --tls-cert (relays need TLS end to end)")
        pin = pin_of_pem_file(cert)
    cert_text, iat = args.obfs4_cert, args.iat_mode
    if args.obfs4_state:
        from dari.relay.obfs4 import bridge_cert

        cert_text, state_iat = bridge_cert(os.path.join(args.obfs4_state, "obfs4"))
        iat = state_iat if iat is None else iat
    if args.kind == "obfs4" and not cert_text:
        raise ValueError("an obfs4 relay needs --obfs4-cert or --obfs4-state")
    return {"addresses": args.address, "pin": pin, "kind": args.kind, "sni": args.sni, "obfs4_cert": cert_text,
            "iat_mode": iat or 0, "days": args.days, "relay_id": args.relay_id}
