"""Appending to a chat's timeline: gap-free per-chat sequence numbers (G3) and the message events."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import msgspec

from dari.protocol import system_events
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import MessageOut
from dari.services.core import active_members, is_blocked
from dari.storage.base import Tx

_dec_ids = msgspec.json.Decoder(list[int])
_enc = msgspec.json.Encoder()
_dec_attachment = msgspec.json.Decoder(dict[str, Any])

MESSAGE_COLUMNS = ("m.chat_id, m.seq, m.sender_id, m.kind, m.text, m.client_id, m.reply_to, m.mentions,"
                   " m.created_at, m.edited_at, m.unsent,"
                   " COALESCE(mb.nickname, u.display_name, '(deleted)'), m.attachment, m.e2ee")
# Hides 1:1 messages withheld from the viewer (sent by someone they blocked); one placeholder: the viewer.
VISIBLE_TO = "(m.withheld_from IS NULL OR m.withheld_from <> ?)"
MESSAGE_FROM = ("FROM messages m LEFT JOIN members mb ON mb.chat_id = m.chat_id AND mb.user_id = m.sender_id"
                " LEFT JOIN users u ON u.id = m.sender_id")


# Message kinds that search finds: text by its text, media by caption (text) and file name.
SEARCHABLE = ("text", "image", "video", "file", "voice")


def search_extra(kind: str, attachment: dict[str, Any] | None) -> str:
    """What search finds in an attachment besides the caption: its file name."""
    if kind not in SEARCHABLE or not attachment:
        return ""
    name = attachment.get("name")
    return name if isinstance(name, str) else ""


def fts_text(text: str, extra: str) -> str:
    """The SQLite FTS document: the text, and on its own line the attachment's name."""
    return f"{text}\n{extra}" if extra else text


def row_to_message(r: Sequence[Any]) -> MessageOut:
    unsent = bool(r[10])
    extra = _dec_attachment.decode(r[12]) if len(r) > 12 and r[12] and not unsent else None
    # A system message keeps its structured event in the attachment column (no other use there).
    is_system = str(r[3]) == "system"
    envelope = _dec_attachment.decode(r[13]) if len(r) > 13 and r[13] and not unsent else None
    return MessageOut(
        chat_id=int(r[0]), seq=int(r[1]), sender_id=int(r[2]), kind=str(r[3]),
        text="" if unsent else str(r[4]), created_at=int(r[8]), client_id=str(r[5]),
        reply_to=None if r[6] is None else int(r[6]),
        mentions=_dec_ids.decode(str(r[7])),
        edited_at=None if r[9] is None else int(r[9]),
        unsent=unsent, sender_name=str(r[11]),
        attachment=None if is_system else extra, system=extra if is_system else None, e2ee=envelope)


def e2ee_mismatch(chat_e2ee: bool) -> DariError:
    """Plaintext sent to an end-to-end encrypted chat, or an envelope to a plaintext one."""
    if chat_e2ee:
        return DariError(ErrorCode.INVALID_PARAMS, "this chat is end-to-end encrypted: send an encrypted"
                         " envelope (e2ee), not text, media or stickers", {"reason": "e2ee_required"})
    return DariError(ErrorCode.INVALID_PARAMS, "this chat is not end-to-end encrypted: send text",
                     {"reason": "e2ee_not_enabled"})


def member_row(tx: Tx, chat_id: int, user_id: int) -> tuple[Any, ...] | None:
    return tx.one("SELECT role, read_seq, muted, nickname FROM members WHERE chat_id = ? AND user_id = ?"
                  " AND active = 1", (chat_id, user_id))


def require_member(tx: Tx, chat_id: int, user_id: int) -> tuple[Any, ...]:
    row = member_row(tx, chat_id, user_id)
    if row is None:
        # Same answer whether the chat exists or not: no probing of other people's chats (G9).
        raise DariError(ErrorCode.FORBIDDEN, f"you are not a member of chat {chat_id}", {"reason": "not_member"})
    return row


