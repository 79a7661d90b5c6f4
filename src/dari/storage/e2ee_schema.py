"""Schema of end-to-end encryption (migration 20): device keys, the users' master keys, one-time and
fallback keys, the to-device queue, and the E2EE flags of chats and messages (docs/e2ee.md).

Keys belong to a device row, so revoking a device (or deleting the account) removes its keys and its
queue with it. Written once with the dialect words of migrations.py ({pk}, {big}).
"""

from __future__ import annotations

E2EE = """
CREATE TABLE device_keys (
  device_id {big} PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  identity_key TEXT NOT NULL,
  signing_key TEXT NOT NULL,
  master_key TEXT NOT NULL,
  device_signature TEXT NOT NULL,
  master_signature TEXT NOT NULL,
  updated_at {big} NOT NULL
);
CREATE INDEX device_keys_user ON device_keys (user_id);
CREATE TABLE master_keys (
  user_id {big} PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  master_key TEXT NOT NULL,
  updated_at {big} NOT NULL
);
CREATE TABLE one_time_keys (
  id {pk},
  device_id {big} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  key_id TEXT NOT NULL,
  key TEXT NOT NULL,
  created_at {big} NOT NULL,
  UNIQUE (device_id, key_id)
);
CREATE TABLE fallback_keys (
  device_id {big} PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  key_id TEXT NOT NULL,
  key TEXT NOT NULL,
  updated_at {big} NOT NULL
);
CREATE TABLE to_device (
  id {pk},
  device_id {big} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  sender_id {big} NOT NULL,
  sender_device {big} NOT NULL,
  payload TEXT NOT NULL,
  created_at {big} NOT NULL
);
CREATE INDEX to_device_target ON to_device (device_id, id);
CREATE INDEX to_device_age ON to_device (created_at);
ALTER TABLE chats ADD COLUMN e2ee INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN e2ee TEXT
"""
