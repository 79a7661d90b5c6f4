"""The on-disk outbox (G7): what the user typed is written here first and leaves in order, exactly
once (the server deduplicates by client_id, G2), whenever a connection exists, across restarts."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass

import msgspec


@dataclass
class Pending:
    client_id: str
    chat_id: int
    text: str
    reply_to: int | None
    mentions: list[int]
    created_at: float
    attempts: int


class Outbox:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT UNIQUE NOT NULL,"
            " chat_id INTEGER NOT NULL, text TEXT NOT NULL, reply_to INTEGER, mentions TEXT NOT NULL,"
            " created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)")
        self.db.execute("CREATE TABLE IF NOT EXISTS failed (client_id TEXT PRIMARY KEY, chat_id INTEGER, text TEXT,"
                        " code TEXT, message TEXT, at REAL)")

    def add(self, chat_id: int, text: str, reply_to: int | None = None, mentions: list[int] | None = None,
            client_id: str | None = None) -> str:
        cid = client_id or uuid.uuid4().hex
        self.db.execute("INSERT OR IGNORE INTO outbox (client_id, chat_id, text, reply_to, mentions, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (cid, chat_id, text, reply_to, msgspec.json.encode(mentions or []).decode(), time.time()))
        return cid

    def pending(self) -> list[Pending]:
        rows = self.db.execute("SELECT client_id, chat_id, text, reply_to, mentions, created_at, attempts FROM outbox"
                               " ORDER BY n").fetchall()
        return [Pending(r[0], r[1], r[2], r[3], msgspec.json.decode(r[4]), r[5], r[6]) for r in rows]

    def done(self, client_id: str) -> None:
        self.db.execute("DELETE FROM outbox WHERE client_id = ?", (client_id,))

    def attempt(self, client_id: str) -> None:
        self.db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE client_id = ?", (client_id,))

    def fail(self, item: Pending, code: str, message: str) -> None:
        """A permanent refusal (not a member any more, too long...): keep it visible, stop retrying."""
        self.db.execute("INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?, ?)",
                        (item.client_id, item.chat_id, item.text, code, message, time.time()))
        self.done(item.client_id)

    def failed(self) -> list[tuple[str, int, str, str, str]]:
        return self.db.execute("SELECT client_id, chat_id, text, code, message FROM failed ORDER BY at").fetchall()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self.db.close()
