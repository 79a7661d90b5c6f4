"""Chats and messages: 1:1, groups, open chats, replies, reactions, edit, unsend, unread counters."""

from __future__ import annotations

import asyncio

import pytest

from dari.protocol.errors import DariError, ErrorCode


async def test_direct_chat_is_one_per_pair(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    a = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    b = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
    assert a["chat_id"] == b["chat_id"] and a["kind"] == "direct"
    assert a["title"] == bob.user["display_name"] and b["title"] == alice.user["display_name"]
    with pytest.raises(DariError) as info:
        await alice.call("chat.open_direct", user_id=alice.user["user_id"])
    assert info.value.code == ErrorCode.INVALID_PARAMS


async def test_group_lifecycle_with_system_messages(make_user) -> None:
    alice, bob, carol, dan = [await make_user(n) for n in ("alice", "bob", "carol", "dan")]
    g = await alice.call("chat.create_group", title="Trip", member_ids=[bob.user["user_id"], carol.user["user_id"]])
    gid = g["chat_id"]
    assert {m["user_id"] for m in g["members"]} == {alice.user["user_id"], bob.user["user_id"], carol.user["user_id"]}
    assert next(m for m in g["members"] if m["user_id"] == alice.user["user_id"])["role"] == "owner"
    await bob.call("chat.invite", chat_id=gid, user_ids=[dan.user["user_id"]])
    await alice.call("chat.rename", chat_id=gid, title="Trip 2027")
    with pytest.raises(DariError) as info:
        await bob.call("chat.remove_member", chat_id=gid, user_id=carol.user["user_id"])
    assert info.value.code == ErrorCode.FORBIDDEN
    await alice.call("chat.remove_member", chat_id=gid, user_id=carol.user["user_id"])
    await dan.call("chat.leave", chat_id=gid)
    page = await bob.call("message.history", chat_id=gid)
    system = [m["text"] for m in page["messages"] if m["kind"] == "system"]
    assert any("created the group" in t for t in system)
    assert any("invited" in t for t in system)
    assert any("renamed the chat" in t for t in system)
    assert any("removed" in t for t in system)
    assert any(t.endswith("left") for t in system)
    with pytest.raises(DariError) as info:
        await carol.call("message.history", chat_id=gid)
    assert info.value.code == ErrorCode.FORBIDDEN
    detail = await bob.call("chat.get", chat_id=gid)
    assert detail["title"] == "Trip 2027" and len(detail["members"]) == 2
    await alice.call("chat.leave", chat_id=gid)
    detail = await bob.call("chat.get", chat_id=gid)
    assert detail["owner_id"] == bob.user["user_id"]


async def test_group_member_limit(make_user) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    g = await alice.call("chat.create_group", title="Tiny", member_ids=[bob.user["user_id"]], member_limit=2)
    with pytest.raises(DariError) as info:
        await alice.call("chat.invite", chat_id=g["chat_id"], user_ids=[carol.user["user_id"]])
    assert info.value.code == ErrorCode.LIMIT_EXCEEDED


async def test_open_chat_nicknames_hide_profiles(make_user) -> None:
    host, guest, lurker = [await make_user(n) for n in ("host", "guest", "lurker")]
    room = await host.call("chat.create_open", title="Seoul food", nickname="kimchi")
    code = room["link_code"]
    joined = await guest.call("chat.join_open", link_code=code, nickname="bibimbap")
    names = {m["display_name"] for m in joined["members"]}
    assert names == {"kimchi", "bibimbap"}
    assert all(m["handle"] == "" for m in joined["members"])
    with pytest.raises(DariError) as info:
        await lurker.call("chat.join_open", link_code=code, nickname="kimchi")
    assert info.value.code == ErrorCode.CONFLICT
    msg = await guest.send_message(joined["chat_id"], "맛집 추천해주세요")
    assert msg["sender_name"] == "bibimbap"
    # the sender's id is visible in the room, but it does not unmask the real profile
    with pytest.raises(DariError) as info:
        await host.call("user.get", user_id=guest.user["user_id"])
    assert info.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(DariError) as info:
        await guest.call("chat.join_open", link_code="nonexistent1", nickname="x")
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_chat_list_order_badges_preview_mute(make_user) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    ab = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
    ac = await carol.call("chat.open_direct", user_id=alice.user["user_id"])
    await bob.send_message(ab["chat_id"], "one")
    await bob.send_message(ab["chat_id"], "two")
    await asyncio.sleep(0.01)
    await carol.send_message(ac["chat_id"], "latest")
    chats = await alice.call("chat.list")
    assert [c["chat_id"] for c in chats] == [ac["chat_id"], ab["chat_id"]]
    assert [c["unread"] for c in chats] == [1, 2]
    assert chats[0]["last_message"]["text"] == "latest"
    await alice.call("chat.mute", chat_id=ab["chat_id"], muted=True)
    await alice.call("chat.read", chat_id=ab["chat_id"], seq=chats[1]["last_seq"])
    chats = {c["chat_id"]: c for c in await alice.call("chat.list")}
    assert chats[ab["chat_id"]]["muted"] is True and chats[ab["chat_id"]]["unread"] == 0


async def test_unread_counter_on_every_message_updates_live(make_user) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    g = await alice.call("chat.create_group", title="Counters",
                         member_ids=[bob.user["user_id"], carol.user["user_id"]])
    gid = g["chat_id"]
    m1 = await alice.send_message(gid, "first")
    assert m1["unread"] == 2
    ev = await bob.next_event("message.new")
    while ev.payload["seq"] != m1["seq"]:
        ev = await bob.next_event("message.new")
    assert ev.payload["unread"] == 2
    await bob.call("chat.read", chat_id=gid, seq=m1["seq"])
    read = await carol.next_event("chat.read")
    # bob never read the "created the group" system message (seq 1), so his pointer was at 0
    assert read.payload == {"chat_id": gid, "user_id": bob.user["user_id"], "seq": m1["seq"], "prev_seq": 0}
    page = await carol.call("message.history", chat_id=gid)
    assert page["messages"][-1]["unread"] == 1
    await carol.call("chat.read", chat_id=gid, seq=m1["seq"])
    page = await alice.call("message.history", chat_id=gid)
    assert page["messages"][-1]["unread"] == 0


async def test_replies_mentions_reactions_edit_unsend(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    cid = chat["chat_id"]
    m1 = await alice.send_message(cid, "lunch?")
    m2 = await bob.send_message(cid, "@alice yes!", reply_to=m1["seq"], mentions=[alice.user["user_id"]])
    assert m2["reply_to"] == m1["seq"] and m2["mentions"] == [alice.user["user_id"]]
    with pytest.raises(DariError) as info:
        await bob.send_message(cid, "to the future", reply_to=999)
    assert info.value.code == ErrorCode.INVALID_PARAMS
    r = await alice.call("message.react", chat_id=cid, seq=m2["seq"], emoji="❤️")
    assert r == {"❤️": [alice.user["user_id"]]}
    ev = await bob.next_event("message.reaction")
    assert ev.payload["emoji"] == "❤️" and ev.payload["on"] is True
    with pytest.raises(DariError) as info:
        await alice.call("message.react", chat_id=cid, seq=m2["seq"], emoji="lol")
    assert info.value.code == ErrorCode.INVALID_PARAMS
    edited = await alice.call("message.edit", chat_id=cid, seq=m1["seq"], text="lunch at 12?")
    assert edited["text"] == "lunch at 12?" and edited["edited_at"]
    ev = await bob.next_event("message.edited")
    assert ev.payload["text"] == "lunch at 12?"
    await alice.call("message.unsend", chat_id=cid, seq=m1["seq"])
    ev = await bob.next_event("message.unsent")
    assert ev.payload == {"chat_id": cid, "seq": m1["seq"]}
    page = await bob.call("message.history", chat_id=cid)
    first = next(m for m in page["messages"] if m["seq"] == m1["seq"])
    assert first["unsent"] is True and first["text"] == ""
    assert await bob.call("message.search", query="lunch at") == []


async def test_unsend_window_expires(server_factory, make_user) -> None:
    from dari.client import Client
    from tests.conftest import PASSWORD

    srv = server_factory(extra_env={"DARI_UNSEND_WINDOW_S": "1"})
    a, b = Client(srv.url), Client(srv.url)
    try:
        await a.signup("old_sender", "A", PASSWORD)
        await b.signup("old_reader", "B", PASSWORD)
        chat = await a.call("chat.open_direct", user_id=b.user["user_id"])
        m = await a.send_message(chat["chat_id"], "oops")
        await asyncio.sleep(1.2)
        with pytest.raises(DariError) as info:
            await a.call("message.unsend", chat_id=chat["chat_id"], seq=m["seq"])
        assert info.value.code == ErrorCode.EXPIRED
    finally:
        await a.close()
        await b.close()


async def test_history_pages_backwards(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    for i in range(25):
        await alice.send_message(chat["chat_id"], f"m{i}")
    page = await bob.call("message.history", chat_id=chat["chat_id"], limit=10)
    assert [m["text"] for m in page["messages"]] == [f"m{i}" for i in range(15, 25)] and page["has_more"]
    seen = [m["seq"] for m in page["messages"]]
    while page["has_more"]:
        page = await bob.call("message.history", chat_id=chat["chat_id"], limit=10, before_seq=seen[0])
        seen = [m["seq"] for m in page["messages"]] + seen
    assert seen == list(range(1, 26))


@pytest.mark.parametrize("query,expected", [
    ("hiking", "Saturday hiking plan"),
    ("등산", "토요일 등산 가요"),          # Korean, two syllables: shorter than a trigram
    ("등산 가요", "토요일 등산 가요"),
    ("北京烤鸭", "我们去吃北京烤鸭吧"),
    ("ラーメン", "今日はラーメンを食べたい"),
])
async def test_search_cjk_and_latin(make_user, query: str, expected: str) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    corpus = ("Saturday hiking plan", "토요일 등산 가요", "我们去吃北京烤鸭吧", "今日はラーメンを食べたい",
              "100% sure_thing")
    for text in corpus:
        await alice.send_message(chat["chat_id"], text)
    hits = await bob.call("message.search", query=query)
    assert [h["text"] for h in hits] == [expected]
    assert hits[0]["chat_title"] == alice.user["display_name"]


async def test_search_escapes_wildcards(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    await alice.send_message(chat["chat_id"], "100% sure_thing")
    await alice.send_message(chat["chat_id"], "100 percent")
    assert [h["text"] for h in await bob.call("message.search", query="0%")] == ["100% sure_thing"]
    assert await bob.call("message.search", query='"') == []


async def test_typing_and_presence(make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    await bob.call("friend.add", handle=alice.user["handle"])
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    await alice.call("typing.set", chat_id=chat["chat_id"], typing=True)
    ev = await bob.next_event("typing")
    assert ev.payload == {"chat_id": chat["chat_id"], "user_id": alice.user["user_id"], "typing": True}
    assert ev.cursor is None   # ephemeral: never logged
    [p] = await bob.call("presence.get", user_ids=[alice.user["user_id"]])
    assert p["online"] is True
    await alice.close()
    ev = await bob.next_event("presence")
    assert ev.payload["online"] is False and ev.payload["last_seen_at"]


def test_open_chat_link_codes_never_start_like_an_option() -> None:
    """A code starting with '-' broke `dari chat open-join CODE` (argparse took it for an option):
    about one open chat in 32 got one. Codes are still URL-safe and unique-looking."""
    import re

    from dari.services.chats import new_link_code

    codes = [new_link_code() for _ in range(5000)]
    assert all(c[0].isalnum() for c in codes)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", c) for c in codes)
    assert len(set(codes)) == len(codes)
