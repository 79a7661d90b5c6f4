"""Stories through a real server: visibility (friends, close friends, public, only me), feed paging,
edits, likes and comments with realtime notices, unique views, profiles, and story photos' access."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest
from PIL import Image

from dari.client import Client
from dari.client.media import upload
from dari.protocol.errors import DariError


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, format="JPEG")
    return out.getvalue()


def uid(c: Client) -> int:
    assert c.user is not None
    return int(c.user["user_id"])


async def status(c: Client, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(c.url + path,
                                                         headers={"Authorization": f"Bearer {c.token}"}) as r:
        return r.status


async def test_visibility_and_photo_access(make_user: Any) -> None:
    alice, bob, carol, dan = [await make_user(n) for n in ("alice", "bob", "carol", "dan")]
    # Alice counts Bob and Carol as friends; Dan added Alice, but she did not add him.
    for friend in (bob, carol):
        await alice.call("friend.add", handle=friend.user["handle"])  # type: ignore[index]
        await friend.call("friend.add", handle=alice.user["handle"])  # type: ignore[index]
    await dan.call("friend.add", handle=alice.user["handle"])  # type: ignore[index]
    await alice.call("story.set_close_friends", user_ids=[uid(bob)])
    assert await alice.call("story.close_friends") == [uid(bob)]
    blob = await upload(alice, photo())
    friends = await alice.call("story.create", text="friends only", media=[blob["blob_id"]], visibility="friends")
    close = await alice.call("story.create", text="close friends", visibility="close_friends")
    public = await alice.call("story.create", text="hello world", visibility="public")
    mine = await alice.call("story.create", text="diary", visibility="only_me")
    assert friends["media"][0]["blob_id"] == blob["blob_id"]

    def ids(page: dict[str, Any]) -> list[int]:
        return [s["story_id"] for s in page["stories"]]

    assert ids(await alice.call("story.feed")) == [mine["story_id"], public["story_id"], close["story_id"],
                                                   friends["story_id"]]
    assert ids(await bob.call("story.feed")) == [public["story_id"], close["story_id"], friends["story_id"]]
    assert ids(await carol.call("story.feed")) == [public["story_id"], friends["story_id"]]
    # Dan is not Alice's friend: only the public story, in her profile and his feed.
    assert ids(await dan.call("story.feed")) == [public["story_id"]]
    assert ids(await dan.call("story.profile", user_id=uid(alice))) == [public["story_id"]]
    for story in (friends, close, mine):
        with pytest.raises(DariError) as e:
            await dan.call("story.get", story_id=story["story_id"])
        assert e.value.code == "not_found"
    # ...nor the friends-only story's photo.
    assert await status(dan, f"/media/{blob['blob_id']}") == 403
    assert await status(carol, f"/media/{blob['blob_id']}") == 200
    # Blocking hides even public stories.
    await alice.call("friend.block", user_id=uid(dan))
    assert ids(await dan.call("story.profile", user_id=uid(alice))) == []
    # Changing visibility takes effect at once.
    await alice.call("story.edit", story_id=friends["story_id"], visibility="only_me")
    assert await status(carol, f"/media/{blob['blob_id']}") == 403
    with pytest.raises(DariError) as e:
        await carol.call("story.edit", story_id=public["story_id"], text="mine now")
    assert e.value.code == "forbidden"
    with pytest.raises(DariError) as e:
        await carol.call("story.create", text="  ")
    assert e.value.code == "invalid_params"


async def test_likes_comments_views_and_notices(make_user: Any) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    for friend in (bob, carol):
        await alice.call("friend.add", handle=friend.user["handle"])  # type: ignore[index]
        await friend.call("friend.add", handle=alice.user["handle"])  # type: ignore[index]
    story = await alice.call("story.create", text="첫 스토리")
    alice.drain_events()
    res = await bob.call("story.like", story_id=story["story_id"])
    assert res["likes"] == 1
    ev = await alice.next_event("story.liked")
    assert ev.payload["story_id"] == story["story_id"] and ev.payload["user"]["user_id"] == uid(bob)
    await bob.call("story.like", story_id=story["story_id"])   # liking twice counts once
    top = await bob.call("story.comment", story_id=story["story_id"], text="멋져요")
    ev = await alice.next_event("story.commented")
    assert ev.payload["comment"]["text"] == "멋져요"
    reply = await carol.call("story.comment", story_id=story["story_id"], text="me too", parent_id=top["comment_id"])
    bob_ev = await bob.next_event("story.commented")    # the parent comment's author hears of the reply
    assert bob_ev.payload["comment"]["comment_id"] == reply["comment_id"]
    with pytest.raises(DariError) as e:   # one level only
        await alice.call("story.comment", story_id=story["story_id"], text="deeper", parent_id=reply["comment_id"])
    assert e.value.code == "invalid_params"
    comments = await alice.call("story.comments", story_id=story["story_id"])
    assert [c["comment_id"] for c in comments] == [top["comment_id"]]
    assert [r["comment_id"] for r in comments[0]["replies"]] == [reply["comment_id"]]
    # Unique views: Bob twice and Carol once make two; the author's own reads do not count.
    await bob.call("story.get", story_id=story["story_id"])
    await bob.call("story.get", story_id=story["story_id"])
    await carol.call("story.get", story_id=story["story_id"])
    got = await alice.call("story.get", story_id=story["story_id"])
    assert (got["views"], got["likes"], got["comments"], got["liked"]) == (2, 1, 2, False)
    with pytest.raises(DariError) as e:   # Carol cannot delete Bob's comment; Alice (the author) can
        await carol.call("story.comment_delete", comment_id=top["comment_id"])
    assert e.value.code == "forbidden"
    await alice.call("story.comment_delete", comment_id=top["comment_id"])
    assert await alice.call("story.comments", story_id=story["story_id"]) == []
    await alice.call("story.delete", story_id=story["story_id"])
    with pytest.raises(DariError):
        await bob.call("story.get", story_id=story["story_id"])


async def test_feed_paging(make_user: Any) -> None:
    alice = await make_user("alice")
    made = [(await alice.call("story.create", text=f"post {i}", visibility="public"))["story_id"] for i in range(5)]
    first = await alice.call("story.feed", limit=2)
    assert [s["story_id"] for s in first["stories"]] == made[::-1][:2] and first["has_more"]
    second = await alice.call("story.feed", limit=2, before_id=first["stories"][-1]["story_id"])
    assert [s["story_id"] for s in second["stories"]] == made[::-1][2:4]
    last = await alice.call("story.feed", limit=2, before_id=second["stories"][-1]["story_id"])
    assert [s["story_id"] for s in last["stories"]] == made[:1] and not last["has_more"]
