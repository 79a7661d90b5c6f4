"""PostgreSQL backend (psycopg 3): one writer thread with group commit, a pool of reader threads.

It mirrors the SQLite backend: the writer drains every queued write function, runs each in its
own SAVEPOINT inside one transaction and commits once, so a batch of sends costs one WAL flush.
Readers run in REPEATABLE READ, READ ONLY transactions on their own connections.

Several processes (workers, nodes) may share one database. Two things then need care:

* Event ids (G4). `events.id` comes from a sequence, and sequence values are handed out when the
  row is inserted, not when it commits. With two writer processes, A could take id 100, B id 101,
  B commit first, a device resume to cursor 101, and then A commit 100: that device never sees
  event 100. So every write batch first takes a transaction-level advisory lock (one key per
  database schema) and holds it until COMMIT. PostgreSQL makes a commit visible before it
  releases the transaction's locks, so the next batch, in any process, allocates its ids only
  after every lower id is visible: the committed ids always form a prefix of the sequence (with
  harmless holes from rolled-back operations) and a reader that saw id N has seen every id < N.
  This needs the sequence's default CACHE 1 (a per-session cache would hand out ranges).
* Check-then-insert in services (a send's client_id lookup, a handle's uniqueness, one 1:1 chat
  per pair). Because batches are serialized cluster-wide by that same lock, and every statement
  of a READ COMMITTED transaction sees what was committed before it started, these checks see
  every earlier write of every process, exactly as with SQLite's single writer. The per-chat
  `SELECT ... FOR UPDATE` in timeline.append keeps sequence numbers gap-free regardless.

The lock is taken at the start of the batch rather than lazily at the first event: writers then
never hold row locks while waiting for it, so two processes cannot deadlock on it (a deadlock
costs deadlock_timeout, 1 s by default). Throughput across processes comes from batching: while
one process commits, the others' queues grow and their next batches carry more operations.

Connection failures become DariError(UNAVAILABLE, ...) (retryable: the client outbox keeps the
message and resends it with the same client_id, which is idempotent). Broken connections are
dropped and reopened on the next operation, so the service resumes by itself when PostgreSQL
returns; after a failed connection attempt, calls fail fast for a short back-off instead of each
waiting for a connect timeout.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from dari.protocol.errors import DariError, ErrorCode
from dari.storage import migrations
from dari.storage.base import Database, StoredEvent, Tx

T = TypeVar("T")
MAX_BATCH = 512
CONNECT_TIMEOUT_S = 5
RETRY_AFTER_S = 1.0          # after a failed connect, fail fast this long before trying again
OP_RETRIES = 3               # deadlock / serialization failure: retry the op in a fresh savepoint
LOCK_TIMEOUT = "30s"         # a batch waiting this long for the write lock fails as UNAVAILABLE

log = logging.getLogger("dari.storage.postgres")


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """`?` placeholders to psycopg's `%s`; a literal `%` becomes `%%`. Quoted text keeps its `?`."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote:
            out.append(ch)
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


