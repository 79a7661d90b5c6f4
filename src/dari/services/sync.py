"""Gap-free sync (G4): replay a user's events after a cursor, in order; prune old events; resync."""

from __future__ import annotations

import asyncio
import functools

import msgspec

from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import Me, SyncBatch
from dari.services import todevice
from dari.services.accounts import _me
from dari.services.batching import TickBatcher
from dari.services.core import Caller, Core, now_ms
from dari.storage.base import Tx

_REPLAY = (
    "SELECT e.id, e.type, e.payload FROM events e JOIN members mb ON mb.chat_id = e.chat_id AND mb.user_id = ?"
    " WHERE e.id > ? AND e.id >= mb.join_eid AND (mb.leave_eid IS NULL OR e.id <= mb.leave_eid)"
    " UNION ALL SELECT id, type, payload FROM events WHERE user_id = ? AND id > ?"
    " ORDER BY 1 LIMIT ?"
)

Replayed = tuple[int, str, msgspec.Raw]


def pruned_through(tx: Tx) -> int:
    value = tx.scalar("SELECT value FROM meta WHERE key = 'events_pruned_through'")
    return int(value) if value else 0


def head(tx: Tx) -> int:
    return int(tx.scalar("SELECT COALESCE(MAX(id), 0) FROM events"))


def replay_page(tx: Tx, user_id: int, cursor: int, limit: int, bounds: tuple[int, int] | None = None
                ) -> tuple[list[Replayed], bool]:
    """One page of replay; `bounds` is (pruned_through, head) if the caller already read them."""
    pruned, top = bounds if bounds is not None else (pruned_through(tx), head(tx))
    if cursor < pruned:
        raise DariError(ErrorCode.RESYNC_NEEDED,
                        "you were away longer than the server keeps events; reload chats and history",
                        {"oldest_cursor": pruned})
    if cursor > top:
        raise DariError(ErrorCode.RESYNC_NEEDED, "cursor is ahead of this server's event log", {"head": top})
    rows = tx.all(_REPLAY, (user_id, cursor, user_id, cursor, limit + 1))
    out = [(int(r[0]), str(r[1]), msgspec.Raw(str(r[2]).encode())) for r in rows[:limit]]
    return out, len(rows) > limit


Opened = tuple[Me, int, list[Replayed], bool]
_OpenKey = tuple[int, int | None, int]    # user id, cursor (None: start from now), page size


def _open_many(keys: list[_OpenKey], tx: Tx) -> list[Opened | DariError]:
    """session.open's reads for every session in `keys`, in one snapshot: the profile, then the log
    head (no cursor) or the first replay page after the cursor. A session's own error is its answer."""
    bounds = (pruned_through(tx), head(tx))
    out: list[Opened | DariError] = []
    for user_id, cursor, limit in keys:
        try:
            me = _me(tx, user_id)
            if cursor is None:
                out.append((me, bounds[1], [], False))
            else:
                page, more = replay_page(tx, user_id, cursor, limit, bounds)
                out.append((me, cursor, page, more))
        except DariError as err:
            out.append(err)
    return out


class Sync:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._opens: TickBatcher[_OpenKey, Opened] = TickBatcher(
            lambda keys: core.db.read(functools.partial(_open_many, keys)))

    async def head(self) -> int:
        return await self.core.db.read(head)

    async def replay(self, user_id: int, cursor: int, limit: int) -> tuple[list[Replayed], bool]:
        """Events after `cursor` for `user_id`, oldest first; RESYNC_NEEDED if some were pruned."""
        return await self.core.db.read(lambda tx: replay_page(tx, user_id, cursor, limit))

    async def open(self, user_id: int, cursor: int | None, limit: int) -> Opened:
        """session.open's reads: (me, cursor, first page, more). The session must already be in the
        hub (G4: the snapshot is taken after that). Sessions opening in the same loop tick (a
        reconnect storm) share one reader call."""
        return await self._opens((user_id, cursor, limit))

    async def events_between(self, lo: int, hi: int) -> list[tuple[int, list[int], bytes]]:
        """Stored events with lo <= id < hi, framed, with who should get them now (a shared bus
        filling a gap in its delivery order)."""
        from dari.protocol.frames import encode_event

        def fn(tx: Tx) -> list[tuple[int, list[int], bytes]]:
            out = []
            members: dict[int, list[int]] = {}
            for eid, chat_id, user_id, etype, payload in tx.all(
                    "SELECT id, chat_id, user_id, type, payload FROM events WHERE id >= ? AND id < ? ORDER BY id",
                    (lo, hi)):
                if chat_id is not None:
                    if chat_id not in members:
                        members[chat_id] = [r[0] for r in tx.all(
                            "SELECT user_id FROM members WHERE chat_id = ? AND (active = 1 OR leave_eid >= ?)",
                            (chat_id, eid))]
                    recipients = members[chat_id]
                else:
                    recipients = [user_id] if user_id is not None else []
                out.append((int(eid), recipients, encode_event(etype, msgspec.Raw(str(payload).encode()), eid)))
            return out

        return await self.core.db.read(fn)

    async def events(self, caller: Caller, p: m.SyncEvents) -> SyncBatch:
        batch, more = await self.replay(caller.user_id, p.cursor, p.limit)
        if not batch and p.wait_s > 0:
            await self.core.bus.wait_for(caller.user_id, p.wait_s)
            batch, more = await self.replay(caller.user_id, p.cursor, p.limit)
        cursor = batch[-1][0] if batch else p.cursor
        events: list[dict[str, object]] = [{"event": t, "payload": pl, "cursor": eid} for eid, t, pl in batch]
        return SyncBatch(events, cursor, more)

    async def prune(self) -> int:
        """Drop events past the retention window; return how many were deleted."""
        s = self.core.settings
        cutoff = now_ms() - int(s.event_retention_days * 86400_000)

        def fn(tx: Tx) -> int:
            todevice.prune(tx, now_ms())   # the to-device queue's own 30 days
            through = int(tx.scalar("SELECT COALESCE(MAX(id), 0) FROM events WHERE created_at < ?", (cutoff,)))
            if s.event_retention_max > 0:
                through = max(through, head(tx) - s.event_retention_max)
            if through <= pruned_through(tx):
                return 0
            n = tx.execute("DELETE FROM events WHERE id <= ?", (through,))
            tx.execute("INSERT INTO meta (key, value) VALUES ('events_pruned_through', ?) ON CONFLICT (key)"
                       " DO UPDATE SET value = excluded.value", (str(through),))
            return n

        return await self.core.db.write(fn)

    async def prune_forever(self, every_s: float = 600.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.prune()
            except DariError:
                pass
