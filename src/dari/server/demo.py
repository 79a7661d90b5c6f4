"""`dari serve --demo`: a few accounts, friendships, a group and some history, so a newcomer sees a
living messenger. Idempotent: running it again changes nothing."""

from __future__ import annotations

import logging

from dari.protocol import content as c
from dari.protocol import methods as m
from dari.protocol.errors import DariError
from dari.services.board_rights import insert_board
from dari.services.core import Caller, now_ms
from dari.services.registry import Services
from dari.storage.base import Tx

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
        await seed_free_board(services)   # demo data made before the board existed gets it now
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
    await seed_free_board(services)
    log.info("demo ready: log in as minji, wei, yuki or sam with password %r", DEMO_PASSWORD)


FREE_BOARD = "free"
# (writer, title, body, [(commenter, comment)])
POSTS = [
    ("sam", "Welcome to the free board 👋",
     "Anyone can read this board without an account; log in to write or comment.\n"
     "누구나 로그인 없이 읽을 수 있어요. 글쓰기와 댓글은 로그인 후에.",
     [("minji", "반가워요! 잘 부탁드립니다 🙂"), ("yuki", "よろしくお願いします!")]),
    ("minji", "김치찌개 맛있게 끓이는 법",
     "신김치를 먼저 돼지고기와 같이 볶아 주세요. 물은 쌀뜨물로, 마지막에 두부와 대파.\n"
     "Tip: fry the sour kimchi with the pork first, then add rice water.",
     [("wei", "I tried it yesterday, 太好吃了!"), ("sam", "Rice water, really? Trying it tonight.")]),
    ("wei", "Bukhansan on Saturday: who's in?",
     "Meeting at Bukhansanseong trailhead, 9:00. Bring water and gloves.\n토요일 9시, 북한산성 입구에서 만나요.",
     [("minji", "저요! 김밥 싸 갈게요."), ("yuki", "I'll come too 🥾")]),
    ("yuki", "서울 카페 추천해 주세요 ☕",
     "Looking for a quiet cafe near Hongdae to study in. 조용한 곳이면 좋겠어요.",
     [("sam", "Try the little place behind Sangsu station, lots of sockets.")]),
]


async def seed_free_board(services: Services) -> None:
    """The public free board with a few posts and comments; minji may create boards of her own."""
    now = now_ms()

    def make(tx: Tx) -> tuple[int, dict[str, int]] | None:
        if tx.scalar("SELECT 1 FROM boards WHERE slug = ?", (FREE_BOARD,)):
            return None
        ids = {r[0]: int(r[1]) for r in tx.all("SELECT handle, id FROM users WHERE handle IN (?, ?, ?, ?)",
                                              tuple(h for h, _ in PEOPLE))}
        if len(ids) < len(PEOPLE):
            return None
        board = insert_board(tx, None, FREE_BOARD, "자유게시판 Free board", False, now)
        tx.execute("INSERT INTO board_creators (user_id, granted_by, granted_at) VALUES (?, NULL, ?)"
                   " ON CONFLICT (user_id) DO NOTHING", (ids["minji"], now))
        return board.board_id, ids

    made = await services.core.db.write(make)
    if made is None:
        return
    board_id, ids = made
    boards = services.content.boards
    for writer, title, body, comments in POSTS:
        post = await boards.post_create(Caller(ids[writer], 0), c.PostCreate(board_id=board_id, title=title,
                                                                              body=body))
        for who, text in comments:
            await boards.comment(Caller(ids[who], 0), c.BoardComment(post_id=post["post_id"], body=text))
    log.info("demo free board ready: open the Boards tab, no login needed to read")