def _params(params: Sequence[Any]) -> tuple[Any, ...]:
    # Flags live in INTEGER columns on both backends; PostgreSQL will not cast boolean to integer.
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresTx(Tx):
    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__()
        self.cur = conn.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.cur.execute(translate(sql), _params(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cur.executemany(translate(sql), [_params(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.cur.execute(translate(sql), _params(params)).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.cur.execute(translate(sql), _params(params)).fetchall()

    @property
    def for_update(self) -> str:
        return " FOR UPDATE"


class _Unavailable(Exception):
    """The connection broke or could not be opened; the whole batch fails as retryable."""


def _clean_error(exc: BaseException) -> BaseException:
    """An operation's database error as a caller-facing error; other exceptions pass through."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        constraint = exc.diag.constraint_name or "a unique constraint"
        return DariError(ErrorCode.CONFLICT, f"already exists ({constraint})")
    if isinstance(exc, psycopg.errors.IntegrityConstraintViolation):
        return DariError(ErrorCode.CONFLICT, f"conflicts with stored data: {exc.diag.message_primary or exc}")
    if isinstance(exc, psycopg.errors.DataError):
        return DariError(ErrorCode.INVALID_PARAMS, f"invalid value: {exc.diag.message_primary or exc}")
    return exc


_Job = tuple[Callable[[Tx], Any], asyncio.Future[Any]]
_Outcome = tuple[asyncio.Future[Any], bool, Any]


class PostgresDatabase(Database):
    def __init__(self, url: str, readers: int = 4) -> None:
        super().__init__()
        self._conninfo = url
        info = conninfo_to_dict(url)
        # Logged at start-up: never show the password.
        self.url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
        self.url = re.sub(r"(password=)[^&\s]*", r"\1***", self.url)
        host = info.get("host") or "localhost"
        self._where = f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._wconn: psycopg.Connection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers = readers
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        self._down_until = 0.0
        self._down_reason = ""
        self._closed = False
        self.write_lock_key = 0
        self.stats.update({"reconnects": 0, "unavailable": 0})

    # -- connections --------------------------------------------------------------------------

    def _unavailable(self, detail: str) -> DariError:
        self.stats["unavailable"] += 1
        return DariError(ErrorCode.UNAVAILABLE,
                         f"PostgreSQL at {self._where} is unavailable ({detail}); nothing was saved, retry")

    def _connect(self) -> psycopg.Connection[Any]:
        if time.monotonic() < self._down_until:
            raise _Unavailable(self._down_reason)
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="dari", keepalives=1, keepalives_idle=30,
                                   keepalives_interval=10, keepalives_count=3)
        except psycopg.Error as exc:
            reason = _first_line(exc)
            self._down_reason = reason
            self._down_until = time.monotonic() + RETRY_AFTER_S
            log.warning("cannot connect to PostgreSQL at %s: %s", self._where, reason)
            raise _Unavailable(reason) from exc
        self._down_until = 0.0
        return conn

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(None, self._start_sync)
        self._writer = threading.Thread(target=self._write_loop, name="dari-pg-writer", daemon=True)
        self._writer.start()
        self._read_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="dari-pg-reader")

    def _start_sync(self) -> None:
        try:
            conn = self._connect()
        except _Unavailable as exc:
            raise DariError(ErrorCode.UNAVAILABLE,
                            f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc
        try:
            schema = conn.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise DariError(ErrorCode.UNAVAILABLE, "the search_path names no existing schema to use")
            self.write_lock_key = _lock_key(f"dari.write:{schema[0]}")
            # Several processes may start at once: one applies the migrations, the others wait
            # for it and then find nothing left to do. DDL is transactional in PostgreSQL.
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(f"dari.migrate:{schema[0]}"),))
                applied = migrations.apply(PostgresTx(conn), int(time.time() * 1000))
                conn.execute("COMMIT")
            except BaseException:
                if not conn.broken:
                    conn.execute("ROLLBACK")
                raise
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            if applied:
                log.info("applied migrations %s to %s (schema %s)", applied, self._where, schema[0])
        except psycopg.OperationalError as exc:
            raise DariError(ErrorCode.UNAVAILABLE,
                            f"PostgreSQL at {self._where} failed during start: {_first_line(exc)}") from exc
        self._wconn = conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    # -- calls ---------------------------------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T]) -> T:
        if self._closed or self._loop is None:
            raise DariError(ErrorCode.UNAVAILABLE, "storage is shutting down; retry")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, fut))
        return await fut

    async def read(self, fn: Callable[[Tx], T]) -> T:
        if self._read_pool is None or self._closed:
            raise DariError(ErrorCode.UNAVAILABLE, "storage is not open")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._read_job, fn)

    # -- readers -------------------------------------------------------------------------------

    def _reader_conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            self._drop_reader(conn)
        conn = self._connect()
        self._local.conn = conn
        with self._conns_lock:
            self._reader_conns.append(conn)
        return conn

    def _drop_reader(self, conn: psycopg.Connection[Any]) -> None:
        self._local.conn = None
        with self._conns_lock:
            if conn in self._reader_conns:
                self._reader_conns.remove(conn)
        try:
            conn.close()
        except psycopg.Error:
            pass

    def _read_job(self, fn: Callable[[Tx], T]) -> T:
        # Reads have no side effects: on a broken connection (e.g. PostgreSQL restarted while it
        # sat idle) reconnect and run the function once more.
        for attempt in range(2):
            try:
                conn = self._reader_conn()
            except _Unavailable as exc:
                raise self._unavailable(str(exc)) from None
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                try:
                    return fn(PostgresTx(conn))
                finally:
                    if not conn.broken:
                        conn.execute("ROLLBACK")
            except psycopg.Error as exc:
                if not conn.broken:
                    raise _clean_error(exc) from exc
                self._drop_reader(conn)
                self.stats["reconnects"] += 1
                if attempt == 1:
                    raise self._unavailable(f"connection lost: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    # -- the writer -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._run_batch(batch)

    def _writer_conn(self) -> psycopg.Connection[Any]:
        conn = self._wconn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            self._drop_writer()
        conn = self._connect()
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        self._wconn = conn
        self.stats["reconnects"] += 1
        log.info("reconnected to PostgreSQL at %s", self._where)
        return conn

    def _drop_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _begin(self) -> psycopg.Connection[Any]:
        """BEGIN and take the cluster-wide write lock; a stale idle connection is replaced once."""
        for attempt in range(2):
            conn = self._writer_conn()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.write_lock_key,))
                return conn
            except psycopg.errors.LockNotAvailable as exc:
                conn.execute("ROLLBACK")
                raise _Unavailable("another dari process held the write lock too long") from exc
            except psycopg.Error as exc:
                if not conn.broken:
                    raise
                self._drop_writer()
                if attempt == 1:
                    raise _Unavailable(f"connection lost: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _run_op(self, conn: psycopg.Connection[Any], fn: Callable[[Tx], Any]) -> tuple[bool, Any, PostgresTx]:
        for attempt in range(OP_RETRIES + 1):
            tx = PostgresTx(conn)
            conn.execute("SAVEPOINT op")
            try:
                value = fn(tx)
            except BaseException as exc:  # the op's own error: undo only its work
                if conn.broken:
                    raise _Unavailable(f"connection lost: {_first_line(exc)}") from exc
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                if isinstance(exc, psycopg.errors.TransactionRollback | psycopg.errors.LockNotAvailable):
                    if attempt < OP_RETRIES:
                        continue
                    return False, self._unavailable(f"write conflict: {exc.diag.message_primary}"), tx
                return False, _clean_error(exc), tx
            conn.execute("RELEASE op")
            return True, value, tx
        raise AssertionError("unreachable")

    def _run_batch(self, batch: list[_Job]) -> None:
        outcomes: list[_Outcome] = []
        events: list[StoredEvent] = []
        hooks: list[Callable[[], None]] = []
        conn: psycopg.Connection[Any] | None = None
        committing = False
        try:
            conn = self._begin()
            for fn, fut in batch:
                ok, value, tx = self._run_op(conn, fn)
                outcomes.append((fut, ok, value))
                if ok:
                    events.extend(tx.events)
                    hooks.extend(tx.after_commit)
            committing = True
            conn.execute("COMMIT")
        except (psycopg.Error, _Unavailable) as exc:
            if conn is not None and not conn.broken:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass
            if conn is not None and conn.broken:
                self._drop_writer()
            detail = _first_line(exc)
            if committing:
                # The COMMIT's outcome is unknown; a retry with the same client_id is safe (G2).
                err = DariError(ErrorCode.UNAVAILABLE, f"PostgreSQL at {self._where} failed during commit"
                                f" ({detail}); the outcome is unknown, retry")
                self.stats["unavailable"] += 1
            else:
                err = self._unavailable(detail)
            log.warning("write batch of %d failed: %s", len(batch), err.message)
            outcomes = [(fut, False, err) for _, fut in batch]
            events, hooks = [], []
        self._record_batch(len(batch))
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._complete, outcomes, events, hooks)
        except RuntimeError:  # loop closed during shutdown; the data is committed regardless
            pass

    def _complete(self, outcomes: list[_Outcome], events: list[StoredEvent],
                  hooks: list[Callable[[], None]]) -> None:
        # Publish before resuming callers, so events leave in commit order. The commit is done
        # whatever a listener does: a failing one is logged and the callers still get their answers
        # (otherwise every request in the batch would wait for ever).
        if events and self.on_commit is not None:
            try:
                self.on_commit(events)
            except Exception:
                log.exception("publishing committed events failed")
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("a post-commit hook failed")
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