def read_pointers(tx: Tx, chat_id: int) -> list[int]:
    # A 1:1 chat counts both people: a message revives a peer who left, or is withheld from a peer who
    # blocked the sender and stays unread to them ("1"), as in KakaoTalk.
    return sorted(r[0] for r in tx.all(
        "SELECT mb.read_seq FROM members mb JOIN chats c ON c.id = mb.chat_id WHERE mb.chat_id = ?"
        " AND (mb.active = 1 OR c.kind = 'direct')", (chat_id,)))


def unread_for(seq: int, sorted_pointers: list[int]) -> int:
    """KakaoTalk's counter: how many members' read pointers are still below this message."""
    return bisect.bisect_left(sorted_pointers, seq)


# The member rows append needs: (user_id, read_seq, nickname, active, sender's display_name or None).
# One statement gives the recipients, the unread counter, the sender's name and, in a 1:1 chat, the
# peer (left or not); it used to take five (found by profiling `dari bench`, docs/benchmarks.md).
_MEMBERS = ("SELECT mb.user_id, mb.read_seq, mb.nickname, mb.active, u.display_name FROM members mb"
            " LEFT JOIN users u ON u.id = mb.user_id AND mb.user_id = ? WHERE mb.chat_id = ?")
_MEMBERS_ACTIVE = _MEMBERS + " AND mb.active = 1"


class ChatFacts:
    """What one append reads about its chat, read once, after the chat row is locked."""

    __slots__ = ("e2ee", "kind", "last_seq", "rows")

    def __init__(self, last_seq: int, kind: str, rows: list[tuple[Any, ...]], e2ee: bool = False) -> None:
        self.last_seq, self.kind, self.rows, self.e2ee = last_seq, kind, rows, e2ee

    def active_member(self, user_id: int) -> bool:
        return any(r[0] == user_id and r[3] for r in self.rows)

    def peer(self, user_id: int) -> int | None:
        """A 1:1 chat's other member, whether or not they left it (rows include left members there)."""
        return next((int(r[0]) for r in self.rows if r[0] != user_id), None)


def load_chat(tx: Tx, chat_id: int, sender_id: int) -> ChatFacts | None:
    """Lock the chat row (PostgreSQL: FOR UPDATE, so sequence numbers stay gap-free, G3) and read its
    members: every member of a 1:1 chat, the active ones of a group."""
    last = tx.one(f"SELECT last_seq, kind, e2ee FROM chats WHERE id = ?{tx.for_update}", (chat_id,))
    if last is None:
        return None
    kind = str(last[1])
    rows = tx.all(_MEMBERS if kind == "direct" else _MEMBERS_ACTIVE, (sender_id, chat_id))
    return ChatFacts(int(last[0]), kind, rows, bool(last[2]))


