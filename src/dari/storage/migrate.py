"""Copy a community's SQLite database into PostgreSQL (`dari admin migrate`).

How it stays correct:

* The target's schema comes from the normal backend start (`PostgresDatabase.start()` applies the
  migrations), then both sides must be at the same schema versions with the same columns.
* The source is read in ONE read transaction: with SQLite's WAL that is a snapshot, so a copy
  taken while `dari serve` keeps writing is consistent (every table as of one instant).
* Tables are handled one at a time in creation order (parents before children, so foreign keys
  hold): first the tail is copied, batches of rows past the last copied primary key, each batch
  committed together with that key in the target's `meta` (`migrate.progress.<table>`). An
  interrupted run (Ctrl-C, kill -9, a lost connection) therefore resumes where it stopped.
* Then the table is verified chunk by chunk in primary-key order against the same snapshot:
  rows, counts and a SHA-256 over the rows on both sides. A rerun after the source changed (rows
  updated or deleted behind the copied key, new rows with lower composite keys) repairs the
  differing chunks row by row (upsert the changed, delete the vanished) and verifies them again.
* Sequences are reset past the copied ids (`setval`), so new rows do not collide.

Text keys are ordered with `COLLATE "C"` on PostgreSQL: byte order, the same as SQLite's BINARY.
SQLite-only tables (the FTS index, sqlite_sequence) are not copied; PostgreSQL searches
messages.text through pg_trgm. Keys of the target's meta table starting with `migrate.` belong to
this tool and are neither copied nor compared.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dari.storage import migrations

BATCH = 2000
RESERVED = "migrate."
PROGRESS = "migrate.progress."
SQLITE_ONLY = ("message_fts", "sqlite_sequence", "schema_migrations")

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
Row = tuple[Any, ...]
Key = list[Any]


class MigrateError(Exception):
    """A problem the operator can fix; the CLI prints it without a traceback."""


class Interrupted(Exception):
    """Stopped early on purpose (--max-batches); a rerun continues."""


@dataclass
class Table:
    name: str
    columns: list[str]
    key: list[str]
    text_key: set[str]
    serial: bool          # an integer `id` primary key backed by a PostgreSQL sequence
    filter_sql: str = ""  # rows of this table that are not copied (the tool's own meta keys)


@dataclass
class TableReport:
    name: str
    source_rows: int = 0
    target_rows: int = 0
    source_sha256: str = ""
    target_sha256: str = ""
    copied: int = 0
    repaired: int = 0
    resumed_after: Key | None = None

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sha256 == self.target_sha256


@dataclass
class Report:
    source: str
    target: str
    versions: list[int]
    tables: list[TableReport] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    verify_only: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "versions": self.versions, "ok": self.ok,
                "resumed": self.resumed, "verify_only": self.verify_only, "seconds": round(self.seconds, 3),
                "sequences": self.sequences,
                "tables": [{"name": t.name, "source_rows": t.source_rows, "target_rows": t.target_rows,
                            "source_sha256": t.source_sha256, "target_sha256": t.target_sha256,
                            "copied": t.copied, "repaired": t.repaired, "resumed_after": t.resumed_after,
                            "ok": t.ok} for t in self.tables]}


# -- inputs ---------------------------------------------------------------------------------------

def parse_source(text: str) -> str:
    """`sqlite:PATH` or a plain path to the source database file."""
    if text.startswith(("postgresql:", "postgres:")):
        raise MigrateError(f"--from must be the SQLite database (sqlite:PATH), not {text.split('@')[-1]!r}")
    if "://" in text:
        raise MigrateError(f"--from {text!r}: expected sqlite:PATH (e.g. sqlite:dari-data/dari.db)")
    path = text[len("sqlite:"):] if text.startswith("sqlite:") else text
    if not path or path == ":memory:":
        raise MigrateError("--from needs the path of the SQLite database file (sqlite:PATH)")
    return path


def parse_target(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise MigrateError(f"--to {redact(text)!r}: expected a PostgreSQL URL, postgresql://USER@HOST:PORT/DB")
    return text


def redact(url: str) -> str:
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def table_names() -> list[str]:
    """Every table the migrations create, in creation order (parents before children)."""
    names: list[str] = []
    for _, _, by_dialect in migrations.MIGRATIONS:
        for name in re.findall(r"CREATE TABLE (\w+)", by_dialect["postgresql"]):
            if name not in names and name not in SQLITE_ONLY:
                names.append(name)
    return names


def known_versions() -> list[int]:
    return [v for v, _, _ in migrations.MIGRATIONS]


# -- the source -------------------------------------------------------------------------------------

def open_source(path: str) -> sqlite3.Connection:
    """A read-only-in-practice connection holding one snapshot of the source until it closes."""
    if not os.path.exists(path):
        raise MigrateError(f"source database {path} does not exist")
    if not os.path.isfile(path):
        raise MigrateError(f"source {path} is not a file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN")   # the snapshot starts at the first read and lasts until close
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise MigrateError(f"source {path} is not a readable SQLite database ({exc})") from None
    if "schema_migrations" not in names:
        conn.close()
        raise MigrateError(f"source {path} is not a dari database (no schema_migrations table)")
    return conn


def source_versions(src: sqlite3.Connection) -> list[int]:
    return sorted(int(r[0]) for r in src.execute("SELECT version FROM schema_migrations"))


def check_versions(src: list[int], dst: list[int]) -> None:
    known = set(known_versions())
    if newer := sorted(set(src) - known):
        raise MigrateError(f"schema version mismatch: the source has migrations {newer} this dari does not know;"
                           " run the same dari version as the source server")
    if missing := sorted(known - set(src)):
        raise MigrateError(f"schema version mismatch: the source lacks migrations {missing}; start the source"
                           " server once with this dari version (it applies them), stop it, then rerun")
    if set(dst) != set(src):
        raise MigrateError(f"schema version mismatch: source at {sorted(src)}, target at {sorted(dst)}")


def describe(src: sqlite3.Connection, name: str, target_columns: set[str]) -> Table:
    info = src.execute(f'PRAGMA table_info("{name}")').fetchall()
    if not info:
        raise MigrateError(f"schema mismatch: the source has no table {name}")
    columns = [r[1] for r in info]
    if set(columns) != target_columns:
        raise MigrateError(f"schema mismatch in table {name}: source columns {sorted(columns)},"
                           f" target columns {sorted(target_columns)}")
    pk = sorted((r[5], r[1], (r[2] or "").upper()) for r in info if r[5] > 0)
    if not pk:
        raise MigrateError(f"table {name} has no primary key; cannot copy it resumably")
    key = [c for _, c, _ in pk]
    text_key = {c for _, c, t in pk if "INT" not in t}
    serial = key == ["id"] and not text_key
    filter_sql = f"key NOT LIKE '{RESERVED}%'" if name == "meta" else ""
    return Table(name, columns, key, text_key, serial, filter_sql)


def _q(name: str) -> str:
    return f'"{name}"'


def _src_select(t: Table, lo: Key | None, hi: Key | None) -> tuple[str, list[Any]]:
    cols = ", ".join(_q(c) for c in t.columns)
    keys = ", ".join(_q(c) for c in t.key)
    marks = ", ".join("?" for _ in t.key)
    where: list[str] = [t.filter_sql] if t.filter_sql else []
    args: list[Any] = []
    if lo is not None:
        where.append(f"({keys}) > ({marks})")
        args += lo
    if hi is not None:
        where.append(f"({keys}) <= ({marks})")
        args += hi
    sql = f"SELECT {cols} FROM {_q(t.name)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY {keys}", args


def source_page(src: sqlite3.Connection, t: Table, after: Key | None, limit: int) -> list[Row]:
    sql, args = _src_select(t, after, None)
    return [tuple(r) for r in src.execute(sql + " LIMIT ?", (*args, limit))]


# -- the target -------------------------------------------------------------------------------------

def _pg_key(t: Table) -> str:
    return ", ".join(_q(c) + (' COLLATE "C"' if c in t.text_key else "") for c in t.key)


def target_range(cur: Any, t: Table, lo: Key | None, hi: Key | None) -> list[Row]:
    cols = ", ".join(_q(c) for c in t.columns)
    keys = _pg_key(t)
    marks = ", ".join("%s" for _ in t.key)
    where: list[str] = [t.filter_sql.replace("%", "%%")] if t.filter_sql else []
    args: list[Any] = []
    if lo is not None:
        where.append(f"ROW({keys}) > ROW({marks})")
        args += lo
    if hi is not None:
        where.append(f"ROW({keys}) <= ROW({marks})")
        args += hi
    sql = f"SELECT {cols} FROM {_q(t.name)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [tuple(r) for r in cur.execute(sql + f" ORDER BY {keys}", args).fetchall()]


def _upsert_sql(t: Table) -> str:
    cols = ", ".join(_q(c) for c in t.columns)
    marks = ", ".join("%s" for _ in t.columns)
    rest = [c for c in t.columns if c not in t.key]
    action = ("DO UPDATE SET " + ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in rest)) if rest else "DO NOTHING"
    return (f"INSERT INTO {_q(t.name)} ({cols}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(_q(c) for c in t.key)}) {action}")


def _delete_sql(t: Table) -> str:
    return f"DELETE FROM {_q(t.name)} WHERE " + " AND ".join(f"{_q(c)} = %s" for c in t.key)


def _meta_get(cur: Any, key: str) -> Any:
    row = cur.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else _dec.decode(row[0])


def _meta_set(cur: Any, key: str, value: Any) -> None:
    cur.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, _enc.encode(value).decode()))


def target_columns(cur: Any, name: str) -> set[str]:
    rows = cur.execute("SELECT column_name FROM information_schema.columns"
                       " WHERE table_schema = current_schema() AND table_name = %s", (name,)).fetchall()
    if not rows:
        raise MigrateError(f"schema mismatch: the target has no table {name}")
    return {r[0] for r in rows}


def _max_ids(cur: Any, tables: Sequence[Table]) -> dict[str, int]:
    return {t.name: int(cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {_q(t.name)}").fetchone()[0])
            for t in tables if t.serial}


def source_identity(src: sqlite3.Connection, path: str) -> dict[str, str]:
    row = src.execute("SELECT value FROM meta WHERE key = 'cluster_id'").fetchone()
    return {"cluster_id": str(row[0]) if row else "", "path": os.path.abspath(path)}


def check_target(cur: Any, tables: Sequence[Table], ident: dict[str, str], verify_only: bool) -> bool:
    """Raise unless the target is empty or an earlier run of this same source; True when resuming."""
    recorded = _meta_get(cur, RESERVED + "source")
    if recorded is None:
        if verify_only:
            raise MigrateError("the target holds no migration to verify (no earlier `dari admin migrate` into it)")
        for t in tables:
            if t.name == "meta":
                continue   # a server started once on the target leaves keys there; the copy replaces them
            if cur.execute(f"SELECT 1 FROM {_q(t.name)} LIMIT 1").fetchone():
                raise MigrateError(f"the target is not empty (table {t.name} has rows) and is not a resume of"
                                   " this source; migrate into an empty database or schema")
        return False
    same = (recorded.get("cluster_id") == ident["cluster_id"] if ident["cluster_id"] and recorded.get("cluster_id")
            else recorded.get("path") == ident["path"])
    if not same:
        raise MigrateError(f"the target holds a migration of another source ({recorded.get('path')}, cluster"
                           f" {recorded.get('cluster_id') or '?'}); migrate into an empty database or schema")
    done = _meta_get(cur, RESERVED + "completed")
    if done and not verify_only:
        grown = {n: v for n, v in _max_ids(cur, tables).items() if v > int(done.get("max_ids", {}).get(n, 0))}
        if grown:
            name, value = next(iter(grown.items()))
            raise MigrateError(f"the target took new writes after the migration completed (table {name} now"
                               f" reaches id {value}): it is in service; refusing to overwrite it")
    return True


# -- copy and verify -------------------------------------------------------------------------------

def _key_of(t: Table, row: Row) -> Key:
    return [row[t.columns.index(c)] for c in t.key]


def copy_tail(src: sqlite3.Connection, conn: Any, t: Table, rep: TableReport, batch: int,
              budget: list[int] | None) -> None:
    """Copy the rows past the recorded key, one committed batch (rows + new key) at a time."""
    cur = conn.cursor()
    last: Key | None = _meta_get(cur, PROGRESS + t.name)
    conn.commit()
    rep.resumed_after = last
    upsert = _upsert_sql(t)
    while True:
        rows = source_page(src, t, last, batch)
        if not rows:
            return
        if budget is not None:
            if budget[0] <= 0:
                raise Interrupted(f"stopped before copying more of {t.name} (--max-batches)")
            budget[0] -= 1
        cur.executemany(upsert, rows)
        last = _key_of(t, rows[-1])
        _meta_set(cur, PROGRESS + t.name, last)
        conn.commit()
        rep.copied += len(rows)


def _repair(conn: Any, t: Table, want: list[Row], have: list[Row]) -> int:
    src_rows = {tuple(_key_of(t, r)): r for r in want}
    dst_rows = {tuple(_key_of(t, r)): r for r in have}
    gone = [k for k in dst_rows if k not in src_rows]
    changed = [r for k, r in src_rows.items() if dst_rows.get(k) != r]
    cur = conn.cursor()
    if gone:
        cur.executemany(_delete_sql(t), gone)
    if changed:
        cur.executemany(_upsert_sql(t), changed)
    conn.commit()
    return len(gone) + len(changed)


def verify_table(src: sqlite3.Connection, conn: Any, t: Table, rep: TableReport, chunk: int, repair: bool) -> None:
    """Compare both sides chunk by chunk in key order; with `repair`, make differing chunks equal."""
    s_hash, d_hash = hashlib.sha256(), hashlib.sha256()
    s_count = d_count = 0
    lo: Key | None = None
    while True:
        want = source_page(src, t, lo, chunk)
        hi = _key_of(t, want[-1]) if len(want) == chunk else None   # the last chunk is open-ended
        have = target_range(conn.cursor(), t, lo, hi)
        conn.commit()
        if have != want and repair:
            rep.repaired += _repair(conn, t, want, have)
            have = target_range(conn.cursor(), t, lo, hi)
            conn.commit()
        for rows, h in ((want, s_hash), (have, d_hash)):
            for r in rows:
                h.update(_enc.encode(r))
                h.update(b"\n")
        s_count += len(want)
        d_count += len(have)
        if hi is None:
            break
        lo = hi
    rep.source_rows, rep.target_rows = s_count, d_count
    rep.source_sha256, rep.target_sha256 = s_hash.hexdigest(), d_hash.hexdigest()


def reset_sequences(conn: Any, tables: Sequence[Table]) -> dict[str, int]:
    """Each serial id's next value: one past the largest copied id."""
    cur = conn.cursor()
    out: dict[str, int] = {}
    for t in tables:
        if not t.serial:
            continue
        seq = cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (t.name,)).fetchone()[0]
        if seq is None:
            continue
        nxt = int(cur.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {_q(t.name)}").fetchone()[0])
        cur.execute("SELECT setval(%s, %s, false)", (seq, nxt))
        out[t.name] = nxt
    conn.commit()
    return out


# -- the whole run ---------------------------------------------------------------------------------

def _lock_key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


async def prepare_target(url: str) -> None:
    """The normal backend start: connects and applies the target's migrations."""
    from dari.protocol.errors import DariError

    try:
        from dari.storage.postgres import PostgresDatabase
    except ImportError as exc:
        raise MigrateError(f"PostgreSQL support is not installed ({exc.name}): pip install 'dari[postgres]'") from None
    db = PostgresDatabase(url)
    try:
        await db.start()
    except DariError as err:
        raise MigrateError(f"cannot open the target: {err.message}") from None
    finally:
        await db.close()


@contextmanager
def _target(url: str) -> Iterator[Any]:
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=False, connect_timeout=5, application_name="dari-admin-migrate")
    except psycopg.Error as exc:
        raise MigrateError(f"cannot connect to the target: {str(exc).strip().splitlines()[0]}") from None
    try:
        yield conn
    finally:
        conn.close()


