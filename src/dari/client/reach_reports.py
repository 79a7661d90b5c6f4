"""Queue of reachability reports: written to disk when a route succeeds or fails, sent through
whichever route works next (relays included), without any account id."""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from dari.client.diagnose import Diagnosis
from dari.protocol.errors import DariError

MAX_QUEUED = 5000
BATCH = 100
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.:@/+-]+")


def route_label(name: str) -> str:
    """A route's name as the server's report schema takes it: relay routes are named for people
    ("relay-ws r-seoul #2"), reports need one token ("relay-ws:r-seoul:2")."""
    return _NOT_LABEL.sub(":", name).strip(":")[:64] or "unknown"


class ReportQueue:
    def __init__(self, path: str = ":memory:", region: str = "ZZ", asn: str = "") -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS samples (n INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT)")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'reporter'").fetchone()
        if row is None:
            # A random id per install: lets the server count distinct reporters, names nobody.
            self.reporter = secrets.token_urlsafe(12)
            self.db.execute("INSERT INTO meta VALUES ('reporter', ?)", (self.reporter,))
        else:
            self.reporter = row[0]
        self.region, self.asn = region, asn

    def add(self, route: str, ok: bool, stage: str = "", cls: str = "ok", elapsed_ms: float = 0,
            evidence: dict[str, Any] | None = None, at: float | None = None) -> None:
        sample = {"at": int((at or time.time()) * 1000), "route": route_label(route), "ok": ok, "stage": stage[:16],
                  "class": cls if not ok else "ok", "elapsed_ms": int(elapsed_ms),
                  "evidence": {k: v for k, v in list((evidence or {}).items())[:16]
                               if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 200)}}
        self.db.execute("INSERT INTO samples (body) VALUES (?)", (msgspec.json.encode(sample).decode(),))
        self.db.execute("DELETE FROM samples WHERE n <= (SELECT max(n) FROM samples) - ?", (MAX_QUEUED,))

    def add_diagnosis(self, d: Diagnosis) -> None:
        for rd in d.routes:
            failed = next((s for s in rd.stages if not s.ok), None)
            evidence = dict(list(failed.evidence.items())[:8]) if failed else {}
            cls = rd.cls if (not rd.ok or rd.cls in ("throttled", "feature-block")) else "ok"
            self.add(rd.route, rd.ok and cls == "ok", failed.name if failed else "", cls,
                     sum(s.elapsed_ms for s in rd.stages), {k: str(v)[:200] for k, v in evidence.items()})

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM samples").fetchone()[0])

    async def flush(self, call: Callable[..., Awaitable[Any]]) -> int:
        """Send everything queued with `call("reach.report", ...)`; keep what could not be sent."""
        sent = 0
        while True:
            rows = self.db.execute("SELECT n, body FROM samples ORDER BY n LIMIT ?", (BATCH,)).fetchall()
            if not rows:
                return sent
            try:
                await call("reach.report", reporter=self.reporter, region=self.region, asn=self.asn,
                           samples=[msgspec.json.decode(b) for _, b in rows])
            except DariError as e:
                if e.retryable:
                    raise
                # A batch the server refuses will be refused again: drop it rather than stall every
                # later report behind it.
                self.db.execute("DELETE FROM samples WHERE n <= ?", (rows[-1][0],))
                continue
            self.db.execute("DELETE FROM samples WHERE n <= ?", (rows[-1][0],))
            sent += len(rows)

    def close(self) -> None:
        self.db.close()