def append(tx: Tx, chat_id: int, sender_id: int, kind: str, text: str, now: int, *,
           client_id: str = "", reply_to: int | None = None, mentions: Sequence[int] = (),
           attachment: dict[str, Any] | None = None, facts: ChatFacts | None = None,
           system: dict[str, Any] | None = None, e2ee: dict[str, Any] | None = None) -> MessageOut:
    """Append one message. `facts` is `load_chat`'s answer when the caller already read it in this
    transaction (nothing may change the chat or its members in between). `e2ee` is an encrypted
    message's envelope (kind "encrypted", text ""), stored as it came."""
    if facts is None:
        facts = load_chat(tx, chat_id, sender_id)
        if facts is None:
            raise DariError(ErrorCode.NOT_FOUND, f"no chat {chat_id}")
    seq = facts.last_seq + 1
    # KakaoTalk does not tell a sender that the peer blocked them: the message is stored and looks sent
    # (unread "1" stays), but only the sender's devices get it, and the blocker never sees it.
    withheld: int | None = None
    if facts.kind == "direct" and kind != "system":
        peer = facts.peer(sender_id)
        if peer is not None and is_blocked(tx, peer, sender_id):
            withheld = peer
    if reply_to is not None and not (1 <= reply_to < seq):
        raise DariError(ErrorCode.INVALID_PARAMS, f"reply_to {reply_to} is not a message in this chat")
    tx.execute("UPDATE chats SET last_seq = ?, last_activity = ? WHERE id = ?", (seq, now, chat_id))
    extra = search_extra(kind, attachment)
    mid = tx.insert_id(
        "INSERT INTO messages (chat_id, seq, sender_id, kind, text, client_id, reply_to, mentions, created_at,"
        " attachment, withheld_from, search_extra, e2ee) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (chat_id, seq, sender_id, kind, text, client_id, reply_to, _enc.encode(list(mentions)).decode(), now,
         None if (attachment or system) is None else _enc.encode(attachment or system).decode(), withheld, extra,
         None if e2ee is None else _enc.encode(e2ee).decode()))
    if tx.dialect == "sqlite" and kind in SEARCHABLE:
        tx.execute("INSERT INTO message_fts (rowid, text) VALUES (?, ?)", (mid, fts_text(text, extra)))
    rows = facts.rows
    # A 1:1 chat the peer had left reappears in their list when a new message arrives. Only run the
    # update when someone did leave: it was the costliest statement of a send although it rarely matches.
    revive = facts.kind == "direct" and kind != "system" and withheld is None and any(not r[3] for r in rows)
    if revive:
        tx.execute("UPDATE members SET active = 1, leave_eid = NULL WHERE chat_id = ? AND active = 0",
                   (chat_id,))
    if kind != "system":
        tx.execute("UPDATE members SET read_seq = ? WHERE chat_id = ? AND user_id = ?", (seq, chat_id, sender_id))
    recipients: list[int] = []
    unread = 0
    name: Any = None
    sender_row: tuple[Any, ...] | None = None
    for r in rows:
        uid = r[0]
        if uid == withheld:
            unread += r[1] < seq
            continue
        if not (r[3] or revive):
            continue
        recipients.append(uid)
        if uid == sender_id:
            sender_row = r
            if kind != "system":
                continue  # the sender's read pointer is now seq
        if r[1] < seq:
            unread += 1
    if sender_row is not None and sender_row[2]:
        name = sender_row[2]
    else:
        own = next((r for r in rows if r[0] == sender_id), None)
        name = own[4] if own is not None else tx.scalar("SELECT display_name FROM users WHERE id = ?",
                                                          (sender_id,))
    msg = MessageOut(chat_id=chat_id, seq=seq, sender_id=sender_id, kind=kind, text=text, created_at=now,
                     client_id=client_id, reply_to=reply_to, mentions=list(mentions),
                     unread=unread, sender_name=str(name or ""), attachment=attachment, system=system, e2ee=e2ee)
    tx.emit("message.new", msg, recipients=recipients, chat_id=chat_id, now=now)
    return msg


def system(tx: Tx, chat_id: int, actor_id: int, event: dict[str, Any], now: int,
           subjects: Sequence[int] = ()) -> MessageOut:
    """A system line: the structured `event` (system_events.event) and its English text as the fallback."""
    return append(tx, chat_id, actor_id, "system", system_events.describe(event), now, mentions=subjects,
                  system=event)


def audience(tx: Tx, chat_id: int, seq: int) -> list[int]:
    """Who gets events about message `seq` (edits, unsends, reactions): the chat's active members but
    the one it is withheld from."""
    hidden = tx.scalar("SELECT withheld_from FROM messages WHERE chat_id = ? AND seq = ?", (chat_id, seq))
    return [u for u in active_members(tx, chat_id) if u != hidden]


def display_name(tx: Tx, chat_id: int, user_id: int) -> str:
    row = tx.one("SELECT COALESCE(mb.nickname, u.display_name) FROM users u LEFT JOIN members mb"
                 " ON mb.user_id = u.id AND mb.chat_id = ? WHERE u.id = ?", (chat_id, user_id))
    return str(row[0]) if row else "someone"
