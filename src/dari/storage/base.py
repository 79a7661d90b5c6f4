"""The storage interface.

Services hand the database a plain function of a `Tx`; the backend runs it inside a transaction
(writes: one writer with group commit) and returns its value. Raising inside the function rolls
back that function's work alone, so nothing is half-stored. Events emitted in a transaction are
handed to `on_commit` in commit order, after the commit, before the caller resumes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_enc = msgspec.json.Encoder()


@dataclass(slots=True)
class StoredEvent:
    id: int
    type: str
    payload: Any
    chat_id: int | None
    user_id: int | None
    recipients: Sequence[int]
    # Encoded once, reused for every recipient's connection.
    _frame: bytes | None = field(default=None, repr=False)

    def frame(self) -> bytes:
        if self._frame is None:
            from dari.protocol.frames import encode_event

            self._frame = encode_event(self.type, self.payload, self.id)
        return self._frame


class Tx(abc.ABC):
    """A transaction. SQL uses `?` placeholders; backends translate. Write portable SQL only."""

    dialect: str

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.after_commit: list[Callable[[], None]] = []

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the affected row count."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    @abc.abstractmethod
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT into a table with an `id` primary key; return the new row's id."""
        return int(self.scalar(sql + " RETURNING id", params))

    @property
    def for_update(self) -> str:
        """Row-lock suffix for SELECTs that must serialize concurrent writers (no-op in SQLite)."""
        return ""

    def emit(
        self,
        type: str,
        payload: Any,
        *,
        recipients: Sequence[int],
        chat_id: int | None = None,
        user_id: int | None = None,
        now: int = 0,
    ) -> StoredEvent:
        """Append a durable event to the log; it is published to `recipients` after commit.

        A chat event is replayed to whoever was a member when it happened; a user event only to
        that user.
        """
        eid = self.insert_id(
            "INSERT INTO events (chat_id, user_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            (chat_id, user_id, type, _enc.encode(payload).decode(), now),
        )
        ev = StoredEvent(int(eid), type, payload, chat_id, user_id, list(recipients))
        self.events.append(ev)
        return ev


class Database(abc.ABC):
    url: str
    on_commit: Callable[[list[StoredEvent]], None] | None = None

    def __init__(self) -> None:
        self.stats: dict[str, float] = {"commits": 0, "committed_ops": 0, "max_batch": 0}
        self.batch_histogram: dict[int, int] = {}

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections and apply migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes, then close."""

    @abc.abstractmethod
    async def write(self, fn: Callable[[Tx], T]) -> T: ...

    @abc.abstractmethod
    async def read(self, fn: Callable[[Tx], T]) -> T: ...

    def _record_batch(self, size: int) -> None:
        self.stats["commits"] += 1
        self.stats["committed_ops"] += size
        if size > self.stats["max_batch"]:
            self.stats["max_batch"] = size
        bucket = 1
        while bucket < size:
            bucket *= 2
        self.batch_histogram[bucket] = self.batch_histogram.get(bucket, 0) + 1
