"""The crypto store: one SQLite file per device profile (in memory without a path).

Olm/Megolm state is kept as vodozemac pickles, which vodozemac encrypts with a 32-byte pickle key;
the master seed is sealed with AES-GCM under the same key. The key sits beside the database in
`<path>.key` (mode 0600): this protects a copied database, not a stolen profile directory. A key
from the OS keyring is the next step.

The same file holds the pinned master keys of contacts and the local search index of decrypted
messages (FTS5 trigram, so Korean, Chinese and Japanese substrings match).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS olm_sessions (peer_key TEXT NOT NULL, session_id TEXT NOT NULL, pickle TEXT NOT NULL,
  used_at REAL NOT NULL, PRIMARY KEY (peer_key, session_id));
CREATE TABLE IF NOT EXISTS outbound (chat_id INTEGER PRIMARY KEY, pickle TEXT NOT NULL, created_at REAL NOT NULL,
  shared TEXT NOT NULL, members TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (session_id TEXT PRIMARY KEY, chat_id INTEGER NOT NULL, sender_id INTEGER NOT NULL,
  sender_device INTEGER NOT NULL, sender_key TEXT NOT NULL, pickle TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS used_index (session_id TEXT NOT NULL, idx INTEGER NOT NULL, chat_id INTEGER NOT NULL,
  seq INTEGER NOT NULL, PRIMARY KEY (session_id, idx));
CREATE TABLE IF NOT EXISTS contacts (user_id INTEGER PRIMARY KEY, master_key TEXT NOT NULL,
  verified INTEGER NOT NULL DEFAULT 0, changed INTEGER NOT NULL DEFAULT 0, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (blob_id TEXT PRIMARY KEY, chat_id INTEGER NOT NULL, attachment TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(doc, chat_id UNINDEXED, seq UNINDEXED,
  sender_id UNINDEXED, created_at UNINDEXED, text UNINDEXED, kind UNINDEXED, attachment UNINDEXED,
  tokenize='trigram');
"""


@dataclass
class Contact:
    user_id: int
    master_key: str
    verified: bool
    changed: bool


@dataclass
class Outbound:
    chat_id: int
    pickle: str
    created_at: float
    shared: dict[int, str]      # device_id -> identity key it was shared with
    members: list[int]


@dataclass
class Inbound:
    session_id: str
    chat_id: int
    sender_id: int
    sender_device: int
    sender_key: str
    pickle: str


