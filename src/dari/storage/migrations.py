"""Versioned schema migrations. Each entry runs once, in order, recorded in schema_migrations.

SQL is written once with a few dialect words filled in, so both backends share one schema.
"""

from __future__ import annotations

from dari.storage import content_schema as cs
from dari.storage import e2ee_schema
from dari.storage.base import Tx

_WORDS = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY", "big": "INTEGER", "text": "TEXT"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "big": "BIGINT", "text": "TEXT"},
}

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
  id {pk},
  handle TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL,
  status_message TEXT NOT NULL DEFAULT '',
  password_hash TEXT NOT NULL,
  phone_hash TEXT,
  presence_visibility TEXT NOT NULL DEFAULT 'everyone',
  last_seen_at {big},
  created_at {big} NOT NULL
);
CREATE INDEX users_phone ON users (phone_hash);
CREATE TABLE devices (
  id {pk},
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at {big} NOT NULL,
  last_seen_at {big} NOT NULL
);
CREATE INDEX devices_user ON devices (user_id);
CREATE TABLE friends (
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  friend_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  favourite INTEGER NOT NULL DEFAULT 0,
  hidden INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL,
  PRIMARY KEY (user_id, friend_id)
);
CREATE INDEX friends_reverse ON friends (friend_id);
CREATE TABLE blocks (
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  blocked_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at {big} NOT NULL,
  PRIMARY KEY (user_id, blocked_id)
);
CREATE TABLE chats (
  id {pk},
  kind TEXT NOT NULL,
  title TEXT NOT NULL DEFAULT '',
  owner_id {big},
  member_limit INTEGER NOT NULL,
  link_code TEXT UNIQUE,
  direct_key TEXT UNIQUE,
  last_seq {big} NOT NULL DEFAULT 0,
  last_activity {big} NOT NULL,
  created_at {big} NOT NULL
);
CREATE TABLE members (
  chat_id {big} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role TEXT NOT NULL DEFAULT 'member',
  nickname TEXT,
  read_seq {big} NOT NULL DEFAULT 0,
  muted INTEGER NOT NULL DEFAULT 0,
  active INTEGER NOT NULL DEFAULT 1,
  join_eid {big} NOT NULL DEFAULT 0,
  leave_eid {big},
  joined_at {big} NOT NULL,
  PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX members_user ON members (user_id, active);
CREATE TABLE messages (
  id {pk},
  chat_id {big} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
  seq {big} NOT NULL,
  sender_id {big} NOT NULL,
  kind TEXT NOT NULL,
  text TEXT NOT NULL,
  client_id TEXT NOT NULL DEFAULT '',
  reply_to {big},
  mentions TEXT NOT NULL DEFAULT '[]',
  created_at {big} NOT NULL,
  edited_at {big},
  unsent INTEGER NOT NULL DEFAULT 0,
  UNIQUE (chat_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages (sender_id, client_id) WHERE client_id <> '';
CREATE TABLE reactions (
  chat_id {big} NOT NULL,
  seq {big} NOT NULL,
  user_id {big} NOT NULL,
  emoji TEXT NOT NULL,
  PRIMARY KEY (chat_id, seq, user_id, emoji)
);
CREATE TABLE events (
  id {pk},
  chat_id {big},
  user_id {big},
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at {big} NOT NULL
);
CREATE INDEX events_chat ON events (chat_id, id);
CREATE INDEX events_user ON events (user_id, id);
"""

_FTS = {
    # trigram segments Korean, Chinese and Japanese, which have no spaces between words.
    "sqlite": "CREATE VIRTUAL TABLE message_fts USING fts5(text, tokenize='trigram')",
    "postgresql": "CREATE EXTENSION IF NOT EXISTS pg_trgm;"
    " CREATE INDEX messages_text_trgm ON messages USING gin (text gin_trgm_ops)",
}

_REACH = """
CREATE TABLE reach_samples (
  id {pk},
  at {big} NOT NULL,
  received_at {big} NOT NULL,
  region TEXT NOT NULL,
  asn TEXT NOT NULL DEFAULT '',
  route TEXT NOT NULL,
  ok INTEGER NOT NULL,
  stage TEXT NOT NULL DEFAULT '',
  class TEXT NOT NULL DEFAULT 'ok',
  reporter TEXT NOT NULL,
  elapsed_ms INTEGER NOT NULL DEFAULT 0,
  evidence TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX reach_samples_at ON reach_samples (at);
CREATE INDEX reach_samples_region ON reach_samples (region, route, at);
CREATE TABLE reach_control (
  id {pk},
  at {big} NOT NULL,
  route TEXT NOT NULL,
  ok INTEGER NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX reach_control_at ON reach_control (at);
CREATE TABLE incidents (
  id {pk},
  region TEXT NOT NULL,
  asn TEXT NOT NULL DEFAULT '',
  class TEXT NOT NULL,
  routes TEXT NOT NULL,
  fallbacks TEXT NOT NULL,
  reporters INTEGER NOT NULL,
  since {big} NOT NULL,
  opened_at {big} NOT NULL,
  closed_at {big},
  summary TEXT NOT NULL
);
CREATE INDEX incidents_open ON incidents (closed_at)
"""

# Where a report's region and ASN came from: client (declared), geoip (the operator's MaxMind
# database, from the peer address) or none; '' for samples stored before this was recorded.
_REACH_SOURCES = """
ALTER TABLE reach_samples ADD COLUMN region_source TEXT NOT NULL DEFAULT '';
ALTER TABLE reach_samples ADD COLUMN asn_source TEXT NOT NULL DEFAULT ''
"""

# A 1:1 message from someone the peer blocked: stored and shown to its sender as sent, never delivered
# to the blocker (withheld_from is the blocker's id; NULL for every other message).
_WITHHELD = """
ALTER TABLE messages ADD COLUMN withheld_from {big};
CREATE INDEX messages_withheld ON messages (withheld_from) WHERE withheld_from IS NOT NULL
"""

_DEVICE_KINDS = """
ALTER TABLE devices ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE device_links ADD COLUMN device_kind TEXT NOT NULL DEFAULT ''
"""

_LINKS = """
CREATE TABLE device_links (
  code TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL UNIQUE,
  device_name TEXT NOT NULL,
  created_at {big} NOT NULL,
  expires_at {big} NOT NULL,
  approved_by {big},
  device_id {big},
  token TEXT
)
"""

# Personal friend invites (one live code per user; rotating replaces it) and the open-chat
# directory: owners list a room with a description and tags; dir_text is their NFKC-casefolded
# concatenation, searched with LIKE on both backends (pg_trgm serves it on PostgreSQL).
_INVITES = """
CREATE TABLE friend_invites (
  code TEXT PRIMARY KEY,
  user_id {big} NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
  created_at {big} NOT NULL
);
ALTER TABLE chats ADD COLUMN listed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE chats ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE chats ADD COLUMN dir_text TEXT NOT NULL DEFAULT '';
CREATE INDEX chats_listed ON chats (listed, kind)
"""
_INVITES_PG = ";CREATE INDEX chats_dir_text_trgm ON chats USING gin (dir_text gin_trgm_ops)"
# Search finds media by caption (messages.text) and by file name (search_extra, copied from the
# attachment so both backends can index it). The backfill indexes media sent before this version.
_MEDIA_KINDS = "('image', 'video', 'file', 'voice')"
_SEARCH_MEDIA = {
    "sqlite": "ALTER TABLE messages ADD COLUMN search_extra TEXT NOT NULL DEFAULT '';"
    " UPDATE messages SET search_extra = COALESCE(json_extract(attachment, '$.name'), '')"
    f" WHERE kind IN {_MEDIA_KINDS} AND unsent = 0 AND json_valid(attachment);"
    f" DELETE FROM message_fts WHERE rowid IN (SELECT id FROM messages WHERE kind IN {_MEDIA_KINDS});"
    " INSERT INTO message_fts (rowid, text) SELECT id, text || char(10) || search_extra FROM messages"
    f" WHERE kind IN {_MEDIA_KINDS} AND unsent = 0",
    "postgresql": "ALTER TABLE messages ADD COLUMN search_extra TEXT NOT NULL DEFAULT '';"
    " UPDATE messages SET search_extra = COALESCE(attachment::jsonb ->> 'name', '')"
    f" WHERE kind IN {_MEDIA_KINDS} AND unsent = 0 AND attachment IS NOT NULL;"
    " CREATE INDEX messages_extra_trgm ON messages USING gin (search_extra gin_trgm_ops)",
}
# Calls (issue 12): who called whom in which chat, and each person's part in it. State lives here,
# not in one process's memory, so any server process (--workers, several nodes) can answer.
_CALLS = """
CREATE TABLE calls (
  id {pk},
  chat_id {big} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
  caller_id {big} NOT NULL,
  video INTEGER NOT NULL DEFAULT 0,
  grp INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  created_at {big} NOT NULL,
  ring_until {big} NOT NULL,
  answered_at {big},
  ended_at {big},
  end_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX calls_live ON calls (state, ring_until);
CREATE TABLE call_members (
  call_id {big} NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
  user_id {big} NOT NULL,
  device_id {big},
  state TEXT NOT NULL,
  joined_at {big},
  PRIMARY KEY (call_id, user_id)
);
CREATE INDEX call_members_user ON call_members (user_id, state)
"""

MIGRATIONS: list[tuple[int, str, dict[str, str]]] = [
    (1, "initial schema", {d: _V1.format(**w) for d, w in _WORDS.items()}),
    (2, "full-text search for CJK and Latin text", _FTS),
    (3, "reachability reports, server control probes and incidents",
     {d: _REACH.format(**w) for d, w in _WORDS.items()}),
    (4, "linking a new device from a logged-in one", {d: _LINKS.format(**w) for d, w in _WORDS.items()}),
    (10, "media blobs, upload sessions, message attachments", {d: cs.MEDIA.format(**w) for d, w in _WORDS.items()}),
    (11, "sticker packs", {d: cs.STICKERS.format(**w) for d, w in _WORDS.items()}),
    (12, "stories", {d: cs.STORIES.format(**w) for d, w in _WORDS.items()}),
    (13, "boards, reports, suspensions and the audit log", {d: cs.BOARDS.format(**w) for d, w in _WORDS.items()}),
    (14, "where reachability reports' region and ASN came from", {d: _REACH_SOURCES for d in _WORDS}),
    (15, "messages withheld from a blocker", {d: _WITHHELD.format(**w) for d, w in _WORDS.items()}),
    (16, "friend invite codes and the open-chat directory",
     {d: _INVITES.format(**w) + (_INVITES_PG if d == "postgresql" else "") for d, w in _WORDS.items()}),
    (17, "what kind of device each device is (browser, cli, ...)", {d: _DEVICE_KINDS for d in _WORDS}),
    (18, "search photo captions and file names", _SEARCH_MEDIA),
    (19, "board creation rights, board creators, sticker names",
     {d: cs.BOARD_RIGHTS.format(**w) for d, w in _WORDS.items()}),
    (20, "end-to-end encryption: device keys, one-time keys, the to-device queue, encrypted chats",
     {d: e2ee_schema.E2EE.format(**w) for d, w in _WORDS.items()}),
    (21, "voice and video calls", {d: _CALLS.format(**w) for d, w in _WORDS.items()}),
]


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def apply(tx: Tx, now: int) -> list[int]:
    """Apply pending migrations inside `tx`; return the versions applied."""
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at BIGINT NOT NULL)"
    )
    done = {row[0] for row in tx.all("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, by_dialect in MIGRATIONS:
        if version in done:
            continue
        for stmt in statements(by_dialect[tx.dialect]):
            tx.execute(stmt)
        tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                   (version, name, now))
        applied.append(version)
    return applied
