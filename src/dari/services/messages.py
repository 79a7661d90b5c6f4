"""Messages: send (idempotent by client_id, G2), edit, unsend, reactions, history, search."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from dari.protocol import methods as m
from dari.protocol.envelope import Envelope
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import HistoryPage, MessageOut, SearchHit
from dari.services import media, timeline
from dari.services.core import Caller, Core, now_ms
from dari.storage.base import Tx


def _check_text(text: str, limit: int) -> str:
    if not text.strip():
        raise DariError(ErrorCode.INVALID_PARAMS, "message text is empty", {"reason": "message_empty"})
    if len(text) > limit:
        raise DariError(ErrorCode.LIMIT_EXCEEDED, f"message is {len(text)} characters; the limit is {limit}",
                        {"reason": "message_too_long", "length": len(text), "limit": limit})
    if "\x00" in text:
        raise DariError(ErrorCode.INVALID_PARAMS, "message text contains a NUL character")
    return text


def _existing(tx: Tx, sender_id: int, client_id: str) -> MessageOut | None:
    # "client_id <> ''" lets SQLite use the partial unique index messages_client_id; without it every
    # send scanned the whole messages table (found by dari bench: sends slowed as history grew).
    row = tx.one(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM}"
                 " WHERE m.sender_id = ? AND m.client_id = ? AND m.client_id <> ''", (sender_id, client_id))
    if row is None:
        return None
    msg = timeline.row_to_message(row)
    msg.unread = timeline.unread_for(msg.seq, timeline.read_pointers(tx, msg.chat_id))
    return msg


_dec_attachment = msgspec.json.Decoder(dict[str, Any])
_enc = msgspec.json.Encoder()
EDITABLE = ("text", "image", "video", "voice", "file", "encrypted")   # a media message's text is its caption
UNSENDABLE = (*EDITABLE, "sticker")


def _own_message(tx: Tx, chat_id: int, seq: int, user_id: int,
                 kinds: tuple[str, ...] = EDITABLE) -> tuple[Any, ...]:
    timeline.require_member(tx, chat_id, user_id)
    row = tx.one("SELECT m.id, m.sender_id, m.kind, m.created_at, m.unsent, m.withheld_from, c.e2ee FROM messages m"
                 " JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ? AND m.seq = ?", (chat_id, seq))
    if row is None or row[5] == user_id:
        raise DariError(ErrorCode.NOT_FOUND, f"no message {seq} in chat {chat_id}")
    if row[1] != user_id or row[2] not in kinds:
        raise DariError(ErrorCode.FORBIDDEN, "you can only change your own messages",
                        {"reason": "not_your_message"})
    if row[4]:
        raise DariError(ErrorCode.CONFLICT, "this message was unsent")
    return row


class Messages:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def send(self, caller: Caller, p: m.MessageSend) -> MessageOut:
        envelope, text = self._content(p.text, p.e2ee)
        if p.attachments and envelope is None:
            raise DariError(ErrorCode.INVALID_PARAMS, "attachments go with an encrypted message (e2ee);"
                            " send media with message.send_media")
        now = now_ms()

        def fn(tx: Tx) -> MessageOut:
            # A retry returns the original result and stores nothing new (G2).
            prior = _existing(tx, caller.user_id, p.client_id)
            if prior is not None:
                if prior.chat_id != p.chat_id:
                    raise DariError(ErrorCode.CONFLICT, "client_id was already used for another chat")
                return prior
            facts = timeline.load_chat(tx, p.chat_id, caller.user_id)
            if facts is None or not facts.active_member(caller.user_id):
                # Same answer whether the chat exists or not: no probing of other people's chats (G9).
                raise DariError(ErrorCode.FORBIDDEN, f"you are not a member of chat {p.chat_id}",
                                {"reason": "not_member"})
            if facts.kind == "direct":
                peer = facts.peer(caller.user_id)
                if peer is None:
                    raise DariError(ErrorCode.FORBIDDEN, "the other person has deleted their account")
            if facts.e2ee != (envelope is not None):
                raise timeline.e2ee_mismatch(facts.e2ee)
            if p.attachments:
                # The chat's members may then download these encrypted blobs (media.can_read).
                media.attach(tx, caller.user_id, p.attachments, "chat", p.chat_id, now)
            return timeline.append(tx, p.chat_id, caller.user_id, "text" if envelope is None else "encrypted", text,
                                   now, client_id=p.client_id, reply_to=p.reply_to,
                                   mentions=list(dict.fromkeys(p.mentions)), facts=facts, e2ee=envelope)

        return await self.core.db.write(fn)

    def _content(self, text: str, envelope: Envelope | None) -> tuple[dict[str, Any] | None, str]:
        """(envelope, text) of a send or edit: exactly one of them."""
        if envelope is None:
            return None, _check_text(text, self.core.settings.max_message_chars)
        if text:
            raise DariError(ErrorCode.INVALID_PARAMS, "send either text or an encrypted envelope (e2ee), not both")
        return msgspec.to_builtins(envelope), ""

    async def edit(self, caller: Caller, p: m.MessageEdit) -> MessageOut:
        envelope, text = self._content(p.text, p.e2ee)
        now = now_ms()

        def fn(tx: Tx) -> MessageOut:
            row = _own_message(tx, p.chat_id, p.seq, caller.user_id)
            if bool(row[6]) != (envelope is not None):
                raise timeline.e2ee_mismatch(bool(row[6]))
            if envelope is not None:
                if row[2] not in ("text", "encrypted"):
                    raise DariError(ErrorCode.INVALID_PARAMS, "only a text message becomes an encrypted one",
                                    {"reason": "not_editable"})
                # A plaintext message from before the chat was encrypted leaves the search index too.
                tx.execute("UPDATE messages SET kind = 'encrypted', text = '', search_extra = '', e2ee = ?,"
                           " edited_at = ? WHERE id = ?", (_enc.encode(envelope).decode(), now, row[0]))
                if tx.dialect == "sqlite":
                    tx.execute("DELETE FROM message_fts WHERE rowid = ?", (row[0],))
                tx.emit("message.edited", {"chat_id": p.chat_id, "seq": p.seq, "text": "", "e2ee": envelope,
                                           "edited_at": now},
                        recipients=timeline.audience(tx, p.chat_id, p.seq), chat_id=p.chat_id, now=now)
                return self._one(tx, p.chat_id, p.seq)
            tx.execute("UPDATE messages SET text = ?, edited_at = ? WHERE id = ?", (text, now, row[0]))
            if tx.dialect == "sqlite":
                extra = tx.scalar("SELECT search_extra FROM messages WHERE id = ?", (row[0],)) or ""
                tx.execute("DELETE FROM message_fts WHERE rowid = ?", (row[0],))
                tx.execute("INSERT INTO message_fts (rowid, text) VALUES (?, ?)",
                           (row[0], timeline.fts_text(text, str(extra))))
            tx.emit("message.edited", {"chat_id": p.chat_id, "seq": p.seq, "text": text, "edited_at": now},
                    recipients=timeline.audience(tx, p.chat_id, p.seq), chat_id=p.chat_id, now=now)
            return self._one(tx, p.chat_id, p.seq)

        return await self.core.db.write(fn)

    async def unsend(self, caller: Caller, p: m.MessageRef) -> dict[str, bool]:
        now = now_ms()
        window_ms = self.core.settings.unsend_window_s * 1000

        def fn(tx: Tx) -> None:
            row = _own_message(tx, p.chat_id, p.seq, caller.user_id, UNSENDABLE)
            if now - int(row[3]) > window_ms:
                raise DariError(ErrorCode.EXPIRED, f"messages can be unsent within "
                                f"{self.core.settings.unsend_window_s} s of sending",
                                {"reason": "unsend_window", "seconds": self.core.settings.unsend_window_s})
            tx.execute("UPDATE messages SET unsent = 1, text = '', search_extra = '', e2ee = NULL WHERE id = ?",
                       (row[0],))
            tx.execute("DELETE FROM reactions WHERE chat_id = ? AND seq = ?", (p.chat_id, p.seq))
            if tx.dialect == "sqlite":
                tx.execute("DELETE FROM message_fts WHERE rowid = ?", (row[0],))
            tx.emit("message.unsent", {"chat_id": p.chat_id, "seq": p.seq},
                    recipients=timeline.audience(tx, p.chat_id, p.seq), chat_id=p.chat_id, now=now)

        await self.core.db.write(fn)
        return {"ok": True}

    async def react(self, caller: Caller, p: m.MessageReact) -> dict[str, list[int]]:
        if any(c.isspace() for c in p.emoji) or re.search(r"[A-Za-z0-9<>]", p.emoji):
            raise DariError(ErrorCode.INVALID_PARAMS, "a reaction is one emoji")
        now = now_ms()

        def fn(tx: Tx) -> dict[str, list[int]]:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            found = tx.one("SELECT unsent, withheld_from FROM messages WHERE chat_id = ? AND seq = ?",
                           (p.chat_id, p.seq))
            unsent = None if found is None or found[1] == caller.user_id else found[0]
            if unsent is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no message {p.seq} in chat {p.chat_id}")
            if unsent:
                raise DariError(ErrorCode.CONFLICT, "this message was unsent")
            if p.on:
                n = tx.execute("INSERT INTO reactions (chat_id, seq, user_id, emoji) VALUES (?, ?, ?, ?)"
                               " ON CONFLICT DO NOTHING", (p.chat_id, p.seq, caller.user_id, p.emoji))
            else:
                n = tx.execute("DELETE FROM reactions WHERE chat_id = ? AND seq = ? AND user_id = ? AND emoji = ?",
                               (p.chat_id, p.seq, caller.user_id, p.emoji))
            reactions = _reactions(tx, p.chat_id, p.seq, p.seq).get(p.seq, {})
            if n:
                tx.emit("message.reaction", {"chat_id": p.chat_id, "seq": p.seq, "user_id": caller.user_id,
                                             "emoji": p.emoji, "on": p.on, "reactions": reactions},
                        recipients=timeline.audience(tx, p.chat_id, p.seq), chat_id=p.chat_id, now=now)
            return reactions

        return await self.core.db.write(fn)

    def _one(self, tx: Tx, chat_id: int, seq: int) -> MessageOut:
        row = tx.one(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM} WHERE m.chat_id = ? AND m.seq = ?",
                     (chat_id, seq))
        assert row is not None
        msg = timeline.row_to_message(row)
        msg.unread = timeline.unread_for(seq, timeline.read_pointers(tx, chat_id))
        msg.reactions = _reactions(tx, chat_id, seq, seq).get(seq, {})
        return msg

    async def history(self, caller: Caller, p: m.History) -> HistoryPage:
        def fn(tx: Tx) -> HistoryPage:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            before = p.before_seq if p.before_seq is not None else 2**62
            rows = tx.all(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM}"
                          f" WHERE m.chat_id = ? AND m.seq < ? AND {timeline.VISIBLE_TO} ORDER BY m.seq DESC LIMIT ?",
                          (p.chat_id, before, caller.user_id, p.limit + 1))
            has_more = len(rows) > p.limit
            msgs = [timeline.row_to_message(r) for r in reversed(rows[:p.limit])]
            if msgs:
                pointers = timeline.read_pointers(tx, p.chat_id)
                reactions = _reactions(tx, p.chat_id, msgs[0].seq, msgs[-1].seq)
                for msg in msgs:
                    msg.unread = timeline.unread_for(msg.seq, pointers)
                    msg.reactions = reactions.get(msg.seq, {})
            return HistoryPage(msgs, has_more)

        return await self.core.db.read(fn)

    async def search(self, caller: Caller, p: m.Search) -> list[SearchHit]:
        query = p.query.strip()
        if not query:
            raise DariError(ErrorCode.INVALID_PARAMS, "search query is empty")

        # Newest first; messages of the same millisecond by id, so every backend returns one order.
        def fn(tx: Tx) -> list[SearchHit]:
            scope = "AND m.chat_id = ?" if p.chat_id else ""
            args: list[object] = [caller.user_id, caller.user_id]
            if p.chat_id:
                args.append(p.chat_id)
            select = ("SELECT m.chat_id, m.seq, m.sender_id, m.text, m.created_at, c.title, c.kind, m.kind,"
                      " m.attachment FROM messages m"
                      " JOIN members mb ON mb.chat_id = m.chat_id AND mb.user_id = ? AND mb.active = 1"
                      " JOIN chats c ON c.id = m.chat_id")
            kinds = ", ".join(f"'{k}'" for k in timeline.SEARCHABLE)
            where = f"WHERE m.unsent = 0 AND m.kind IN ({kinds}) AND {timeline.VISIBLE_TO} {scope}"
            if tx.dialect == "sqlite" and len(query) >= 3:
                # Trigram FTS: a phrase query of the user's words, quotes escaped. A media message's
                # document is its caption and its file name.
                phrase = '"' + query.replace('"', '""') + '"'
                rows = tx.all(f"{select} JOIN message_fts f ON f.rowid = m.id {where} AND message_fts MATCH ?"
                              " ORDER BY m.created_at DESC, m.id DESC LIMIT ?", (*args, phrase, p.limit))
            else:
                # Shorter than a trigram (e.g. a two-syllable Korean word), or PostgreSQL's pg_trgm index.
                like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                # Case-insensitive like the trigram FTS: SQLite's LIKE folds ASCII; PostgreSQL needs
                # ILIKE (which pg_trgm's gin indexes on text and search_extra also serve).
                op = "ILIKE" if tx.dialect == "postgresql" else "LIKE"
                rows = tx.all(f"{select} {where} AND (m.text {op} ? ESCAPE '\\' OR m.search_extra {op} ? ESCAPE '\\')"
                              " ORDER BY m.created_at DESC, m.id DESC LIMIT ?", (*args, like, like, p.limit))
            hits = []
            for r in rows:
                title = r[5]
                if r[6] == "direct":
                    title = tx.scalar("SELECT u.display_name FROM members mb JOIN users u ON u.id = mb.user_id"
                                      " WHERE mb.chat_id = ? AND mb.user_id <> ?", (r[0], caller.user_id)) or ""
                hits.append(SearchHit(r[0], r[1], r[2], r[3], r[4], title, str(r[7]),
                                      _dec_attachment.decode(r[8]) if r[8] else None))
            return hits

        return await self.core.db.read(fn)


def _reactions(tx: Tx, chat_id: int, lo: int, hi: int) -> dict[int, dict[str, list[int]]]:
    out: dict[int, dict[str, list[int]]] = {}
    for seq, emoji, uid in tx.all("SELECT seq, emoji, user_id FROM reactions WHERE chat_id = ? AND seq BETWEEN ?"
                                  " AND ? ORDER BY seq, emoji, user_id", (chat_id, lo, hi)):
        out.setdefault(seq, {}).setdefault(emoji, []).append(uid)
    return out
