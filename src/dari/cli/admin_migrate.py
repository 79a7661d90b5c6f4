"""`dari admin migrate --from sqlite:PATH --to postgresql://...`: move a community to PostgreSQL.

Exit codes: 0 copied (or verified) and every table matches; 1 a table differs (--verify-only);
2 a clear error (source missing, target not empty, schema mismatch, unreachable database);
3 stopped early on purpose (--max-batches, tests), a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


def register(sub: Any) -> None:
    admin = _group(sub, "admin", "server operator commands")
    p = admin.add_parser(
        "migrate", help="copy this server's SQLite data into PostgreSQL (resumable, verified)",
        description="Copy every table of a dari SQLite database into PostgreSQL, in batches, resumably, then"
                    " compare per-table row counts and checksums. Safe while the server runs (one snapshot);"
                    " for the cut-over stop the server and run it again: it copies only what changed.")
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH", help="the SQLite database")
    p.add_argument("--to", dest="target", required=True, metavar="postgresql://...",
                   help="the PostgreSQL database (empty, or an earlier migrate of this source)")
    p.add_argument("--verify-only", action="store_true", help="only compare counts and checksums; change nothing")
    p.add_argument("--batch-size", type=int, default=2000, help="rows per INSERT batch and per verified chunk")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    # Tests: stop after this many batches, as if interrupted.
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_migrate)


def _group(sub: Any, name: str, help_: str) -> Any:
    """The subcommands of `dari NAME`, creating the group unless another module already did."""
    existing = sub.choices.get(name)
    if existing is not None and existing._subparsers is not None:
        return existing._subparsers._group_actions[0]
    return sub.add_parser(name, help=help_).add_subparsers(dest=f"{name}_sub", required=True)


def _migrate(args: argparse.Namespace) -> int:
    from dari.storage.migrate import Interrupted, MigrateError, run

    # The backend's own warnings (e.g. a failed connect) reach the operator as one clean error below.
    logging.getLogger("dari").addHandler(logging.NullHandler())
    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.batch_size < 1:
        print("dari admin migrate: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        report = run(args.source, args.target, batch=args.batch_size, verify_only=args.verify_only,
                     max_batches=args.max_batches, say=say)
    except MigrateError as exc:
        print(f"dari admin migrate: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"dari admin migrate: {exc}; rerun the same command to resume", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("dari admin migrate: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        rows = sum(t.source_rows for t in report.tables)
        if report.sequences:
            print("sequences: " + ", ".join(f"{n}.id next {v}" for n, v in report.sequences.items()))
        verdict = "every table matches" if report.ok else "MISMATCH: " + ", ".join(
            t.name for t in report.tables if not t.ok)
        print(f"{'verified' if report.verify_only else 'migrated'} {len(report.tables)} tables, {rows} rows"
              f" in {report.seconds:.1f}s: {verdict}")
    return 0 if report.ok else 1
