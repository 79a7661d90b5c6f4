"""A block is never revealed to the blocked person (as in KakaoTalk), through the SDK against a real
server: a friend add looks like any add, 1:1 messages look sent but never reach the blocker."""

from __future__ import annotations

from typing import Any

from dari.client import Client


async def _events_until(client: Client, name: str, done: Any) -> list[Any]:
    """Every event up to and including the first `name` event for which done(payload) holds: events
    arrive in the log's order, so whatever the server sent before that barrier is in the list."""
    seen = []
    while True:
        ev = await client.next_event(timeout=30)
        seen.append(ev)
        if ev.name == name and done(ev.payload):
            return seen


async def test_add_by_a_blocked_user_looks_like_any_add(make_user) -> None:
    alice, bob, carol, dave = [await make_user(n) for n in ("alice", "bob", "carol", "dave")]
    await alice.call("friend.block", user_id=bob.user["user_id"])

    blocked_add = await bob.call("friend.add", handle=alice.user["handle"])
    normal_add = await bob.call("friend.add", handle=dave.user["handle"])
    # The same answer as for someone who did not block him, field for field but the person.
    assert blocked_add["user"]["user_id"] == alice.user["user_id"]
    assert {k: v for k, v in blocked_add.items() if k != "user"} == \
        {k: v for k, v in normal_add.items() if k != "user"}
    assert blocked_add["user"].keys() == normal_add["user"].keys()
    added = await _events_until(bob, "friend.added", lambda p: p["user"]["user_id"] == dave.user["user_id"])
    assert [e.payload["user"]["user_id"] for e in added if e.name == "friend.added"] == \
        [alice.user["user_id"], dave.user["user_id"]]
    assert {f["user"]["user_id"] for f in await bob.call("friend.list")} == \
        {alice.user["user_id"], dave.user["user_id"]}
    # Adding again answers the same way too.
    assert await bob.call("friend.add", handle=alice.user["handle"]) == blocked_add

    # alice hears nothing of bob; carol's add afterwards is the first "added you" she gets.
    await carol.call("friend.add", handle=alice.user["handle"])
    seen = await _events_until(alice, "friend.added_you", lambda p: True)
    assert [e.payload["user"]["user_id"] for e in seen if e.name == "friend.added_you"] == [carol.user["user_id"]]
    assert await alice.call("friend.list") == []
    assert [u["user_id"] for u in await alice.call("friend.blocked")] == [bob.user["user_id"]]


async def test_blocked_users_direct_messages_look_sent_but_are_not_delivered(make_user) -> None:
    alice, bob, carol = [await make_user(n) for n in ("alice", "bob", "carol")]
    chat = (await bob.call("chat.open_direct", user_id=alice.user["user_id"]))["chat_id"]
    before = await bob.send_message(chat, "before the block")
    await alice.call("friend.block", user_id=bob.user["user_id"])

    sent = await bob.call("message.send", chat_id=chat, client_id="withheld-1", text="hello? are you there")
    assert sent["seq"] == before["seq"] + 1 and sent["unread"] == 1   # looks sent, not yet read
    mine = (await bob.call("message.history", chat_id=chat))["messages"]
    assert mine[-1]["text"] == "hello? are you there" and mine[-1]["unread"] == 1

    # alice: no event for it (carol's message is the first new one she gets), not in her history,
    # her chat list, her unread count or her search.
    carol_chat = (await carol.call("chat.open_direct", user_id=alice.user["user_id"]))["chat_id"]
    await carol.send_message(carol_chat, "barrier")
    seen = await _events_until(alice, "message.new", lambda p: p["text"] == "barrier")
    assert [e.payload["text"] for e in seen if e.name == "message.new"] == ["before the block", "barrier"]
    texts = [m["text"] for m in (await alice.call("message.history", chat_id=chat))["messages"]]
    assert "hello? are you there" not in texts and "before the block" in texts
    listed = {c["chat_id"]: c for c in await alice.call("chat.list")}[chat]
    assert listed["last_message"]["text"] == "before the block"
    assert listed["unread"] == 1 and listed["last_seq"] == before["seq"]
    assert await alice.call("message.search", query="are you there") == []

    # alice reading her chat does not mark bob's withheld message read on his side.
    await alice.call("chat.read", chat_id=chat, seq=listed["last_seq"])
    mine = (await bob.call("message.history", chat_id=chat))["messages"]
    assert mine[-1]["unread"] == 1 and mine[-2]["unread"] == 0

    # Once unblocked, bob's next message arrives; the withheld one stays withheld.
    await alice.call("friend.unblock", user_id=bob.user["user_id"])
    after = await bob.send_message(chat, "after the unblock")
    seen = await _events_until(alice, "message.new", lambda p: p["text"] == "after the unblock")
    assert "hello? are you there" not in [e.payload.get("text") for e in seen]
    texts = [m["text"] for m in (await alice.call("message.history", chat_id=chat))["messages"]]
    assert texts[-2:] == ["before the block", "after the unblock"] and after["unread"] == 1


async def test_new_direct_chat_with_a_blocker_stays_invisible_to_them(make_user) -> None:
    alice, bob = [await make_user(n) for n in ("alice", "bob")]
    await alice.call("friend.block", user_id=bob.user["user_id"])
    detail = await bob.call("chat.open_direct", user_id=alice.user["user_id"])
    # bob sees an ordinary 1:1 chat titled with alice's name, both of them in it.
    assert detail["title"] == "Alice"
    assert {m["user_id"] for m in detail["members"]} == {alice.user["user_id"], bob.user["user_id"]}
    sent = await bob.send_message(detail["chat_id"], "hi, it's bob")
    assert sent["unread"] == 1
    assert detail["chat_id"] not in [c["chat_id"] for c in await alice.call("chat.list")]
    mine = {c["chat_id"]: c for c in await bob.call("chat.list")}[detail["chat_id"]]
    assert mine["title"] == "Alice" and mine["last_message"]["text"] == "hi, it's bob"


def test_cli_renders_system_lines_from_the_event_not_the_stored_text() -> None:
    from dari.cli.render import message_line, system_line
    msg = {"seq": 3, "created_at": 0, "kind": "system", "text": "stale text",
           "system": {"event": "members_invited", "actor": {"id": 1, "name": "Minji"},
                      "users": [{"id": 2, "name": "Jun"}, {"id": 3, "name": "Sora"}, {"id": 4, "name": "Ara"}]}}
    assert system_line(msg) == "Minji invited Jun, Sora and Ara"
    assert "— Minji invited Jun, Sora and Ara —" in message_line(msg).plain
    # An event this CLI does not know yet, or an old server without events: the stored text.
    assert system_line({**msg, "system": {"event": "from_the_future"}}) == "stale text"
    assert system_line({"kind": "system", "text": "old server line"}) == "old server line"
