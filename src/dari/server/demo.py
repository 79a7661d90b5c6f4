"""`dari serve --demo`: a few accounts, friendships, a group and some history, so a newcomer sees a
living messenger. Idempotent: running it again changes nothing."""

from __future__ import annotations

import logging

from dari.protocol import methods as m
from dari.protocol.errors import DariError
from dari.services.core import Caller
from dari.services.registry import Services

log = logging.getLogger("dari.demo")
DEMO_PASSWORD = "dari-demo-pass"
PEOPLE = [("minji", "Minji 민지"), ("wei", "Wei 伟"), ("yuki", "Yuki ゆき"), ("sam", "Sam")]


async def seed_demo(services: Services) -> None:
    callers: dict[str, Caller] = {}
    try:
        for handle, name in PEOPLE:
            res = await services.accounts.signup(None, m.Signup(handle=handle, display_name=name,
                                                                password=DEMO_PASSWORD, device_name="demo"))
            callers[handle] = Caller(res.user.user_id, res.device_id)
    except DariError:
        log.info("demo accounts exist already; log in as minji / wei / yuki / sam, password %r", DEMO_PASSWORD)
        return
    for a, _ in PEOPLE:
        for b, _ in PEOPLE:
            if a != b:
                await services.friends.add(callers[a], m.FriendAdd(handle=b))
    minji, wei, yuki, sam = (callers[h] for h, _ in PEOPLE)
    direct = await services.chats.open_direct(minji, m.OpenDirect(user_id=wei.user_id))
    group = await services.chats.create_group(minji, m.CreateGroup(
        title="Weekend hike 🥾", member_ids=[wei.user_id, yuki.user_id, sam.user_id]))
    script = [
        (minji, direct.chat_id, "안녕하세요! Are we still on for Saturday?"),
        (wei, direct.chat_id, "当然! See you at 9."),
        (minji, group.chat_id, "Trail options: Bukhansan or Gwanaksan?"),
        (yuki, group.chat_id, "北漢山がいいです!"),
        (sam, group.chat_id, "Bukhansan 👍 I'll bring snacks"),
        (wei, group.chat_id, "I'm in. 我带水。"),
    ]
    for i, (who, chat, text) in enumerate(script):
        await services.messages.send(who, m.MessageSend(chat_id=chat, client_id=f"demo-{i}", text=text))
    await services.chats.create_open(sam, m.CreateOpen(
        title="dari newcomers", nickname="sam-host", listed=True,
        description="처음 오셨나요? 질문 환영 · Questions welcome · 欢迎提问 · 質問歓迎", tags=["help", "도움말"]))
    log.info("demo ready: log in as minji, wei, yuki or sam with password %r", DEMO_PASSWORD)
