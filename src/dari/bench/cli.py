"""`dari bench`: argument parsing, the run, and the output (a rich table, or one JSON object)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

DESCRIPTION = """Run bounded load scenarios against a fresh local `dari serve` (one per scenario, on a temporary
data dir, cheap argon2 and raised rate limits) or against --server URL, and print the figures."""


def register(sub: Any) -> None:
    from dari.bench.scenarios import SCENARIOS

    p = sub.add_parser("bench", help="measure throughput, latency, connections and resumes",
                       description=DESCRIPTION)
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS), dest="scenarios", metavar="NAME",
                   help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--duration", type=float, help="seconds of measured load per timed scenario"
                   " (default 10 for dm-latency, 20 for dm-throughput and group-fanout)")
    p.add_argument("--users", type=int, help="users for dm-throughput and reconnect-storm (default 1000); "
                   "group-fanout makes users/50 groups; accounts behind idle-connections")
    p.add_argument("--connections", type=int, help="idle-connections: how many (default 10000)")
    p.add_argument("--window", type=int, default=1, help="messages in flight per sender (default 1)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="offered messages/s over all senders (default 0: as fast as the window allows)")
    p.add_argument("--quick", action="store_true", help="small, few-second versions of every scenario (CI)")
    p.add_argument("--server", metavar="URL", help="bench a running server instead of starting one")
    p.add_argument("--server-pid", type=int, help="with --server: its PID, to report its CPU and memory")
    p.add_argument("--bind", metavar="ADDR", help="source address of the load generator's connections (e.g."
                   " 127.0.0.2: each loopback address has its own ~28,000 ephemeral ports)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--e2ee", action="store_true", help="dm-throughput: end-to-end encrypted chats, every message"
                   " encrypted by its sender and decrypted by its receiver with the SDK's core")
    p.add_argument("suite", nargs="?", choices=["failover", "detect", "web", "media", "calls"],
                   help="failover: time from a route cut (reset or blackhole) to the first message through the"
                        " next route, over --cuts repeated cuts; detect (root): in the censorship lab, time from a"
                        " block to the first message through a fallback and to the incident opening; web: the web"
                        " client in Chromium with a --messages long chat (open time, scrolling, DOM size, JS heap);"
                        " media: HTTP and WebSocket upload MB/s, HTTP download MB/s (whole and Range) and"
                        " thumbnails/s, with an integrity check; calls: call setup time (call.start to first"
                        " audio) direct and relay-only via TURN-TCP through coturn, with aiortc")
    p.add_argument("--lab", action="store_true", help="calls: also from a censored region that drops UDP, in the"
                                                        " censorship lab (root)")
    p.add_argument("--runs", type=int, default=1, help="detect: runs per scenario (default 1); calls: calls per"
                                                       " path (default 50, --quick 5)")
    p.add_argument("--lab-scenario", action="append", dest="lab_scenarios", metavar="NAME",
                   help="detect: only this lab scenario (repeatable)")
    p.add_argument("--cuts", type=int, default=10, help="failover: how many cuts of each kind (default 10)")
    p.add_argument("--messages", type=int, help="web: messages in the chat (default 10000, --quick 1000)")
    p.add_argument("--opens", type=int, help="web: opens of each kind (cold, cold with cache, warm; default 7,"
                                             " --quick 3)")
    p.set_defaults(func=_main)


def _failover(args: argparse.Namespace) -> int:
    from dari.bench.failover import run_failover
    from dari.bench.machine import machine_info

    report = asyncio.run(run_failover(cuts=max(1, 3 if args.quick else args.cuts), server_url=args.server))
    report["machine"] = machine_info()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="dari bench failover: route cut -> first message through the next route")
        for col in ("cut", "cuts", "p50 ms", "p99 ms", "max ms", "lost", "duplicated", "stall s"):
            table.add_column(col, justify="right" if col != "cut" else "left")
        for r in report["scenarios"].values():
            table.add_row(r["mode"], str(r["cuts"]), _fmt(r["p50_ms"]), _fmt(r["p99_ms"]), _fmt(r["max_ms"]),
                          str(r["lost"]), str(r["duplicated"]), _fmt(r["stall_s"]))
        Console().print(table)
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in report["scenarios"].values()) else 1


def _detect(args: argparse.Namespace) -> int:
    from dari.bench.detect import run_detect
    from dari.bench.machine import machine_info
    from dari.lab.netns import missing_features

    missing = missing_features()
    if missing:
        print("dari bench detect needs the censorship lab (root, netns, nftables, tc): " + "; ".join(missing),
              file=sys.stderr)
        return 2
    report = asyncio.run(run_detect(args.lab_scenarios, max(1, args.runs)))
    report["machine"] = machine_info()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="dari bench detect: block start -> fallback delivery and incident (p50)")
        for col in ("scenario", "runs", "first message via fallback s", "incident opened s", "fallback route"):
            table.add_column(col, justify="left" if col in ("scenario", "fallback route") else "right")
        for name, r in report["scenarios"].items():
            table.add_row(name, str(r["runs"]), _fmt(r["fallback_p50_s"]), _fmt(r["incident_p50_s"]),
                          str(r["fallback_route"]))
        Console().print(table)
    return 0


def _web(args: argparse.Namespace) -> int:
    from dari.bench.machine import machine_info
    from dari.bench.web import BrowserMissing, run_web

    messages = args.messages or (1000 if args.quick else 10_000)
    opens = args.opens or (3 if args.quick else 7)
    try:
        report = asyncio.run(run_web(max(1, messages), max(1, opens), server_url=args.server))
    except BrowserMissing as exc:
        print(f"dari bench web: {exc}", file=sys.stderr)
        return 2
    report["machine"] = machine_info()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _web_table(report)
    ok = report["last_visible"] and report["scroll_up"]["reached_beginning"] and report["scroll_down"]["reached_last"]
    return 0 if ok else 1


def _web_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dari bench web: a 1:1 chat with {r['messages']:,} messages in Chromium")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, title in (("open_cold_ms", "open, cold (reload, no timeline cache)"),
                       ("open_cold_cached_ms", "open, cold (reload, timeline cache)"),
                       ("open_warm_ms", "open, warm (switch back)")):
        o = r[key]
        table.add_row(f"{title}: p50 / p99 ms", f"{_fmt(o['p50_ms'])} / {_fmt(o['p99_ms'])}")
    for key, title in (("scroll_up", "scroll up to the beginning"), ("scroll_down", "scroll back down")):
        s = r[key]
        table.add_row(f"{title}: ms", _fmt(s["ms"]))
        table.add_row(f"{title}: fps / longest frame ms", f"{_fmt(s['fps'])} / {_fmt(s['max_frame_ms'])}")
        table.add_row(f"{title}: long tasks (total ms)", f"{s['long_tasks']} ({_fmt(s['long_task_ms'])})")
    dom, heap = r["dom"], r["heap_mb"]
    for key, title in (("before", "before scrolling"), ("at_beginning", "at the beginning"), ("after", "back down")):
        table.add_row(f"{title}: rows / list elements / cached messages",
                      f"{dom[key]['rows']} / {dom[key]['list_elements']:,} / {dom[key]['cached_messages']:,}")
        table.add_row(f"{title}: JS heap MB (after GC)", _fmt(heap[key]))
    table.add_row("most rows in the DOM while scrolling (window)",
                  f"{dom['max_rows_during_scroll']} (MAX_RENDERED {r['max_rendered']})")
    console = Console()
    console.print(table)
    console.print(f"setup {r['setup_s']} s ({_fmt(r['fill_messages_per_s'])} messages/s); load average"
                  f" {r['load_avg']['before']} -> {r['load_avg']['after']}; page errors: {len(r['page_errors'])}")


def _main(args: argparse.Namespace) -> int:
    if args.suite == "web":
        return _web(args)
    if args.suite == "failover":
        return _failover(args)
    if args.suite == "detect":
        return _detect(args)
    if args.suite == "calls":
        from dari.bench.calls import main as calls_main

        return calls_main(args)
    if args.suite == "media":
        from dari.bench.media import main as media_main

        return media_main(args)
    from dari.bench.machine import machine_info
    from dari.bench.runner import Config, run_bench
    from dari.bench.scenarios import SCENARIOS, SERVER_ENV

    cfg = Config(scenarios=args.scenarios or list(SCENARIOS), quick=args.quick, duration=args.duration,
                 users=args.users, connections=args.connections, window=max(1, args.window),
                 rate=max(0.0, args.rate), server=args.server, server_pid=args.server_pid,
                 bind=args.bind, e2ee=args.e2ee)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run_bench(cfg, SCENARIOS, SERVER_ENV))
    report = {"scenarios": results, "machine": machine_info(),
              "options": {"quick": cfg.quick, "duration": cfg.duration, "users": cfg.users,
                          "connections": cfg.connections, "window": cfg.window, "rate": cfg.rate, "e2ee": cfg.e2ee,
                          "server": cfg.server or "local"}}
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _table(results)
    return 1 if any("error" in r for r in results.values()) else 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(results: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = [("messages/s (durable acks)", "messages_per_s"), ("deliveries/s", "deliveries_per_s"),
            ("resumes/s", "resumes_per_s"), ("connections", "connections"),
            ("server RSS KB / connection", "rss_kb_per_connection"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
            ("ack p50 ms", "ack_p50_ms"), ("ack p99 ms", "ack_p99_ms"), ("lost", "lost"),
            ("duplicated", "duplicated"), ("server CPU %", "server_cpu_pct"), ("server RSS MB", "server_rss_mb"),
            ("load generator CPU %", "client_cpu_pct")]
    table = Table(title="dari bench")
    table.add_column("figure")
    for name in results:
        table.add_column(name, justify="right")
    for title, key in rows:
        table.add_row(title, *(_fmt(r.get(key)) for r in results.values()))
    console = Console()
    console.print(table)
    for name, r in results.items():
        if "error" in r:
            console.print(f"[red]{name}: {r['error']}[/red]")
    console.print("p50/p99: send→deliver; for reconnect-storm, connect→live with full catch-up."
                  " CPU % is of one core. --json shows every figure.")
