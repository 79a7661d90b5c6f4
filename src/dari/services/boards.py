"""Boards: every group chat's board (LINE Notes, KakaoTalk's chat board) and public boards in the
style of 82cook's free board: numbered posts, a list of number/title/comments/author/date/views,
paging, search, pinned notices, comments and polls.

A chat board is readable and writable by the chat's members. A public board is readable by anyone,
even without logging in; writing needs an account. An operator may set a public board to show each
writer as a masked IP address (112.171.xxx.7) instead of a profile.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgspec

from dari.protocol import content as c
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.services import media as media_mod
from dari.services import timeline
from dari.services.core import Caller, Core, active_members, now_ms, user_devices_event
from dari.services.moderation import is_admin, require_admin
from dari.services.peer import current_peer
from dari.storage.base import Tx

_enc = msgspec.json.Encoder()
_dec_list = msgspec.json.Decoder(list[str])


def mask_ip(ip: str) -> str:
    """112.171.203.7 -> 112.171.xxx.7; 2001:db8:1:2:3:4:5:7 -> 2001:db8:xxxx:xxxx:xxxx:xxxx:xxxx:7."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        a, b, _, d = str(addr).split(".")
        return f"{a}.{b}.xxx.{d}"
    groups = [g.lstrip("0") or "0" for g in addr.exploded.split(":")]
    return ":".join([groups[0], groups[1], *["xxxx"] * 5, groups[7]])


class Board(msgspec.Struct):
    board_id: int
    kind: str               # chat or public
    title: str
    show_ip: bool
    chat_id: int | None = None
    slug: str | None = None
    posts: int = 0


def _board_row(tx: Tx, board_id: int) -> Board:
    r = tx.one("SELECT id, kind, title, show_ip, chat_id, slug, last_number FROM boards WHERE id = ?", (board_id,))
    if r is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no board {board_id}")
    return Board(int(r[0]), r[1], r[2], bool(r[3]), r[4], r[5], int(r[6]))


def can_read(tx: Tx, viewer: int | None, board: Board) -> bool:
    if board.kind == "public":
        return True
    return viewer is not None and board.chat_id is not None and \
        timeline.member_row(tx, board.chat_id, viewer) is not None


def _readable(tx: Tx, viewer: int | None, board_id: int) -> Board:
    board = _board_row(tx, board_id)
    if not can_read(tx, viewer, board):
        raise DariError(ErrorCode.FORBIDDEN, "you are not a member of this board's chat")
    return board


