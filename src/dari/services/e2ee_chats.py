"""Switching a 1:1 or group chat to end-to-end encryption: once, never back (docs/e2ee.md).

Open chats (up to 100,000 members joined by link) stay plaintext. The switch takes the chat row's
lock like a send, so no plaintext message can slip in after it.
"""

from __future__ import annotations

from dari.protocol import methods as m
from dari.protocol import system_events as se
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import ChatDetail
from dari.services import timeline
from dari.services.core import Caller, Core, active_members, now_ms
from dari.storage.base import Tx


def open_chat_refused() -> DariError:
    return DariError(ErrorCode.INVALID_PARAMS, "open chats are not end-to-end encrypted",
                     {"reason": "e2ee_open_chat"})


def turn_on(tx: Tx, chat_id: int, actor: int, now: int) -> bool:
    """Switch the chat on with a system line and a `chat.e2ee` event; False if it already was."""
    row = tx.one(f"SELECT kind, e2ee FROM chats WHERE id = ?{tx.for_update}", (chat_id,))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no chat {chat_id}")
    if row[0] == "open":
        raise open_chat_refused()
    if row[1]:
        return False
    tx.execute("UPDATE chats SET e2ee = 1 WHERE id = ?", (chat_id,))
    tx.emit("chat.e2ee", {"chat_id": chat_id, "e2ee": True}, recipients=active_members(tx, chat_id),
            chat_id=chat_id, now=now)
    timeline.system(tx, chat_id, actor,
                    se.event(se.E2EE_ENABLED, se.person(actor, timeline.display_name(tx, chat_id, actor))), now)
    return True


class E2eeChats:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def enable(self, caller: Caller, p: m.ChatRef) -> ChatDetail:
        from dari.services.chats import chat_detail

        now = now_ms()

        def fn(tx: Tx) -> ChatDetail:
            timeline.require_member(tx, p.chat_id, caller.user_id)
            turn_on(tx, p.chat_id, caller.user_id, now)
            return chat_detail(tx, p.chat_id, caller.user_id)

        return await self.core.db.write(fn)
