"""The `dari` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from dari import __version__


def _serve(args: argparse.Namespace) -> int:
    from dari.config import load_settings
    from dari.logs import setup_logging
    from dari.server.app import run_server
    from dari.services.geoip import GeoIP

    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "database": args.database,
                 "bus": args.bus, "workers": args.workers,
                 "stream_port": args.stream_port, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
                 "tls_self_signed": True if args.tls_self_signed else None,
                 "demo": True if args.demo else None, "log_level": args.log_level,
                 "log_json": True if args.log_json else None}
    try:
        settings = load_settings(args.config, overrides)
        GeoIP.from_settings(settings)   # a configured database that is missing or not an MMDB stops here
    except (OSError, ValueError) as exc:
        print(f"dari serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    if settings.workers > 1 and settings.bus in ("", "memory", "memory://"):
        print("dari serve: --workers needs a shared bus: add --bus redis://127.0.0.1:6379/0", file=sys.stderr)
        return 2
    if settings.workers > 1 and "DARI_WORKER_INDEX" not in os.environ:
        from dari.server.workers import run_workers

        argv = list(sys.argv[sys.argv.index("serve") + 1:]) if "serve" in sys.argv else []
        argv = [a for i, a in enumerate(argv) if a != "--workers" and (i == 0 or argv[i - 1] != "--workers")
                and not a.startswith("--workers=")]
        return run_workers(argv, settings.workers)
    _install_uvloop()
    asyncio.run(run_server(settings))
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dari", description="dari messenger")
    parser.add_argument("--version", action="version", version=f"dari {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML settings file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", dest="data_dir")
    serve.add_argument("--database", help="sqlite:PATH (default) or postgresql://...")
    serve.add_argument("--bus", help="memory (default) or redis://HOST:PORT/DB for several processes")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (needs --bus redis://)")
    serve.add_argument("--demo", action="store_true", help="create demo accounts, a group and history")
    serve.add_argument("--stream-port", dest="stream_port", type=int,
                       help="also serve length-prefixed frames on this port (TLS when a certificate is set)")
    serve.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain (serve HTTPS/WSS)")
    serve.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    serve.add_argument("--tls-self-signed", dest="tls_self_signed", action="store_true",
                       help="make and use a self-signed certificate (tests and demos)")
    serve.add_argument("--log-level", dest="log_level")
    serve.add_argument("--log-json", dest="log_json", action="store_true")
    serve.set_defaults(func=_serve)
    # Each command group registers itself; keeps this file small and lets them grow independently.
    for module in ("dari.cli.commands", "dari.cli.diagnose_cmd", "dari.bench.cli", "dari.relay.cli", "dari.lab.cli",
                   "dari.cli.content_cmd", "dari.cli.board_cmd", "dari.cli.admin_migrate", "dari.cli.call_cmd"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError as exc:
            # An optional part that is not installed is skipped; a broken import inside it is not.
            if exc.name is None or not module.startswith(exc.name):
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