def _post_board(tx: Tx, viewer: int | None, post_id: int) -> tuple[Board, tuple[Any, ...]]:
    row = tx.one("SELECT id, board_id, number, author_id, title, body, media, ip, pinned, hidden, views,"
                 " comment_count, created_at, edited_at FROM board_posts WHERE id = ?", (post_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no post {post_id}")
    board = _readable(tx, viewer, int(row[1]))
    if row[9] and viewer != row[3] and not is_admin_tx(tx, viewer):
        raise DariError(ErrorCode.NOT_FOUND, f"post {post_id} was hidden by an operator")
    return board, row


_CORE: list[Core] = []   # set by Boards: the blob-scope check below needs the settings


def is_admin_tx(tx: Tx, viewer: int | None) -> bool:
    return bool(_CORE) and is_admin(_CORE[0], tx, viewer)


def _post_readable(tx: Tx, viewer: int | None, post_id: int) -> bool:
    try:
        _post_board(tx, viewer, post_id)
        return True
    except DariError:
        return False


media_mod.register_scope("board_post", _post_readable)


def _author(tx: Tx, board: Board, author_id: int, ip: str, viewer: int | None) -> dict[str, Any]:
    mine = viewer == author_id
    if board.show_ip:
        return {"ip": mask_ip(ip), "mine": mine}
    if board.kind == "chat" and board.chat_id is not None:
        return {"user_id": author_id, "name": timeline.display_name(tx, board.chat_id, author_id), "mine": mine}
    row = tx.one("SELECT handle, display_name FROM users WHERE id = ?", (author_id,))
    out = {"name": row[1] if row else "(deleted)", "handle": row[0] if row else "", "mine": mine}
    if viewer is not None:   # a visitor without an account sees what the page shows: names, not ids
        out["user_id"] = author_id
    return out


def _like(query: str) -> str:
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _may_pin(tx: Tx, board: Board, caller: Caller, author_id: int | None) -> bool:
    if is_admin_tx(tx, caller.user_id):
        return True
    if board.kind == "chat":
        owner = tx.scalar("SELECT owner_id FROM chats WHERE id = ?", (board.chat_id,))
        return caller.user_id in (owner, author_id)
    return False


def _poll(tx: Tx, post_id: int, viewer: int | None, now: int) -> dict[str, Any] | None:
    row = tx.one("SELECT question, options, multiple, anonymous, deadline FROM board_polls WHERE post_id = ?",
                 (post_id,))
    if row is None:
        return None
    options = _dec_list.decode(row[1])
    votes = tx.all("SELECT option_idx, user_id FROM board_votes WHERE post_id = ? ORDER BY option_idx, user_id",
                   (post_id,))
    named = not row[3] and viewer is not None   # visitors without an account see counts only
    out = [{"text": t, "votes": 0, **({"voters": []} if named else {})} for t in options]
    for idx, uid in votes:
        if 0 <= idx < len(out):
            out[idx]["votes"] += 1
            if named:
                out[idx]["voters"].append(int(uid))
    return {"question": row[0], "options": out, "multiple": bool(row[2]), "anonymous": bool(row[3]),
            "deadline": row[4], "closed": row[4] is not None and row[4] < now,
            "voters": len({int(v[1]) for v in votes}),
            "my_votes": sorted(int(v[0]) for v in votes if v[1] == viewer)}


class Boards:
    def __init__(self, core: Core) -> None:
        self.core = core
        _CORE[:] = [core]

    async def get(self, caller: Caller | None, p: c.BoardRef) -> Board:
        uid = caller.user_id if caller else None
        now = now_ms()
        if p.chat_id is not None:
            chat_id = p.chat_id
            if uid is None:
                raise DariError(ErrorCode.UNAUTHENTICATED, "a chat's board needs a logged-in session")
            member = uid

            def fn(tx: Tx) -> Board:
                timeline.require_member(tx, chat_id, member)
                kind, title = tx.one("SELECT kind, title FROM chats WHERE id = ?", (chat_id,)) or ("", "")
                if kind == "direct":
                    raise DariError(ErrorCode.INVALID_PARAMS, "1:1 chats have no board")
                bid = tx.scalar("SELECT id FROM boards WHERE chat_id = ?", (chat_id,))
                if bid is None:   # made on first use: most chats never open their board
                    bid = tx.scalar("INSERT INTO boards (kind, chat_id, title, created_at) VALUES ('chat', ?, ?, ?)"
                                    " RETURNING id", (chat_id, title, now))
                return _board_row(tx, int(bid))

            return await self.core.db.write(fn)
        if p.board_id is None:
            raise DariError(ErrorCode.INVALID_PARAMS, "give board_id or chat_id")
        board_id = p.board_id
        return await self.core.db.read(lambda tx: _readable(tx, uid, board_id))

    async def public(self, caller: Caller | None, p: m.NoParams) -> list[Board]:
        return await self.core.db.read(lambda tx: [_board_row(tx, int(r[0])) for r in tx.all(
            "SELECT id FROM boards WHERE kind = 'public' ORDER BY id LIMIT 500")])

    async def posts(self, caller: Caller | None, p: c.BoardPosts) -> dict[str, Any]:
        uid = caller.user_id if caller else None

        def fn(tx: Tx) -> dict[str, Any]:
            board = _readable(tx, uid, p.board_id)
            where = "p.board_id = ? AND p.hidden = 0"
            args: list[Any] = [p.board_id]
            query = p.query.strip()
            if query:
                op = "ILIKE" if tx.dialect == "postgresql" else "LIKE"
                like = _like(query)
                fields = {"title": ["p.title"], "body": ["p.body"], "title_body": ["p.title", "p.body"],
                          "author": ["u.display_name", "u.handle"]}[p.search_in]
                if p.search_in == "author" and board.show_ip:
                    # Matching names here would tie accounts to the addresses the board shows.
                    raise DariError(ErrorCode.INVALID_PARAMS, "this board shows addresses, not authors: search"
                                    " the title or body")
                where += " AND (" + " OR ".join(f"{f} {op} ? ESCAPE '\\'" for f in fields) + ")"
                args += [like] * len(fields)
            base = f"FROM board_posts p JOIN users u ON u.id = p.author_id WHERE {where}"
            total = int(tx.scalar(f"SELECT COUNT(*) {base}", args))
            rows = tx.all(f"SELECT p.id, p.number, p.title, p.comment_count, p.author_id, p.ip, p.created_at,"
                          f" p.views, p.pinned, p.media, EXISTS (SELECT 1 FROM board_polls bp WHERE bp.post_id = p.id)"
                          f" {base} ORDER BY p.number DESC LIMIT ? OFFSET ?",
                          (*args, p.per_page, (p.page - 1) * p.per_page))

            def item(r: tuple[Any, ...]) -> dict[str, Any]:
                return {"post_id": r[0], "number": r[1], "title": r[2], "comment_count": r[3],
                        "author": _author(tx, board, int(r[4]), r[5], uid), "created_at": r[6], "views": r[7],
                        "pinned": bool(r[8]), "has_media": r[9] != "[]", "has_poll": bool(r[10])}

            notices = []
            if p.page == 1 and not query:
                notices = [item(r) for r in tx.all(
                    "SELECT p.id, p.number, p.title, p.comment_count, p.author_id, p.ip, p.created_at, p.views,"
                    " p.pinned, p.media, EXISTS (SELECT 1 FROM board_polls bp WHERE bp.post_id = p.id)"
                    " FROM board_posts p WHERE p.board_id = ? AND p.pinned = 1 AND p.hidden = 0"
                    " ORDER BY p.number DESC LIMIT 10", (p.board_id,))]
            return {"board": board, "page": p.page, "per_page": p.per_page, "total": total,
                    "pages": max(1, -(-total // p.per_page)), "notices": notices, "posts": [item(r) for r in rows]}

        return await self.core.db.read(fn)

    async def post(self, caller: Caller | None, p: c.PostRef) -> dict[str, Any]:
        uid = caller.user_id if caller else None
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            board, r = _post_board(tx, uid, p.post_id)
            tx.execute("UPDATE board_posts SET views = views + 1 WHERE id = ?", (p.post_id,))
            comments = [{"comment_id": k[0], "author": _author(tx, board, int(k[1]), k[2], uid), "body": k[3],
                         "created_at": k[4]}
                        for k in tx.all("SELECT id, author_id, ip, body, created_at FROM board_comments"
                                        " WHERE post_id = ? AND hidden = 0 ORDER BY id", (p.post_id,))]
            media = []
            for blob_id in _dec_list.decode(r[6]):
                b = tx.one("SELECT mime, width, height, thumb_id FROM blobs WHERE id = ?", (blob_id,))
                if b is not None:
                    media.append({"blob_id": blob_id, "type": b[0], "width": b[1], "height": b[2],
                                  "thumbnail_id": b[3]})
            author = _author(tx, board, int(r[3]), r[7], uid)
            return {"post_id": r[0], "board_id": r[1], "number": r[2], "author": author,
                    "title": r[4], "body": r[5], "media": media, "pinned": bool(r[8]), "hidden": bool(r[9]),
                    "views": int(r[10]) + 1, "comment_count": r[11], "created_at": r[12], "edited_at": r[13],
                    "comments": comments, "poll": _poll(tx, p.post_id, uid, now)}

        return await self.core.db.write(fn)

    async def post_create(self, caller: Caller, p: c.PostCreate) -> dict[str, Any]:
        if not p.title.strip() or "\x00" in p.title + p.body:
            raise DariError(ErrorCode.INVALID_PARAMS, "a post needs a title, and no NUL characters")
        if p.poll and p.poll.deadline is not None and p.poll.deadline <= now_ms():
            raise DariError(ErrorCode.INVALID_PARAMS, "the poll's deadline has already passed")
        now = now_ms()
        ip = current_peer.get()

        def fn(tx: Tx) -> dict[str, Any]:
            board = _readable(tx, caller.user_id, p.board_id)
            if p.pinned and not _may_pin(tx, board, caller, caller.user_id):
                raise DariError(ErrorCode.FORBIDDEN, "only the chat's owner or an operator pins notices here")
            tx.execute("UPDATE boards SET last_number = last_number + 1 WHERE id = ?", (p.board_id,))
            number = int(tx.scalar("SELECT last_number FROM boards WHERE id = ?", (p.board_id,)))
            pid = int(tx.scalar(
                "INSERT INTO board_posts (board_id, number, author_id, title, body, media, ip, pinned, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (p.board_id, number, caller.user_id, p.title, p.body,
                 _enc.encode(list(dict.fromkeys(p.media))).decode(), ip, int(p.pinned), now)))
            media_mod.attach(tx, caller.user_id, p.media, "board_post", pid, now)
            if p.poll is not None:
                tx.execute("INSERT INTO board_polls (post_id, question, options, multiple, anonymous, deadline)"
                           " VALUES (?, ?, ?, ?, ?, ?)", (pid, p.poll.question, _enc.encode(p.poll.options).decode(),
                                                          int(p.poll.multiple), int(p.poll.anonymous), p.poll.deadline))
            out = {"post_id": pid, "board_id": p.board_id, "number": number, "title": p.title}
            if board.chat_id is not None:
                tx.emit("board.post", {**out, "chat_id": board.chat_id, "author_id": caller.user_id,
                                       "pinned": p.pinned}, recipients=active_members(tx, board.chat_id),
                        chat_id=board.chat_id, now=now)
            return out

        return await self.core.db.write(fn)

    async def post_edit(self, caller: Caller, p: c.PostEdit) -> dict[str, Any]:
        if (p.title is not None and not p.title.strip()) or "\x00" in (p.title or "") + (p.body or ""):
            raise DariError(ErrorCode.INVALID_PARAMS, "a post needs a title, and no NUL characters")
        now = now_ms()

        def fn(tx: Tx) -> None:
            _, r = _post_board(tx, caller.user_id, p.post_id)
            if int(r[3]) != caller.user_id:
                raise DariError(ErrorCode.FORBIDDEN, "this is not your post")
            tx.execute("UPDATE board_posts SET title = COALESCE(?, title), body = COALESCE(?, body), edited_at = ?"
                       " WHERE id = ?", (p.title, p.body, now, p.post_id))

        await self.core.db.write(fn)
        return await self.post(caller, c.PostRef(post_id=p.post_id))

    async def post_delete(self, caller: Caller, p: c.PostRef) -> dict[str, bool]:
        def fn(tx: Tx) -> None:
            board, r = _post_board(tx, caller.user_id, p.post_id)
            owner = tx.scalar("SELECT owner_id FROM chats WHERE id = ?", (board.chat_id,)) if board.chat_id else None
            if caller.user_id not in (int(r[3]), owner) and not is_admin_tx(tx, caller.user_id):
                raise DariError(ErrorCode.FORBIDDEN, "only the writer, the chat's owner or an operator deletes a post")
            media_mod.detach(tx, "board_post", p.post_id)
            tx.execute("DELETE FROM board_posts WHERE id = ?", (p.post_id,))

        await self.core.db.write(fn)
        return {"ok": True}

    async def pin(self, caller: Caller, p: c.PostPin) -> dict[str, Any]:
        def fn(tx: Tx) -> None:
            board, r = _post_board(tx, caller.user_id, p.post_id)
            if not _may_pin(tx, board, caller, int(r[3])):
                raise DariError(ErrorCode.FORBIDDEN, "only the chat's owner, the writer or an operator pins a post")
            tx.execute("UPDATE board_posts SET pinned = ? WHERE id = ?", (int(p.pinned), p.post_id))

        await self.core.db.write(fn)
        return {"post_id": p.post_id, "pinned": p.pinned}

    async def comment(self, caller: Caller, p: c.BoardComment) -> dict[str, Any]:
        if not p.body.strip() or "\x00" in p.body:
            raise DariError(ErrorCode.INVALID_PARAMS, "comment is empty or contains NUL")
        now = now_ms()
        ip = current_peer.get()

        def fn(tx: Tx) -> dict[str, Any]:
            board, r = _post_board(tx, caller.user_id, p.post_id)
            cid = int(tx.scalar("INSERT INTO board_comments (post_id, author_id, body, ip, created_at)"
                                " VALUES (?, ?, ?, ?, ?) RETURNING id", (p.post_id, caller.user_id, p.body, ip, now)))
            tx.execute("UPDATE board_posts SET comment_count = comment_count + 1 WHERE id = ?", (p.post_id,))
            out = {"comment_id": cid, "post_id": p.post_id, "body": p.body, "created_at": now,
                   "author": _author(tx, board, caller.user_id, ip, caller.user_id)}
            if int(r[3]) != caller.user_id:
                user_devices_event(tx, [int(r[3])], "board.commented",
                                   {"post_id": p.post_id, "board_id": board.board_id, "title": r[4],
                                    "comment_id": cid}, now)
            return out

        return await self.core.db.write(fn)

    async def comment_delete(self, caller: Caller, p: c.CommentRef) -> dict[str, bool]:
        def fn(tx: Tx) -> None:
            row = tx.one("SELECT post_id, author_id FROM board_comments WHERE id = ?", (p.comment_id,))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no comment {p.comment_id}")
            if int(row[1]) != caller.user_id and not is_admin_tx(tx, caller.user_id):
                raise DariError(ErrorCode.FORBIDDEN, "this is not your comment")
            tx.execute("DELETE FROM board_comments WHERE id = ?", (p.comment_id,))
            tx.execute("UPDATE board_posts SET comment_count = comment_count - 1 WHERE id = ?", (row[0],))

        await self.core.db.write(fn)
        return {"ok": True}

    async def vote(self, caller: Caller, p: c.Vote) -> dict[str, Any]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            _post_board(tx, caller.user_id, p.post_id)
            poll = _poll(tx, p.post_id, caller.user_id, now)
            if poll is None:
                raise DariError(ErrorCode.NOT_FOUND, f"post {p.post_id} has no poll")
            if poll["closed"]:
                raise DariError(ErrorCode.EXPIRED, "this poll is closed")
            choices = sorted(set(p.options))
            if any(i >= len(poll["options"]) for i in choices):
                raise DariError(ErrorCode.INVALID_PARAMS, f"the poll has {len(poll['options'])} options")
            if len(choices) > 1 and not poll["multiple"]:
                raise DariError(ErrorCode.INVALID_PARAMS, "this poll takes one choice")
            tx.execute("DELETE FROM board_votes WHERE post_id = ? AND user_id = ?", (p.post_id, caller.user_id))
            tx.executemany("INSERT INTO board_votes (post_id, user_id, option_idx) VALUES (?, ?, ?)",
                           [(p.post_id, caller.user_id, i) for i in choices])
            result = _poll(tx, p.post_id, caller.user_id, now)
            assert result is not None
            return result

        return await self.core.db.write(fn)

    async def admin_update(self, caller: Caller, p: c.BoardUpdate) -> Board:
        await require_admin(self.core, caller)
        now = now_ms()

        def fn(tx: Tx) -> Board:
            board = _board_row(tx, p.board_id)
            if board.kind != "public":
                raise DariError(ErrorCode.INVALID_PARAMS, "only public boards have operator settings")
            tx.execute("UPDATE boards SET title = COALESCE(?, title), show_ip = COALESCE(?, show_ip) WHERE id = ?",
                       (p.title, None if p.show_ip is None else int(p.show_ip), p.board_id))
            tx.execute("INSERT INTO audit_log (actor_id, action, target, target_id, reason, created_at)"
                       " VALUES (?, 'board_update', 'board', ?, ?, ?)",
                       (caller.user_id, str(p.board_id), f"title={p.title} show_ip={p.show_ip}", now))
            return _board_row(tx, p.board_id)

        return await self.core.db.write(fn)
