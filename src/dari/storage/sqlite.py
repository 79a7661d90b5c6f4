"""SQLite backend: WAL, synchronous=FULL, one writer thread with group commit, reader threads.

Group commit: the writer drains every queued write function, runs each inside its own SAVEPOINT
in one transaction and commits once, so durability costs one fsync per batch, not per message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dari.protocol.errors import DariError, ErrorCode
from dari.storage import migrations
from dari.storage.base import Database, StoredEvent, Tx

log = logging.getLogger("dari.storage.sqlite")

T = TypeVar("T")
MAX_BATCH = 512


class SqliteTx(Tx):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int:
        # lastrowid instead of RETURNING: no result row to step through and fetch.
        rowid = self.conn.execute(sql, params).lastrowid
        assert rowid is not None
        return rowid

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


_Job = tuple[Callable[[Tx], Any], asyncio.Future[Any]]


class SqliteDatabase(Database):
    def __init__(self, path: str, readers: int = 2) -> None:
        super().__init__()
        self.path = path
        self.url = f"sqlite:{path}"
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers = readers
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = _connect(self.path)
        tx = SqliteTx(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations.apply(tx, int(time.time() * 1000))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="dari-sqlite-writer",
                                        daemon=True)
        self._writer.start()
        self._read_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="dari-sqlite-reader")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        if self._closed or self._loop is None:
            raise DariError(ErrorCode.UNAVAILABLE, "storage is shutting down; retry")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, fut))
        return await fut

    async def read(self, fn: Callable[[Tx], T]) -> T:
        if self._read_pool is None:
            raise DariError(ErrorCode.UNAVAILABLE, "storage is not open")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._read_job, fn)

    def _read_job(self, fn: Callable[[Tx], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
        conn.execute("BEGIN")
        try:
            return fn(SqliteTx(conn))
        finally:
            conn.execute("ROLLBACK")

    def _write_loop(self, conn: sqlite3.Connection) -> None:
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
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        events: list[StoredEvent] = []
        hooks: list[Callable[[], None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                tx = SqliteTx(conn)
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(tx)
                except BaseException as exc:  # the op's own error: undo only its work
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(exc, sqlite3.IntegrityError):  # e.g. a unique violation: a clean error
                        exc = DariError(ErrorCode.CONFLICT, f"conflicts with stored data ({exc})")
                    outcomes.append((fut, False, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((fut, True, value))
                events.extend(tx.events)
                hooks.extend(tx.after_commit)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = DariError(ErrorCode.UNAVAILABLE, f"storage error, nothing was saved; retry ({exc})")
            outcomes = [(fut, False, err) for _, fut in batch]
            events, hooks = [], []
        self._record_batch(len(batch))
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._complete, outcomes, events, hooks)
        except RuntimeError:  # loop closed during shutdown; the data is committed regardless
            pass

    def _complete(self, outcomes: list[tuple[asyncio.Future[Any], bool, Any]], events: list[StoredEvent],
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
