"""Friend invites and the open-chat directory (issue 13) through the SDK against a real server,
on SQLite and on PostgreSQL (the directory's LIKE search and the new tables must be portable)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dari.client import Client
from dari.protocol.errors import DariError, ErrorCode
from tests.conftest import PASSWORD
from tests.test_storage_contract import pg_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def srv(request: pytest.FixtureRequest, server_factory: Any) -> Any:
    if request.param == "sqlite":
        return server_factory()
    return server_factory(args=["--database", request.getfixturevalue("pg_url")])


async def _users(srv: Any, *names: str) -> list[Client]:
    out = []
    for name in names:
        c = Client(srv.url)
        await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
        out.append(c)
    return out


async def _error(coro: Any) -> DariError:
    with pytest.raises(DariError) as exc:
        await coro
    return exc.value


async def test_friend_invite_add_rotate_revoke_and_blocks(srv: Any) -> None:
    a, b, c = await _users(srv, "ann", "ben", "cal")
    try:
        inv = await a.call("friend.invite")
        assert inv == await a.call("friend.invite")            # stable until rotated
        code = inv["code"]
        assert any(ch.isupper() for ch in code)                 # never mistaken for a handle
        pre = await b.call("friend.invite_preview", code=code)
        assert pre["user"]["handle"] == a.user["handle"] and not pre["is_friend"] and not pre["is_self"]
        assert (await a.call("friend.invite_preview", code=code))["is_self"]
        f = await b.call("friend.add_by_invite", code=code)
        assert f["user"]["user_id"] == a.user["user_id"]
        assert a.user["user_id"] in [x["user"]["user_id"] for x in await b.call("friend.list")]
        ev = await a.next_event("friend.added_you", timeout=15)
        assert ev.payload["user"]["user_id"] == b.user["user_id"]
        assert (await b.call("friend.invite_preview", code=code))["is_friend"]
        assert (await _error(a.call("friend.add_by_invite", code=code))).code == ErrorCode.INVALID_PARAMS

        new = (await a.call("friend.invite_rotate"))["code"]
        assert new != code
        err = await _error(c.call("friend.invite_preview", code=code))
        assert err.code == ErrorCode.NOT_FOUND and "not valid" in err.message
        assert (await _error(c.call("friend.add_by_invite", code=code))).code == ErrorCode.NOT_FOUND
        assert (await _error(c.call("friend.add_by_invite", code="bad code!"))).code == ErrorCode.INVALID_PARAMS

        # A blocked user's add by invite looks like any add, and the blocker is not told.
        await a.call("account.update_profile", status_message="secret status")
        await a.call("friend.block", user_id=c.user["user_id"])
        pre = await c.call("friend.invite_preview", code=new)
        assert pre["user"]["status_message"] == ""
        f = await c.call("friend.add_by_invite", code=new)
        assert f["user"]["user_id"] == a.user["user_id"] and f["user"]["status_message"] == ""
        assert a.user["user_id"] in [x["user"]["user_id"] for x in await c.call("friend.list")]

        assert (await a.call("friend.invite_revoke"))["revoked"]
        assert (await _error(b.call("friend.invite_preview", code=new))).code == ErrorCode.NOT_FOUND
        assert (await a.call("friend.invite"))["code"] not in (code, new)
        # Only the added_you from ben arrived; cal's add was silent.
        events = [e for e in a.drain_events() if e.name == "friend.added_you"]
        assert all(e.payload["user"]["user_id"] != c.user["user_id"] for e in events)
    finally:
        for x in (a, b, c):
            await x.close()


async def test_open_chat_directory_search_preview_and_listing(srv: Any) -> None:
    a, b = await _users(srv, "owner", "finder")
    try:
        listed = await a.call("chat.create_open", title="서울 등산 모임", nickname="대장", listed=True,
                              description="주말마다 북한산에 갑니다 Weekend HIKES", tags=["등산", "Seoul"])
        assert listed["listed"] and listed["tags"] == ["등산", "Seoul"]
        hidden = await a.call("chat.create_open", title="등산 비밀방", nickname="대장")
        other = await a.call("chat.create_open", title="北京美食", nickname="吃货", listed=True, tags=["美食"])
        await b.call("chat.join_open", link_code=other["link_code"], nickname="객")

        async def codes(query: str, **kw: Any) -> list[str]:
            page = await b.call("chat.directory", query=query, **kw)
            return [x["link_code"] for x in page["chats"]]

        assert await codes("등산") == [listed["link_code"]]        # the unlisted room never shows
        assert await codes("북한산") == [listed["link_code"]]      # description, CJK substring
        assert await codes("hikes weekend") == [listed["link_code"]]  # case-folded, every word
        assert await codes("seoul") == [listed["link_code"]]       # tags
        assert await codes("美食") == [other["link_code"]]
        assert await codes("등산 美食") == []
        assert await codes("%") == [] and await codes("_") == []  # LIKE wildcards are literal
        everything = await b.call("chat.directory")
        assert [x["link_code"] for x in everything["chats"]] == [other["link_code"], listed["link_code"]]
        assert everything["chats"][0]["member_count"] == 2 and everything["chats"][0]["chat_id"] == other["chat_id"]
        assert everything["chats"][1]["chat_id"] is None and everything["next_offset"] is None
        page1 = await b.call("chat.directory", limit=1)
        assert page1["next_offset"] == 1
        page2 = await b.call("chat.directory", limit=1, offset=1)
        assert [x["link_code"] for x in page2["chats"]] == [listed["link_code"]]

        # The preview of an unlisted room works by its link (whoever has the link may join).
        pre = await b.call("chat.open_preview", link_code=hidden["link_code"])
        assert pre["title"] == "등산 비밀방" and pre["member_count"] == 1 and not pre["listed"]
        assert (await _error(b.call("chat.open_preview", link_code="nosuchcode"))).code == ErrorCode.NOT_FOUND

        # Listing is the owner's to change; a rename is searchable at once.
        err = await _error(b.call("chat.open_settings", chat_id=other["chat_id"], listed=False))
        assert err.code == ErrorCode.FORBIDDEN
        await a.call("chat.open_settings", chat_id=hidden["chat_id"], listed=True, description="비밀 아님")
        assert hidden["link_code"] in await codes("비밀")
        await a.call("chat.open_settings", chat_id=listed["chat_id"], listed=False)
        assert await codes("등산") == [hidden["link_code"]]
        await a.call("chat.rename", chat_id=hidden["chat_id"], title="Jeju Trail")
        assert await codes("jeju") == [hidden["link_code"]]

        for bad in ({"query": "x" * 101}, {"query": " ".join("w" * 9)}, {"limit": 51}, {"offset": 5000}):
            assert (await _error(b.call("chat.directory", **bad))).code == ErrorCode.INVALID_PARAMS
        bad_tags = await _error(a.call("chat.open_settings", chat_id=hidden["chat_id"], tags=["two words"]))
        assert bad_tags.code == ErrorCode.INVALID_PARAMS
    finally:
        for x in (a, b):
            await x.close()
