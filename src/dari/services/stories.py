"""Stories (KakaoStory / LINE VOOM): posts with photos and a visibility, a feed, likes, comments
with one level of replies, unique view counts, and realtime notices to the author.

Who sees a story: its author always; nobody else if an operator hid it or the author blocked
them; otherwise `public` everyone, `friends` those the author has added as friends, `close_friends`
the author's close-friends list, `only_me` nobody.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dari.protocol import content as c
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.protocol.models import UserProfile
from dari.services import media as media_mod
from dari.services.core import Caller, Core, now_ms, profile, user_devices_event
from dari.storage.base import Tx

_dec_media = msgspec.json.Decoder(list[str])
_enc = msgspec.json.Encoder()

# Placeholders: viewer (blocks), viewer (friends), viewer (close friends), viewer (author is viewer).
VISIBLE = ("(s.author_id = ? OR (s.hidden = 0"
           " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = s.author_id AND b.blocked_id = ?)"
           " AND (s.visibility = 'public'"
           " OR (s.visibility = 'friends' AND EXISTS (SELECT 1 FROM friends f WHERE f.user_id = s.author_id"
           " AND f.friend_id = ?))"
           " OR (s.visibility = 'close_friends' AND EXISTS (SELECT 1 FROM close_friends cf"
           " WHERE cf.user_id = s.author_id AND cf.friend_id = ?)))))")
_COLS = ("s.id, s.author_id, s.text, s.media, s.visibility, s.hidden, s.created_at, s.edited_at,"
         " (SELECT COUNT(*) FROM story_likes l WHERE l.story_id = s.id),"
         " (SELECT COUNT(*) FROM story_comments k WHERE k.story_id = s.id AND k.hidden = 0),"
         " (SELECT COUNT(*) FROM story_views v WHERE v.story_id = s.id),"
         " EXISTS (SELECT 1 FROM story_likes l WHERE l.story_id = s.id AND l.user_id = ?)")


class StoryOut(msgspec.Struct):
    story_id: int
    author: UserProfile
    text: str
    media: list[dict[str, Any]]
    visibility: str
    created_at: int
    edited_at: int | None
    likes: int
    comments: int
    views: int
    liked: bool
    hidden: bool = False


class CommentOut(msgspec.Struct):
    comment_id: int
    story_id: int
    author: UserProfile
    text: str
    created_at: int
    parent_id: int | None = None
    replies: list[CommentOut] = msgspec.field(default_factory=list)


def _vis_args(viewer: int) -> tuple[int, int, int, int]:
    return viewer, viewer, viewer, viewer


def can_view(tx: Tx, viewer: int | None, story_id: int) -> bool:
    if viewer is None:
        return False
    return tx.scalar(f"SELECT 1 FROM stories s WHERE s.id = ? AND {VISIBLE}", (story_id, *_vis_args(viewer))) == 1


media_mod.register_scope("story", can_view)


def _media(tx: Tx, raw: str) -> list[dict[str, Any]]:
    out = []
    for blob_id in _dec_media.decode(raw):
        row = tx.one("SELECT mime, width, height, thumb_id FROM blobs WHERE id = ?", (blob_id,))
        if row is not None:
            out.append({"blob_id": blob_id, "type": row[0], "width": row[1], "height": row[2],
                        "thumbnail_id": row[3]})
    return out


def _story(tx: Tx, r: tuple[Any, ...]) -> StoryOut:
    return StoryOut(int(r[0]), profile(tx, int(r[1])), r[2], _media(tx, r[3]), r[4], int(r[6]), r[7], int(r[8]),
                    int(r[9]), int(r[10]), bool(r[11]), bool(r[5]))


def _visible_story(tx: Tx, viewer: int, story_id: int) -> StoryOut:
    row = tx.one(f"SELECT {_COLS} FROM stories s WHERE s.id = ? AND {VISIBLE}",
                 (viewer, story_id, *_vis_args(viewer)))
    if row is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no story {story_id}, or you may not see it")
    return _story(tx, row)


def _own_story(tx: Tx, caller: Caller, story_id: int) -> None:
    author = tx.scalar("SELECT author_id FROM stories WHERE id = ?", (story_id,))
    if author is None:
        raise DariError(ErrorCode.NOT_FOUND, f"no story {story_id}")
    if int(author) != caller.user_id:
        raise DariError(ErrorCode.FORBIDDEN, "this is not your story")


def _check_text(text: str, media: list[str]) -> None:
    if not text.strip() and not media:
        raise DariError(ErrorCode.INVALID_PARAMS, "a story needs text or a photo")
    if "\x00" in text:
        raise DariError(ErrorCode.INVALID_PARAMS, "text contains a NUL character")


def _photos(tx: Tx, caller: Caller, blob_ids: list[str], story_id: int, now: int) -> None:
    for info in media_mod.attach(tx, caller.user_id, blob_ids, "story", story_id, now):
        if info.kind not in ("image", "video"):
            raise DariError(ErrorCode.INVALID_PARAMS, f"a story takes photos and videos; {info.blob_id[:12]} is"
                            f" {info.type}")


class Stories:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def create(self, caller: Caller, p: c.StoryCreate) -> StoryOut:
        _check_text(p.text, p.media)
        now = now_ms()

        def fn(tx: Tx) -> StoryOut:
            sid = int(tx.scalar("INSERT INTO stories (author_id, text, media, visibility, created_at)"
                                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                                (caller.user_id, p.text, _enc.encode(list(dict.fromkeys(p.media))).decode(),
                                 p.visibility, now)))
            _photos(tx, caller, p.media, sid, now)
            return _visible_story(tx, caller.user_id, sid)

        return await self.core.db.write(fn)

    async def edit(self, caller: Caller, p: c.StoryEdit) -> StoryOut:
        now = now_ms()

        def fn(tx: Tx) -> StoryOut:
            _own_story(tx, caller, p.story_id)
            row = tx.one("SELECT text, media FROM stories WHERE id = ?", (p.story_id,))
            assert row is not None
            text = row[0] if p.text is None else p.text
            media = _dec_media.decode(row[1]) if p.media is None else list(dict.fromkeys(p.media))
            _check_text(text, media)
            if p.media is not None:
                media_mod.detach(tx, "story", p.story_id)
                _photos(tx, caller, media, p.story_id, now)
            tx.execute("UPDATE stories SET text = ?, media = ?, visibility = COALESCE(?, visibility), edited_at = ?"
                       " WHERE id = ?", (text, _enc.encode(media).decode(), p.visibility, now, p.story_id))
            return _visible_story(tx, caller.user_id, p.story_id)

        return await self.core.db.write(fn)

    async def delete(self, caller: Caller, p: c.StoryRef) -> dict[str, bool]:
        def fn(tx: Tx) -> None:
            _own_story(tx, caller, p.story_id)
            media_mod.detach(tx, "story", p.story_id)
            tx.execute("DELETE FROM stories WHERE id = ?", (p.story_id,))

        await self.core.db.write(fn)
        return {"ok": True}

    async def get(self, caller: Caller, p: c.StoryRef) -> StoryOut:
        now = now_ms()

        def fn(tx: Tx) -> StoryOut:
            story = _visible_story(tx, caller.user_id, p.story_id)
            if story.author.user_id != caller.user_id and tx.execute(
                    "INSERT INTO story_views (story_id, user_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (p.story_id, caller.user_id, now)):
                story.views += 1
            return story

        return await self.core.db.write(fn)

    async def feed(self, caller: Caller, p: c.StoryPage) -> dict[str, Any]:
        def fn(tx: Tx) -> dict[str, Any]:
            uid = caller.user_id
            rows = tx.all(f"SELECT {_COLS} FROM stories s WHERE s.id < ? AND (s.author_id = ? OR s.author_id IN"
                          f" (SELECT friend_id FROM friends WHERE user_id = ?)) AND {VISIBLE}"
                          " ORDER BY s.id DESC LIMIT ?",
                          (uid, p.before_id or 2**62, uid, uid, *_vis_args(uid), p.limit + 1))
            return {"stories": [_story(tx, r) for r in rows[:p.limit]], "has_more": len(rows) > p.limit}

        return await self.core.db.read(fn)

    async def profile(self, caller: Caller, p: c.StoryProfile) -> dict[str, Any]:
        def fn(tx: Tx) -> dict[str, Any]:
            user = profile(tx, p.user_id)
            rows = tx.all(f"SELECT {_COLS} FROM stories s WHERE s.author_id = ? AND s.id < ? AND {VISIBLE}"
                          " ORDER BY s.id DESC LIMIT ?",
                          (caller.user_id, p.user_id, p.before_id or 2**62, *_vis_args(caller.user_id), p.limit + 1))
            return {"user": user, "stories": [_story(tx, r) for r in rows[:p.limit]],
                    "has_more": len(rows) > p.limit}

        return await self.core.db.read(fn)

    async def like(self, caller: Caller, p: c.StoryLike) -> dict[str, Any]:
        now = now_ms()

        def fn(tx: Tx) -> dict[str, Any]:
            story = _visible_story(tx, caller.user_id, p.story_id)
            if p.on:
                n = tx.execute("INSERT INTO story_likes (story_id, user_id, created_at) VALUES (?, ?, ?)"
                               " ON CONFLICT DO NOTHING", (p.story_id, caller.user_id, now))
            else:
                n = tx.execute("DELETE FROM story_likes WHERE story_id = ? AND user_id = ?",
                               (p.story_id, caller.user_id))
            likes = int(tx.scalar("SELECT COUNT(*) FROM story_likes WHERE story_id = ?", (p.story_id,)))
            if n and p.on and story.author.user_id != caller.user_id:
                user_devices_event(tx, [story.author.user_id], "story.liked",
                                   {"story_id": p.story_id, "user": profile(tx, caller.user_id), "likes": likes}, now)
            return {"story_id": p.story_id, "liked": p.on, "likes": likes}

        return await self.core.db.write(fn)

    async def comment(self, caller: Caller, p: c.StoryComment) -> CommentOut:
        if not p.text.strip() or "\x00" in p.text:
            raise DariError(ErrorCode.INVALID_PARAMS, "comment text is empty or contains NUL")
        now = now_ms()

        def fn(tx: Tx) -> CommentOut:
            story = _visible_story(tx, caller.user_id, p.story_id)
            parent_author = None
            if p.parent_id is not None:
                parent = tx.one("SELECT story_id, parent_id, author_id FROM story_comments WHERE id = ? AND hidden = 0",
                                (p.parent_id,))
                if parent is None or int(parent[0]) != p.story_id:
                    raise DariError(ErrorCode.NOT_FOUND, f"no comment {p.parent_id} on story {p.story_id}")
                if parent[1] is not None:
                    raise DariError(ErrorCode.INVALID_PARAMS, "replies go one level deep: reply to the comment")
                parent_author = int(parent[2])
            cid = int(tx.scalar("INSERT INTO story_comments (story_id, author_id, parent_id, text, created_at)"
                                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                                (p.story_id, caller.user_id, p.parent_id, p.text, now)))
            out = CommentOut(cid, p.story_id, profile(tx, caller.user_id), p.text, now, p.parent_id)
            notify = {story.author.user_id, *([parent_author] if parent_author else [])} - {caller.user_id}
            user_devices_event(tx, sorted(notify), "story.commented", {"story_id": p.story_id, "comment": out}, now)
            return out

        return await self.core.db.write(fn)

    async def comments(self, caller: Caller, p: c.StoryRef) -> list[CommentOut]:
        def fn(tx: Tx) -> list[CommentOut]:
            _visible_story(tx, caller.user_id, p.story_id)
            rows = tx.all("SELECT id, author_id, text, created_at, parent_id FROM story_comments"
                          " WHERE story_id = ? AND hidden = 0 ORDER BY id", (p.story_id,))
            top: dict[int, CommentOut] = {}
            for r in rows:
                cm = CommentOut(int(r[0]), p.story_id, profile(tx, int(r[1])), r[2], int(r[3]), r[4])
                if r[4] is None:
                    top[cm.comment_id] = cm
                elif int(r[4]) in top:
                    top[int(r[4])].replies.append(cm)
            return list(top.values())

        return await self.core.db.read(fn)

    async def comment_delete(self, caller: Caller, p: c.CommentRef) -> dict[str, bool]:
        def fn(tx: Tx) -> None:
            row = tx.one("SELECT k.author_id, s.author_id FROM story_comments k JOIN stories s ON s.id = k.story_id"
                         " WHERE k.id = ?", (p.comment_id,))
            if row is None:
                raise DariError(ErrorCode.NOT_FOUND, f"no comment {p.comment_id}")
            if caller.user_id not in (int(row[0]), int(row[1])):
                raise DariError(ErrorCode.FORBIDDEN, "only the commenter or the story's author can delete it")
            tx.execute("DELETE FROM story_comments WHERE parent_id = ?", (p.comment_id,))
            tx.execute("DELETE FROM story_comments WHERE id = ?", (p.comment_id,))

        await self.core.db.write(fn)
        return {"ok": True}

    async def set_close_friends(self, caller: Caller, p: c.CloseFriends) -> list[int]:
        def fn(tx: Tx) -> list[int]:
            ids = sorted(set(p.user_ids) - {caller.user_id})
            for uid in ids:
                if tx.scalar("SELECT 1 FROM users WHERE id = ?", (uid,)) is None:
                    raise DariError(ErrorCode.NOT_FOUND, f"no user {uid}")
            tx.execute("DELETE FROM close_friends WHERE user_id = ?", (caller.user_id,))
            tx.executemany("INSERT INTO close_friends (user_id, friend_id) VALUES (?, ?)",
                           [(caller.user_id, uid) for uid in ids])
            return ids

        return await self.core.db.write(fn)

    async def close_friends(self, caller: Caller, p: m.NoParams) -> list[int]:
        return await self.core.db.read(lambda tx: [int(r[0]) for r in tx.all(
            "SELECT friend_id FROM close_friends WHERE user_id = ? ORDER BY friend_id", (caller.user_id,))])
