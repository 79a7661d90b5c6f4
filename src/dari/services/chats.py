"""Chats: 1:1 (one per pair), groups, open chats with per-room nicknames, the chat list, read state."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from dari.protocol import methods as m
from dari.protocol import system_events as se
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import ChatDetail, ChatSummary, Member
from dari.services import timeline
from dari.services.core import Caller, Core, is_blocked, now_ms, profile, user_devices_event
from dari.services.e2ee_chats import turn_on
from dari.services.listing import set_listing
from dari.storage.base import Tx


def chat_detail(tx: Tx, chat_id: int, viewer: int) -> ChatDetail:
    row = tx.one("SELECT id, kind, title, owner_id, member_limit, last_seq, link_code, listed, description, tags,"
                 " e2ee FROM chats WHERE id = ?", (chat_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no chat {chat_id}")
    is_open = row[1] == "open"
    # Both people of a 1:1 chat, even one who left it or never saw it (withheld messages, see append).
    both = " OR c.kind = 'direct'" if row[1] == "direct" else ""
    members = [
        Member(r[0], r[3] if (is_open and r[3]) else r[1], r[4], r[5], "" if is_open else r[2])
        for r in tx.all(
            "SELECT mb.user_id, u.display_name, u.handle, mb.nickname, mb.role, mb.read_seq FROM members mb"
            " JOIN users u ON u.id = mb.user_id JOIN chats c ON c.id = mb.chat_id WHERE mb.chat_id = ?"
            f" AND (mb.active = 1{both}) ORDER BY mb.joined_at, mb.user_id", (chat_id,))
    ]
    muted = bool(tx.scalar("SELECT muted FROM members WHERE chat_id = ? AND user_id = ?", (chat_id, viewer)))
    title = row[2]
    if row[1] == "direct":
        peer = next((mb for mb in members if mb.user_id != viewer), None)
        title = peer.display_name if peer else "(left)"
    return ChatDetail(row[0], row[1], title, row[3], row[4], row[5], members, muted, row[6], bool(row[7]), row[8],
                      row[9].split(), e2ee=bool(row[10]))


def _add_member(tx: Tx, chat_id: int, user_id: int, now: int, role: str = "member",
                nickname: str | None = None) -> None:
    existing = tx.one("SELECT active FROM members WHERE chat_id = ? AND user_id = ?", (chat_id, user_id))
    if existing is not None and existing[0] == 1:
        raise DariError(ErrorCode.CONFLICT, f"user {user_id} is already a member",
                        {"reason": "already_member"})
    if existing is None:
        tx.execute("INSERT INTO members (chat_id, user_id, role, nickname, read_seq, joined_at)"
                   " VALUES (?, ?, ?, ?, 0, ?)", (chat_id, user_id, role, nickname, now))
    else:
        tx.execute("UPDATE members SET active = 1, role = ?, nickname = ?, leave_eid = NULL, joined_at = ?"
                   " WHERE chat_id = ? AND user_id = ?", (role, nickname, now, chat_id, user_id))
    # A newcomer's unread history starts at their arrival.
    tx.execute("UPDATE members SET read_seq = (SELECT last_seq FROM chats WHERE id = ?) WHERE chat_id = ?"
               " AND user_id = ?", (chat_id, chat_id, user_id))


def _members_event(tx: Tx, chat_id: int, now: int, joined: Sequence[int] = (), left: Sequence[int] = (),
                   extra_recipients: Sequence[int] = (), only: Sequence[int] | None = None) -> int:
    recipients = list(only) if only is not None else [*_active(tx, chat_id), *extra_recipients]
    ev = tx.emit("chat.members", {"chat_id": chat_id, "joined": list(joined), "left": list(left)},
                 recipients=recipients, chat_id=chat_id, now=now)
    return ev.id


def _person(tx: Tx, chat_id: int, user_id: int) -> dict[str, Any]:
    return se.person(user_id, timeline.display_name(tx, chat_id, user_id))


def _active(tx: Tx, chat_id: int) -> list[int]:
    return [r[0] for r in tx.all("SELECT user_id FROM members WHERE chat_id = ? AND active = 1", (chat_id,))]


def _joined(tx: Tx, chat_id: int, user_ids: Sequence[int], now: int, only: Sequence[int] | None = None) -> None:
    eid = _members_event(tx, chat_id, now, joined=user_ids, only=only)
    marks = ",".join("?" * len(user_ids))
    tx.execute(f"UPDATE members SET join_eid = ? WHERE chat_id = ? AND user_id IN ({marks})",
               (eid, chat_id, *user_ids))


def leave_chat(tx: Tx, chat_id: int, user_id: int, now: int, *, reason: str, actor: int | None = None) -> None:
    row = tx.one("SELECT kind, owner_id FROM chats WHERE id = ?", (chat_id,))
    assert row is not None
    kind, owner = row
    if kind != "direct":
        gone = se.person(user_id, timeline.display_name(tx, chat_id, user_id))
        if reason == "left" or actor is None:
            event = se.event(se.MEMBER_LEFT, gone)
        else:
            event = se.event(se.MEMBER_REMOVED, se.person(actor, timeline.display_name(tx, chat_id, actor)),
                             users=[gone])
        timeline.system(tx, chat_id, actor or user_id, event, now, [user_id])
    eid = _members_event(tx, chat_id, now, left=[user_id])
    tx.execute("UPDATE members SET active = 0, leave_eid = ? WHERE chat_id = ? AND user_id = ?",
               (eid, chat_id, user_id))
    if owner == user_id and kind != "direct":
        heir = tx.scalar("SELECT user_id FROM members WHERE chat_id = ? AND active = 1 ORDER BY joined_at,"
                         " user_id LIMIT 1", (chat_id,))
        tx.execute("UPDATE chats SET owner_id = ? WHERE id = ?", (heir, chat_id))
        if heir is not None:
            tx.execute("UPDATE members SET role = 'owner' WHERE chat_id = ? AND user_id = ?", (chat_id, heir))


class Chats:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def open_direct(self, caller: Caller, p: m.OpenDirect) -> ChatDetail:
        me, peer = caller.user_id, p.user_id
        if peer == me:
            raise DariError(ErrorCode.INVALID_PARAMS, "a 1:1 chat needs another person")
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            profile(tx, peer)
            # Opening a chat with someone who blocked you looks the same to you; they see nothing:
            # their membership starts out as if they had left, and your messages are withheld.
            blocked = is_blocked(tx, peer, me)
            key = f"{min(me, peer)}:{max(me, peer)}"
            chat_id = tx.scalar("SELECT id FROM chats WHERE direct_key = ?", (key,))
            if chat_id is None:
                chat_id = tx.scalar(
                    "INSERT INTO chats (kind, member_limit, direct_key, last_activity, created_at, e2ee)"
                    " VALUES ('direct', 2, ?, ?, ?, ?) RETURNING id", (key, now, now, p.e2ee))
                for uid in (me, peer):
                    _add_member(tx, chat_id, uid, now)
                if blocked:
                    tx.execute("UPDATE members SET active = 0 WHERE chat_id = ? AND user_id = ?", (chat_id, peer))
                _joined(tx, chat_id, [me, peer], now, only=[me] if blocked else None)
            else:
                if timeline.member_row(tx, chat_id, me) is None:
                    _add_member(tx, chat_id, me, now)
                    _joined(tx, chat_id, [me], now, only=[me] if blocked else None)
                if p.e2ee:
                    turn_on(tx, chat_id, me, now)   # a plaintext 1:1 chat switches on; never off
            return chat_detail(tx, chat_id, me)

        return await self.core.db.write(fn)

    async def create_group(self, caller: Caller, p: m.CreateGroup) -> ChatDetail:
        limit = min(p.member_limit or self.core.settings.group_member_limit,
                    self.core.settings.group_member_limit)
        others = [u for u in dict.fromkeys(p.member_ids) if u != caller.user_id]
        if len(others) + 1 > limit:
            raise DariError(ErrorCode.LIMIT_EXCEEDED, f"a group holds at most {limit} members",
                            {"reason": "group_full", "limit": limit})
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            for uid in others:
                profile(tx, uid)
            chat_id = tx.scalar(
                "INSERT INTO chats (kind, title, owner_id, member_limit, last_activity, created_at, e2ee)"
                " VALUES ('group', ?, ?, ?, ?, ?, ?) RETURNING id", (p.title, caller.user_id, limit, now, now, p.e2ee))
            _add_member(tx, chat_id, caller.user_id, now, role="owner")
            for uid in others:
                _add_member(tx, chat_id, uid, now)
            _joined(tx, chat_id, [caller.user_id, *others], now)
            event = se.event(se.GROUP_CREATED, _person(tx, chat_id, caller.user_id), title=p.title,
                             users=[_person(tx, chat_id, u) for u in others])
            timeline.system(tx, chat_id, caller.user_id, event, now, others)
            return chat_detail(tx, chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def create_open(self, caller: Caller, p: m.CreateOpen) -> ChatDetail:
        limit = min(p.member_limit or self.core.settings.open_member_limit, self.core.settings.open_member_limit)
        now = now_ms()
        code = new_link_code()

        def fn(tx: Tx) -> ChatDetail:
            chat_id = tx.scalar(
                "INSERT INTO chats (kind, title, owner_id, member_limit, link_code, last_activity, created_at)"
                " VALUES ('open', ?, ?, ?, ?, ?, ?) RETURNING id",
                (p.title, caller.user_id, limit, code, now, now))
            set_listing(tx, chat_id, listed=p.listed, description=p.description, tags=p.tags)
            _add_member(tx, chat_id, caller.user_id, now, role="owner", nickname=p.nickname)
            _joined(tx, chat_id, [caller.user_id], now)
            timeline.system(tx, chat_id, caller.user_id,
                            se.event(se.OPEN_CREATED, se.person(caller.user_id, p.nickname), title=p.title), now)
            return chat_detail(tx, chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def join_open(self, caller: Caller, p: m.JoinOpen) -> ChatDetail:
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            row = tx.one(f"SELECT id, member_limit FROM chats WHERE link_code = ? AND kind = 'open'{tx.for_update}",
                         (p.link_code,))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, "no open chat with that link code", {"reason": "no_such_link"})
            chat_id, limit = row
            if len(_active(tx, chat_id)) >= limit:
                raise DariError(ErrorCode.LIMIT_EXCEEDED, f"this open chat is full ({limit} members)",
                                {"reason": "group_full", "limit": limit})
            taken = tx.one("SELECT 1 FROM members WHERE chat_id = ? AND active = 1 AND nickname = ?",
                           (chat_id, p.nickname))
            if taken:
                raise DariError(ErrorCode.CONFLICT, f"the nickname {p.nickname!r} is taken in this room",
                                {"reason": "nickname_taken", "nickname": p.nickname})
            _add_member(tx, chat_id, caller.user_id, now, nickname=p.nickname)
            _joined(tx, chat_id, [caller.user_id], now)
            timeline.system(tx, chat_id, caller.user_id,
                            se.event(se.MEMBER_JOINED, se.person(caller.user_id, p.nickname)), now, [caller.user_id])
            return chat_detail(tx, chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def invite(self, caller: Caller, p: m.ChatInvite) -> ChatDetail:
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            row = tx.one(f"SELECT kind, member_limit FROM chats WHERE id = ?{tx.for_update}", (p.chat_id,))
            assert row is not None
            if row[0] != "group":
                raise DariError(ErrorCode.INVALID_PARAMS, "only group chats take invitations")
            new = [u for u in dict.fromkeys(p.user_ids) if timeline.member_row(tx, p.chat_id, u) is None]
            if len(_active(tx, p.chat_id)) + len(new) > row[1]:
                raise DariError(ErrorCode.LIMIT_EXCEEDED, f"a group holds at most {row[1]} members",
                                {"reason": "group_full", "limit": row[1]})
            for uid in new:
                profile(tx, uid)
                _add_member(tx, p.chat_id, uid, now)
            if new:
                _joined(tx, p.chat_id, new, now)
                event = se.event(se.MEMBERS_INVITED, _person(tx, p.chat_id, caller.user_id),
                                 users=[_person(tx, p.chat_id, u) for u in new])
                timeline.system(tx, p.chat_id, caller.user_id, event, now, new)
            return chat_detail(tx, p.chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def remove_member(self, caller: Caller, p: m.ChatMember) -> ChatDetail:
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            role = timeline.require_member(tx, p.chat_id, caller.user_id)[0]
            if role != "owner":
                raise DariError(ErrorCode.FORBIDDEN, "only the chat's owner can remove members",
                                {"reason": "owner_only"})
            if p.user_id == caller.user_id:
                raise DariError(ErrorCode.INVALID_PARAMS, "use chat.leave to leave your own chat")
            if timeline.member_row(tx, p.chat_id, p.user_id) is None:
                raise DariError(ErrorCode.NOT_FOUND, f"user {p.user_id} is not a member")
            leave_chat(tx, p.chat_id, p.user_id, now, reason="removed", actor=caller.user_id)
            return chat_detail(tx, p.chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def leave(self, caller: Caller, p: m.ChatRef) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            leave_chat(tx, p.chat_id, caller.user_id, now, reason="left")

        await self.core.db.write(fn)
        return {"ok": True}

    async def rename(self, caller: Caller, p: m.ChatRename) -> ChatDetail:
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            kind = tx.scalar("SELECT kind FROM chats WHERE id = ?", (p.chat_id,))
            if kind == "direct":
                raise DariError(ErrorCode.INVALID_PARAMS, "a 1:1 chat has no title to rename")
            if kind == "open" and tx.scalar("SELECT owner_id FROM chats WHERE id = ?", (p.chat_id,)) \
                    != caller.user_id:
                raise DariError(ErrorCode.FORBIDDEN, "only the owner renames an open chat",
                                {"reason": "owner_only"})
            tx.execute("UPDATE chats SET title = ? WHERE id = ?", (p.title, p.chat_id))
            if kind == "open":
                set_listing(tx, p.chat_id)   # the directory searches the new title
            tx.emit("chat.renamed", {"chat_id": p.chat_id, "title": p.title},
                    recipients=_active(tx, p.chat_id), chat_id=p.chat_id, now=now)
            timeline.system(tx, p.chat_id, caller.user_id,
                            se.event(se.CHAT_RENAMED, _person(tx, p.chat_id, caller.user_id), title=p.title), now)
            return chat_detail(tx, p.chat_id, caller.user_id)

        return await self.core.db.write(fn)

    async def mute(self, caller: Caller, p: m.ChatMute) -> dict[str, bool]:
        now = now_ms()

        def fn(tx: Tx) -> None:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            tx.execute("UPDATE members SET muted = ? WHERE chat_id = ? AND user_id = ?",
                       (int(p.muted), p.chat_id, caller.user_id))
            user_devices_event(tx, [caller.user_id], "chat.muted", {"chat_id": p.chat_id, "muted": p.muted}, now)

        await self.core.db.write(fn)
        return {"ok": True}

    async def get(self, caller: Caller, p: m.ChatRef) -> ChatDetail:
        def fn(tx: Tx) -> ChatDetail:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            return chat_detail(tx, p.chat_id, caller.user_id)

        return await self.core.db.read(fn)

    async def list_chats(self, caller: Caller, p: m.NoParams) -> list[ChatSummary]:
        def fn(tx: Tx) -> list[ChatSummary]:
            out = []
            rows = tx.all(
                "SELECT c.id, c.kind, c.title, c.last_seq, mb.read_seq, mb.muted, c.last_activity, c.link_code,"
                " (SELECT count(*) FROM members x WHERE x.chat_id = c.id AND x.active = 1), c.e2ee"
                " FROM members mb JOIN chats c ON c.id = mb.chat_id WHERE mb.user_id = ? AND mb.active = 1"
                " ORDER BY c.last_activity DESC, c.id DESC", (caller.user_id,))
            # Someone this user blocked wrote to them: their 1:1 chats skip those messages.
            withheld = tx.one("SELECT 1 FROM messages WHERE withheld_from = ? LIMIT 1", (caller.user_id,))
            for r in rows:
                chat_id, kind, title = r[0], r[1], r[2]
                last_seq, unread = r[3], max(0, r[3] - r[4])
                peer_id = None
                if kind == "direct":
                    peer = tx.one("SELECT u.id, u.display_name FROM members mb JOIN users u ON u.id = mb.user_id"
                                  " WHERE mb.chat_id = ? AND mb.user_id <> ?", (chat_id, caller.user_id))
                    peer_id, title = (peer[0], peer[1]) if peer else (None, "(left)")
                if kind == "direct" and withheld:
                    last = tx.one(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM}"
                                  f" WHERE m.chat_id = ? AND {timeline.VISIBLE_TO} ORDER BY m.seq DESC LIMIT 1",
                                  (chat_id, caller.user_id))
                    last_seq = int(last[1]) if last else 0
                    unread -= int(tx.scalar("SELECT count(*) FROM messages WHERE chat_id = ? AND seq > ?"
                                            " AND withheld_from = ?", (chat_id, r[4], caller.user_id)))
                else:
                    last = tx.one(f"SELECT {timeline.MESSAGE_COLUMNS} {timeline.MESSAGE_FROM}"
                                  " WHERE m.chat_id = ? AND m.seq = ?", (chat_id, r[3]))
                out.append(ChatSummary(
                    chat_id=chat_id, kind=kind, title=title, last_seq=last_seq, read_seq=r[4],
                    unread=max(0, unread), muted=bool(r[5]), last_activity=r[6], member_count=r[8],
                    last_message=timeline.row_to_message(last) if last else None,
                    link_code=r[7], peer_id=peer_id, e2ee=bool(r[9])))
            return out

        return await self.core.db.read(fn)

    async def read(self, caller: Caller, p: m.ChatRead) -> dict[str, int]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, int]:
            row = timeline.require_member(tx, p.chat_id, caller.user_id)
            prev = int(row[1])
            last = int(tx.scalar("SELECT last_seq FROM chats WHERE id = ?", (p.chat_id,)))
            seq = min(p.seq, last)
            if seq <= prev:
                return {"chat_id": p.chat_id, "read_seq": prev}
            tx.execute("UPDATE members SET read_seq = ? WHERE chat_id = ? AND user_id = ?",
                       (seq, p.chat_id, caller.user_id))
            tx.emit("chat.read", {"chat_id": p.chat_id, "user_id": caller.user_id, "seq": seq, "prev_seq": prev},
                    recipients=_active(tx, p.chat_id), chat_id=p.chat_id, now=now)
            return {"chat_id": p.chat_id, "read_seq": seq}

        return await self.core.db.write(fn)


def new_link_code() -> str:
    """An open chat's link code: 12 URL-safe characters that never start with '-' or '_', so the code
    can be typed as a command-line argument (`dari chat open-join CODE`) or read aloud."""
    while True:
        code = secrets.token_urlsafe(9)
        if code[0].isalnum():
            return code
