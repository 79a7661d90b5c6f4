"""Open chats seen from outside: a preview by link code, and the directory of listed rooms.

Search is a substring match on `dir_text` (title, description and tags, NFKC-normalized and
casefolded), one LIKE per word, so Korean, Chinese and Japanese match without word boundaries on
both backends; PostgreSQL serves it from a pg_trgm index. Queries are at most 100 characters and 8
words, pages at most 50 rooms and offsets at most 1000, so one search is bounded work.
"""

from __future__ import annotations

from typing import Any

from dari.protocol import invites as pi
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import ChatDetail, DirectoryPage, OpenChatCard
from dari.services import timeline
from dari.services.chats import chat_detail
from dari.services.core import Caller, Core, now_ms
from dari.services.listing import normalize, set_listing
from dari.storage.base import Tx

MAX_WORDS = 8

_CARD = ("SELECT c.link_code, c.title, c.description, c.tags,"
         " (SELECT count(*) FROM members x WHERE x.chat_id = c.id AND x.active = 1) AS mc,"
         " c.member_limit, c.listed, c.id,"
         " (SELECT count(*) FROM members y WHERE y.chat_id = c.id AND y.user_id = ? AND y.active = 1)"
         " FROM chats c WHERE c.kind = 'open'")


def _card(r: tuple[Any, ...]) -> OpenChatCard:
    return OpenChatCard(link_code=r[0], title=r[1] or "", description=r[2], tags=r[3].split(),
                        member_count=int(r[4]), member_limit=int(r[5]), listed=bool(r[6]),
                        chat_id=int(r[7]) if r[8] else None)


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class OpenDirectory:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def preview(self, caller: Caller, p: pi.OpenPreview) -> OpenChatCard:
        def fn(tx: Tx) -> OpenChatCard:
            row = tx.one(_CARD + " AND c.link_code = ?", (caller.user_id, p.link_code))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, "no open chat with that link code")
            return _card(row)

        return await self.core.db.read(fn)

    async def settings(self, caller: Caller, p: pi.OpenSettings) -> ChatDetail:
        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            row = tx.one("SELECT kind, owner_id FROM chats WHERE id = ?", (p.chat_id,))
            assert row is not None
            if row[0] != "open":
                raise DariError(ErrorCode.INVALID_PARAMS, "only open chats are listed in the directory")
            if row[1] != caller.user_id:
                raise DariError(ErrorCode.FORBIDDEN, "only the owner changes an open chat's listing")
            set_listing(tx, p.chat_id, listed=p.listed, description=p.description, tags=p.tags)
            detail = chat_detail(tx, p.chat_id, caller.user_id)
            tx.emit("chat.listing", {"chat_id": p.chat_id, "listed": detail.listed,
                                     "description": detail.description, "tags": detail.tags},
                    recipients=[m.user_id for m in detail.members], chat_id=p.chat_id, now=now)
            return detail

        return await self.core.db.write(fn)

    async def search(self, caller: Caller, p: pi.Directory) -> DirectoryPage:
        words = normalize(p.query).split()
        if len(words) > MAX_WORDS:
            raise DariError(ErrorCode.INVALID_PARAMS, f"a directory search takes at most {MAX_WORDS} words")

        def fn(tx: Tx) -> DirectoryPage:
            where = " AND c.listed = 1" + "".join(" AND c.dir_text LIKE ? ESCAPE '\\'" for _ in words)
            rows = tx.all(_CARD + where + " ORDER BY mc DESC, c.id DESC LIMIT ? OFFSET ?",
                          (caller.user_id, *(_like(w) for w in words), p.limit + 1, p.offset))
            more = len(rows) > p.limit
            return DirectoryPage([_card(r) for r in rows[:p.limit]], p.offset + p.limit if more else None)

        return await self.core.db.read(fn)