def run(source: str, target: str, *, batch: int = BATCH, verify_only: bool = False,
        max_batches: int | None = None, say: Callable[[str], None] = print) -> Report:
    """Migrate (or with `verify_only` only compare) `source` (sqlite:PATH) into `target`."""
    import asyncio

    import psycopg

    started = time.monotonic()
    path, url = parse_source(source), parse_target(target)
    src = open_source(path)
    try:
        versions = source_versions(src)
        check_versions(versions, known_versions())   # before touching the target
        asyncio.run(prepare_target(url))
        with _target(url) as conn:
            try:
                return _run(src, conn, path, url, versions, batch, verify_only, max_batches, say, started)
            except psycopg.OperationalError as exc:
                raise MigrateError(f"lost the target: {str(exc).strip().splitlines()[0]}; rerun to resume") from None
            except psycopg.Error as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MigrateError(f"the target refused a write: {msg}") from None
    finally:
        src.close()


def _run(src: sqlite3.Connection, conn: Any, path: str, url: str, versions: list[int], batch: int,
         verify_only: bool, max_batches: int | None, say: Callable[[str], None], started: float) -> Report:
    cur = conn.cursor()
    schema = cur.execute("SELECT current_schema()").fetchone()[0]
    if not cur.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(f"dari.admin-migrate:{schema}"),)).fetchone()[0]:
        raise MigrateError(f"another `dari admin migrate` is running into this target (schema {schema})")
    dst_versions = sorted(r[0] for r in cur.execute("SELECT version FROM schema_migrations").fetchall())
    check_versions(versions, dst_versions)
    tables = [describe(src, n, target_columns(cur, n)) for n in table_names()]
    ident = source_identity(src, path)
    resumed = check_target(cur, tables, ident, verify_only)
    if not verify_only:
        _meta_set(cur, RESERVED + "source", ident)
        cur.execute("DELETE FROM meta WHERE key = %s", (RESERVED + "completed",))
    conn.commit()
    report = Report(f"sqlite:{os.path.abspath(path)}", f"{redact(url)} (schema {schema})", versions,
                    resumed=resumed, verify_only=verify_only)
    mode = "verifying" if verify_only else ("resuming" if resumed else "copying")
    say(f"{mode} {report.source} -> {report.target}; schema versions {versions} on both sides")
    budget = [max_batches] if max_batches is not None else None
    for t in tables:
        rep = TableReport(t.name)
        report.tables.append(rep)
        if not verify_only:
            try:
                copy_tail(src, conn, t, rep, batch, budget)
            except Interrupted:
                say(f"  {t.name:<20} {rep.copied:>9} rows copied, then stopped (--max-batches); rerun to resume")
                raise
        verify_table(src, conn, t, rep, batch, repair=not verify_only)
        say(_line(rep, verify_only))
    if not verify_only and report.ok:
        report.sequences = reset_sequences(conn, tables)
        _meta_set(cur, RESERVED + "completed", {"at": int(time.time() * 1000), "max_ids": _max_ids(cur, tables)})
        conn.commit()
    report.seconds = time.monotonic() - started
    return report


def _line(rep: TableReport, verify_only: bool) -> str:
    what = "" if verify_only else f"copied {rep.copied:>7}" + (f" repaired {rep.repaired}" if rep.repaired else "")
    status = "ok" if rep.ok else "MISMATCH"
    return (f"  {rep.name:<20} source {rep.source_rows:>8} rows {rep.source_sha256[:16]}"
            f"  target {rep.target_rows:>8} rows {rep.target_sha256[:16]}  {status}  {what}").rstrip()
