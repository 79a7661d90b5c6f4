"""Schema of media, stickers, stories, boards and moderation (migrations 10-13, 19).

Written once with the same dialect words as migrations.py ({pk}, {big}); portable SQL only.
"""

from __future__ import annotations

MEDIA = """
ALTER TABLE messages ADD COLUMN attachment TEXT;
CREATE TABLE blobs (
  id TEXT PRIMARY KEY,
  mime TEXT NOT NULL,
  kind TEXT NOT NULL,
  size {big} NOT NULL,
  width INTEGER,
  height INTEGER,
  duration_ms {big},
  thumb_id TEXT,
  animated INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL,
  expires_at {big}
);
CREATE INDEX blobs_expiry ON blobs (expires_at);
CREATE TABLE blob_refs (
  blob_id TEXT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
  scope TEXT NOT NULL,
  scope_id {big} NOT NULL,
  created_at {big} NOT NULL,
  PRIMARY KEY (blob_id, scope, scope_id)
);
CREATE INDEX blob_refs_scope ON blob_refs (scope, scope_id);
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  size {big} NOT NULL,
  name TEXT NOT NULL,
  declared_type TEXT NOT NULL DEFAULT '',
  created_at {big} NOT NULL
)
"""

STICKERS = """
CREATE TABLE sticker_packs (
  id {pk},
  slug TEXT NOT NULL UNIQUE,
  title TEXT NOT NULL,
  author TEXT NOT NULL DEFAULT '',
  is_default INTEGER NOT NULL DEFAULT 0,
  animated INTEGER NOT NULL DEFAULT 0,
  cover_id TEXT,
  created_at {big} NOT NULL
);
CREATE TABLE stickers (
  id {pk},
  pack_id {big} NOT NULL REFERENCES sticker_packs (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  emoji TEXT NOT NULL DEFAULT '',
  blob_id TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  animated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX stickers_pack ON stickers (pack_id, position);
CREATE TABLE user_sticker_packs (
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  pack_id {big} NOT NULL REFERENCES sticker_packs (id) ON DELETE CASCADE,
  installed INTEGER NOT NULL,
  at {big} NOT NULL,
  PRIMARY KEY (user_id, pack_id)
);
CREATE TABLE sticker_recent (
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  sticker_id {big} NOT NULL REFERENCES stickers (id) ON DELETE CASCADE,
  used_at {big} NOT NULL,
  PRIMARY KEY (user_id, sticker_id)
)
"""

STORIES = """
CREATE TABLE stories (
  id {pk},
  author_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  text TEXT NOT NULL,
  media TEXT NOT NULL DEFAULT '[]',
  visibility TEXT NOT NULL,
  hidden INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL,
  edited_at {big}
);
CREATE INDEX stories_author ON stories (author_id, id);
CREATE TABLE close_friends (
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  friend_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  PRIMARY KEY (user_id, friend_id)
);
CREATE TABLE story_likes (
  story_id {big} NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at {big} NOT NULL,
  PRIMARY KEY (story_id, user_id)
);
CREATE TABLE story_views (
  story_id {big} NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at {big} NOT NULL,
  PRIMARY KEY (story_id, user_id)
);
CREATE TABLE story_comments (
  id {pk},
  story_id {big} NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
  author_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  parent_id {big},
  text TEXT NOT NULL,
  hidden INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL
);
CREATE INDEX story_comments_story ON story_comments (story_id, id)
"""

BOARDS = """
ALTER TABLE users ADD COLUMN suspended_until {big};
CREATE TABLE boards (
  id {pk},
  kind TEXT NOT NULL,
  chat_id {big} UNIQUE REFERENCES chats (id) ON DELETE CASCADE,
  slug TEXT UNIQUE,
  title TEXT NOT NULL,
  show_ip INTEGER NOT NULL DEFAULT 0,
  last_number {big} NOT NULL DEFAULT 0,
  created_at {big} NOT NULL
);
CREATE TABLE board_posts (
  id {pk},
  board_id {big} NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
  number {big} NOT NULL,
  author_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  title TEXT NOT NULL,
  body TEXT NOT NULL,
  media TEXT NOT NULL DEFAULT '[]',
  ip TEXT NOT NULL DEFAULT '',
  pinned INTEGER NOT NULL DEFAULT 0,
  hidden INTEGER NOT NULL DEFAULT 0,
  views {big} NOT NULL DEFAULT 0,
  comment_count INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL,
  edited_at {big},
  UNIQUE (board_id, number)
);
CREATE TABLE board_comments (
  id {pk},
  post_id {big} NOT NULL REFERENCES board_posts (id) ON DELETE CASCADE,
  author_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  body TEXT NOT NULL,
  ip TEXT NOT NULL DEFAULT '',
  hidden INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL
);
CREATE INDEX board_comments_post ON board_comments (post_id, id);
CREATE TABLE board_polls (
  post_id {big} PRIMARY KEY REFERENCES board_posts (id) ON DELETE CASCADE,
  question TEXT NOT NULL,
  options TEXT NOT NULL,
  multiple INTEGER NOT NULL,
  anonymous INTEGER NOT NULL,
  deadline {big}
);
CREATE TABLE board_votes (
  post_id {big} NOT NULL REFERENCES board_posts (id) ON DELETE CASCADE,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  option_idx INTEGER NOT NULL,
  PRIMARY KEY (post_id, user_id, option_idx)
);
CREATE TABLE reports (
  id {pk},
  reporter_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  target TEXT NOT NULL,
  target_id TEXT NOT NULL,
  reason TEXT NOT NULL,
  resolved INTEGER NOT NULL DEFAULT 0,
  created_at {big} NOT NULL
);
CREATE INDEX reports_open ON reports (resolved, id);
CREATE TABLE audit_log (
  id {pk},
  actor_id {big} NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  target_id TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  created_at {big} NOT NULL
)
"""

# Who may create public boards besides the operators, who made each board, and a name for every
# sticker so clients and the CLI can describe it (alt text beside the emoji).
BOARD_RIGHTS = """
CREATE TABLE board_creators (
  user_id {big} PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  granted_by {big} REFERENCES users (id) ON DELETE SET NULL,
  granted_at {big} NOT NULL
);
ALTER TABLE boards ADD COLUMN created_by {big} REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE stickers ADD COLUMN name TEXT NOT NULL DEFAULT ''
"""
