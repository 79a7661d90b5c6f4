"""The first path every user takes: two people sign up, befriend, chat, read."""

from __future__ import annotations


async def test_two_users_chat_and_read(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    await alice.call("friend.add", handle=bob.user["handle"])
    added = await bob.next_event("friend.added_you")
    assert added.payload["user"]["user_id"] == alice.user["user_id"]
    chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
    sent = await alice.send_message(chat["chat_id"], "hello bob")
    assert sent["unread"] == 1
    got = await bob.next_event("message.new")
    assert got.payload["text"] == "hello bob"
    await bob.call("chat.read", chat_id=chat["chat_id"], seq=sent["seq"])
    read = await alice.next_event("chat.read")
    assert read.payload["user_id"] == bob.user["user_id"] and read.payload["seq"] == sent["seq"]
    page = await alice.call("message.history", chat_id=chat["chat_id"])
    assert [m["unread"] for m in page["messages"] if m["kind"] == "text"] == [0]