class CryptoStore:
    def __init__(self, path: str | None = None) -> None:
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.pickle_key = _key_beside(path)
        else:
            self.pickle_key = os.urandom(32)
        self.db = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- meta ------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                        (key, value))

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE k = ?", (key,))

    def seal(self, data: bytes) -> str:
        nonce = os.urandom(12)
        return (nonce + AESGCM(self.pickle_key).encrypt(nonce, data, b"dari-store")).hex()

    def unseal(self, text: str) -> bytes:
        raw = bytes.fromhex(text)
        return AESGCM(self.pickle_key).decrypt(raw[:12], raw[12:], b"dari-store")

    # -- Olm sessions ----------------------------------------------------------------------
    def olm_sessions(self, peer_key: str) -> list[tuple[str, str]]:
        """(session_id, pickle), most recently used first."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT session_id, pickle FROM olm_sessions WHERE peer_key = ? ORDER BY used_at DESC", (peer_key,))]

    def save_olm(self, peer_key: str, session_id: str, pickle: str) -> None:
        self.db.execute("INSERT INTO olm_sessions VALUES (?, ?, ?, ?) ON CONFLICT (peer_key, session_id)"
                        " DO UPDATE SET pickle = excluded.pickle, used_at = excluded.used_at",
                        (peer_key, session_id, pickle, time.time()))

    # -- Megolm ----------------------------------------------------------------------------
    def outbound(self, chat_id: int) -> Outbound | None:
        r = self.db.execute("SELECT chat_id, pickle, created_at, shared, members FROM outbound WHERE chat_id = ?",
                            (chat_id,)).fetchone()
        if r is None:
            return None
        return Outbound(r[0], r[1], r[2], {int(k): v for k, v in json.loads(r[3]).items()}, json.loads(r[4]))

    def save_outbound(self, o: Outbound) -> None:
        self.db.execute("INSERT OR REPLACE INTO outbound VALUES (?, ?, ?, ?, ?)",
                        (o.chat_id, o.pickle, o.created_at, json.dumps({str(k): v for k, v in o.shared.items()}),
                         json.dumps(sorted(o.members))))

    def drop_outbound(self, chat_id: int) -> None:
        self.db.execute("DELETE FROM outbound WHERE chat_id = ?", (chat_id,))

    def inbound(self, session_id: str) -> Inbound | None:
        r = self.db.execute("SELECT session_id, chat_id, sender_id, sender_device, sender_key, pickle FROM inbound"
                            " WHERE session_id = ?", (session_id,)).fetchone()
        return None if r is None else Inbound(*r)

    def all_inbound(self) -> list[Inbound]:
        return [Inbound(*r) for r in self.db.execute(
            "SELECT session_id, chat_id, sender_id, sender_device, sender_key, pickle FROM inbound")]

    def save_inbound(self, s: Inbound) -> None:
        self.db.execute("INSERT OR REPLACE INTO inbound VALUES (?, ?, ?, ?, ?, ?)",
                        (s.session_id, s.chat_id, s.sender_id, s.sender_device, s.sender_key, s.pickle))

    def claim_index(self, session_id: str, idx: int, chat_id: int, seq: int) -> bool:
        """Record which message used a Megolm index; False when another message already did (replay)."""
        self.db.execute("INSERT OR IGNORE INTO used_index VALUES (?, ?, ?, ?)", (session_id, idx, chat_id, seq))
        row = self.db.execute("SELECT chat_id, seq FROM used_index WHERE session_id = ? AND idx = ?",
                              (session_id, idx)).fetchone()
        return bool(row[0] == chat_id and row[1] == seq)

    # -- contacts --------------------------------------------------------------------------
    def contact(self, user_id: int) -> Contact | None:
        r = self.db.execute("SELECT user_id, master_key, verified, changed FROM contacts WHERE user_id = ?",
                            (user_id,)).fetchone()
        return None if r is None else Contact(r[0], r[1], bool(r[2]), bool(r[3]))

    def pin(self, user_id: int, master_key: str, *, verified: bool = False, changed: bool = False) -> None:
        self.db.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?, ?)",
                        (user_id, master_key, int(verified), int(changed), time.time()))

    # -- keys of encrypted attachments (to save a file by its blob id later) ----------------
    def remember_attachment(self, chat_id: int, att: dict[str, Any]) -> None:
        sealed = self.seal(json.dumps(att).encode())   # file keys: sealed like the master seed
        self.db.execute("INSERT OR REPLACE INTO attachments VALUES (?, ?, ?)", (str(att["blob_id"]), chat_id, sealed))

    def attachment(self, blob_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT attachment FROM attachments WHERE blob_id = ?", (blob_id,)).fetchone()
        return None if row is None else dict(json.loads(self.unseal(row[0])))

    # -- local search ----------------------------------------------------------------------
    def index(self, chat_id: int, seq: int, sender_id: int, created_at: int, text: str, *, kind: str = "text",
              attachment: dict[str, Any] | None = None) -> None:
        """A decrypted message; a media message is found by its caption and its file name."""
        self.unindex(chat_id, seq)
        # What a hit shows (name, size, dimensions), never the file's key.
        shown = {k: v for k, v in (attachment or {}).items() if k not in ("key", "iv", "thumb", "sha256")}
        doc = f"{text} {shown.get('name') or ''}".strip()
        if doc:
            self.db.execute("INSERT INTO search (doc, chat_id, seq, sender_id, created_at, text, kind, attachment)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (doc, chat_id, seq, sender_id, created_at, text, kind,
                                                                  json.dumps(shown) if shown else None))

    def unindex(self, chat_id: int, seq: int) -> None:
        self.db.execute("DELETE FROM search WHERE chat_id = ? AND seq = ?", (chat_id, seq))

    def search(self, query: str, chat_id: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first. Trigram FTS needs 3 characters; shorter queries (a two-syllable Korean word)
        scan with LIKE, which the store of one person's decrypted messages affords."""
        q = query.strip()
        if not q:
            return []
        scope, args = ("AND chat_id = ?", [chat_id]) if chat_id else ("", [])
        if len(q) >= 3:
            where, first = "search MATCH ?", '"' + q.replace('"', '""') + '"'
        else:
            where, first = "doc LIKE ? ESCAPE '\\'", "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_") + "%"
        rows = self.db.execute(f"SELECT chat_id, seq, sender_id, text, created_at, kind, attachment FROM search"
                               f" WHERE {where} {scope} ORDER BY created_at DESC, seq DESC LIMIT ?",
                               (first, *args, limit)).fetchall()
        return [{"chat_id": int(r[0]), "seq": int(r[1]), "sender_id": int(r[2]), "text": r[3],
                 "created_at": int(r[4]), "kind": r[5], "attachment": json.loads(r[6]) if r[6] else None}
                for r in rows]


def _key_beside(path: str) -> bytes:
    key_path = path + ".key"
    try:
        with open(key_path, "rb") as fh:
            key = fh.read()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    fd = os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(key_path + ".tmp", key_path)
    return key
