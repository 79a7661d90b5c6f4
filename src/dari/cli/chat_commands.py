"""`dari chat ...` and `dari msg ...`: chats, groups, open chats and messages.

`dari chat` takes either a subcommand (`dari chat list`) or a chat (`dari chat 12`, `dari chat minji`)
for the interactive chat; argparse cannot mix the two, so `chat` keeps the rest of the line and
parses it here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from rich.text import Text

from dari.cli import invite_cmd
from dari.cli.render import chat_table, clean, message_line, simple_table
from dari.cli.runtime import (
    Ctx,
    chat_ref,
    common_options,
    known_direct,
    remember_direct,
    report_outbox_events,
    run,
    user_ref,
)
from dari.protocol.errors import DariError, ErrorCode

Leaf = Callable[..., argparse.ArgumentParser]
SEND_WAIT = 10.0


# -- chats ---------------------------------------------------------------------------------------
async def chat_list(ctx: Ctx) -> None:
    chats = await ctx.call("chat.list")
    ctx.emit(chats, lambda: ctx.out.print(chat_table(chats) if chats else "no chats yet"))


def _print_detail(ctx: Ctx, d: dict[str, Any], verb: str = "") -> None:
    def human() -> None:
        head = Text(f"{verb}chat {d['chat_id']}: ")
        head.append(clean(d["title"] or "(untitled)"), style="bold")
        lock = ", end-to-end encrypted" if d.get("e2ee") else ""
        head.append(f" ({d['kind']}, {len(d['members'])} members{lock}{', muted' if d.get('muted') else ''})")
        if d.get("link_code"):
            head.append(f"  link code: {d['link_code']}")
        ctx.out.print(head)
        ctx.out.print(simple_table(
            ["user", "name", "handle", "role", "read up to"],
            [[m["user_id"], m["display_name"], "@" + m["handle"] if m.get("handle") else "", m["role"],
              f"#{m['read_seq']}"] for m in d["members"]]))
    ctx.emit(d, human)


async def chat_open(ctx: Ctx) -> None:
    user = await user_ref(ctx, ctx.args.handle)
    detail = await (await ctx.connect()).open_direct(user["user_id"], e2ee=False if ctx.args.plain else None)
    remember_direct(ctx, user["handle"], int(detail["chat_id"]))
    _print_detail(ctx, detail, "opened ")


async def chat_info(ctx: Ctx) -> None:
    _print_detail(ctx, await ctx.call("chat.get", chat_id=await chat_ref(ctx, ctx.args.chat)))


async def chat_read(ctx: Ctx) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    last = (await ctx.call("chat.get", chat_id=chat_id))["last_seq"]
    res = await ctx.call("chat.read", chat_id=chat_id, seq=ctx.args.seq or last)
    ctx.emit(res, lambda: ctx.out.print(f"chat {chat_id} read up to #{res['read_seq']}", markup=False))


async def _user_ids(ctx: Ctx, handles: list[str]) -> list[int]:
    return [int((await user_ref(ctx, h))["user_id"]) for h in handles]


async def group_create(ctx: Ctx) -> None:
    a = ctx.args
    c = await ctx.connect()
    d = await c.create_group(a.title, await _user_ids(ctx, a.members or []), member_limit=a.limit,
                             e2ee=False if a.plain else None)
    _print_detail(ctx, d, "created ")


async def chat_invite(ctx: Ctx) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    d = await ctx.call("chat.invite", chat_id=chat_id, user_ids=await _user_ids(ctx, ctx.args.handles))
    _print_detail(ctx, d)


async def chat_remove(ctx: Ctx) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    user = await user_ref(ctx, ctx.args.handle)
    _print_detail(ctx, await ctx.call("chat.remove_member", chat_id=chat_id, user_id=user["user_id"]))


async def chat_leave(ctx: Ctx) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    await ctx.call("chat.leave", chat_id=chat_id)
    ctx.out.print(f"left chat {chat_id}", markup=False)


async def chat_rename(ctx: Ctx) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    _print_detail(ctx, await ctx.call("chat.rename", chat_id=chat_id, title=ctx.args.title), "renamed ")


async def _mute(ctx: Ctx, muted: bool) -> None:
    chat_id = await chat_ref(ctx, ctx.args.chat)
    await ctx.call("chat.mute", chat_id=chat_id, muted=muted)
    ctx.out.print(f"chat {chat_id} {'muted' if muted else 'unmuted'}", markup=False)


async def chat_mute(ctx: Ctx) -> None:
    await _mute(ctx, True)


async def chat_unmute(ctx: Ctx) -> None:
    await _mute(ctx, False)


async def open_create(ctx: Ctx) -> None:
    a = ctx.args
    d = await ctx.call("chat.create_open", title=a.title, nickname=a.nickname, member_limit=a.limit,
                       listed=a.listed, description=a.description, tags=a.tags or [])
    _print_detail(ctx, d, "opened ")


async def open_join(ctx: Ctx) -> None:
    code = invite_cmd.code_from(ctx.args.code, "join")
    _print_detail(ctx, await ctx.call("chat.join_open", link_code=code, nickname=ctx.args.nickname), "joined ")


# -- messages ------------------------------------------------------------------------------------
async def wait_delivered(ctx: Ctx, client_id: str, timeout: float = SEND_WAIT) -> dict[str, Any] | None:
    """The stored message once the outbox delivered it; None if it is still queued after `timeout`."""
    c = await ctx.connect(require_online=False)
    others = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                ev = await c.next_event(None, timeout=left)
            except TimeoutError:
                return None
            if ev.name in ("outbox.sent", "outbox.failed") and ev.payload.get("client_id") == client_id:
                if ev.name == "outbox.failed":
                    raise DariError(ErrorCode(ev.payload["code"]), ev.payload["message"])
                return dict(ev.payload)
            if ev.name.startswith("outbox."):
                others.append(ev)
        return None
    finally:
        report_outbox_events(ctx, others)


async def msg_send(ctx: Ctx) -> int:
    a = ctx.args
    text = sys.stdin.read().rstrip("\n") if a.text == "-" else a.text
    if not text.strip():
        raise DariError(ErrorCode.INVALID_PARAMS, "message text is empty")
    c = await ctx.connect(require_online=False)
    if c.state == "online":
        limit = (await c.call("server.info"))["max_message_chars"]
        if len(text) > limit:
            # Refused before queueing: the outbox keeps only what the server may still accept.
            raise DariError(ErrorCode.LIMIT_EXCEEDED, f"message is {len(text)} characters; the limit is {limit}")
        chat_id = await chat_ref(ctx, a.chat, create_direct=True)
        mentions = await _user_ids(ctx, a.mention or [])
        if c.e2ee is not None and await c.e2ee.wait_ready() and c.e2ee_state == "waiting_for_approval" \
                and await c.e2ee.chat_is_e2ee(chat_id):
            from dari.client.e2ee_sync import WAITING_MESSAGE

            # Refused before queueing: the keys may take days, and the text must not wait in plaintext.
            raise DariError(ErrorCode.FORBIDDEN, WAITING_MESSAGE, {"reason": "awaiting_keys"})
    elif a.chat.isdigit() or known_direct(ctx, a.chat) is not None:
        # Offline: a chat id, or a handle whose 1:1 chat this profile has seen, is enough to queue (G7).
        chat_id, mentions = int(a.chat) if a.chat.isdigit() else known_direct(ctx, a.chat) or 0, []
        if a.mention:
            raise DariError(ErrorCode.UNAVAILABLE, "the server is unreachable; mentions need it to look up handles")
    else:
        raise DariError(ErrorCode.UNAVAILABLE, f"the server at {ctx.profile.server} is unreachable; to queue the"
                        " message for later, name the chat by its id")
    client_id = await c.send_message(chat_id, text, reply_to=a.reply, mentions=mentions)
    msg = await wait_delivered(ctx, str(client_id)) if c.state == "online" else None
    if msg is None:
        ctx.emit({"queued": True, "client_id": client_id, "chat_id": chat_id}, lambda: ctx.out.print(
            "queued (server unreachable): it is sent on the next dari run or by `dari outbox flush`",
            markup=False))
        return 0
    ctx.emit(msg, lambda: ctx.out.print(Text(f"sent #{msg['seq']} to chat {chat_id}")
                                        + (Text(f"  [{msg['unread']}]", style="bold yellow")
                                           if msg.get("unread") else Text(""))))
    return 0


async def msg_history(ctx: Ctx) -> None:
    a = ctx.args
    chat_id = await chat_ref(ctx, a.chat)
    page = await ctx.call("message.history", chat_id=chat_id, before_seq=a.before, limit=a.limit)

    def human() -> None:
        if page["has_more"]:
            first = page["messages"][0]["seq"] if page["messages"] else 0
            ctx.out.print(Text(f"… older: dari msg history {chat_id} --before {first}", style="dim"))
        for m in page["messages"]:
            ctx.out.print(message_line(m, me=ctx.profile.user_id))
    ctx.emit(page, human)


async def msg_edit(ctx: Ctx) -> None:
    a = ctx.args
    msg = await ctx.call("message.edit", chat_id=await chat_ref(ctx, a.chat), seq=a.seq, text=a.text)
    ctx.emit(msg, lambda: ctx.out.print(message_line(msg, me=ctx.profile.user_id)))


async def msg_unsend(ctx: Ctx) -> None:
    a = ctx.args
    res = await ctx.call("message.unsend", chat_id=await chat_ref(ctx, a.chat), seq=a.seq)
    ctx.emit(res, lambda: ctx.out.print(f"unsent #{a.seq}", markup=False))


async def msg_react(ctx: Ctx) -> None:
    a = ctx.args
    res = await ctx.call("message.react", chat_id=await chat_ref(ctx, a.chat), seq=a.seq, emoji=a.emoji,
                         on=not a.off)
    ctx.emit(res, lambda: ctx.out.print(Text(f"#{a.seq} reactions: " + (" ".join(
        f"{clean(e)}{len(u)}" for e, u in sorted(res.items())) or "none"))))


# -- the parser ----------------------------------------------------------------------------------
CHAT_SUBCOMMANDS: dict[str, str] = {}


def _chat_parser(leaf: Leaf) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dari chat", parents=[common_options()],
                                     description="chats; `dari chat [CHAT]` opens the interactive chat")
    sub = parser.add_subparsers(dest="sub", required=True, metavar="COMMAND")
    leaf(sub, "list", chat_list, "your chats by last activity, with unread badges")
    p = leaf(sub, "open", chat_open, "open (or create) the 1:1 chat with someone (end-to-end encrypted)")
    p.add_argument("handle")
    p.add_argument("--plain", action="store_true", help="not end-to-end encrypted (the server can read and search it)")
    leaf(sub, "info", chat_info, "members and their read pointers").add_argument("chat")
    p = leaf(sub, "read", chat_read, "mark a chat read")
    p.add_argument("chat")
    p.add_argument("--seq", type=int, help="up to this message (default: all)")
    group = sub.add_parser("group", help="group chats").add_subparsers(dest="group_sub", required=True)
    p = leaf(group, "create", group_create, "create a group chat")
    p.add_argument("title")
    p.add_argument("--with", dest="members", nargs="+", metavar="HANDLE", help="members to add")
    p.add_argument("--limit", type=int, help="member limit")
    p.add_argument("--plain", action="store_true", help="not end-to-end encrypted (the server can read and search it)")
    p = leaf(sub, "invite", chat_invite, "invite people to a group")
    p.add_argument("chat")
    p.add_argument("handles", nargs="+", metavar="HANDLE")
    p = leaf(sub, "remove", chat_remove, "remove a member (owner only)")
    p.add_argument("chat")
    p.add_argument("handle")
    leaf(sub, "leave", chat_leave, "leave a chat").add_argument("chat")
    p = leaf(sub, "rename", chat_rename, "rename a group or open chat")
    p.add_argument("chat")
    p.add_argument("title")
    leaf(sub, "mute", chat_mute, "mute a chat on all your devices").add_argument("chat")
    leaf(sub, "unmute", chat_unmute, "unmute a chat").add_argument("chat")
    p = leaf(sub, "open-create", open_create, "create an open chat (joined by link code)")
    p.add_argument("title")
    p.add_argument("--nickname", required=True, help="your name in this room")
    p.add_argument("--limit", type=int, help="member limit")
    p.add_argument("--listed", action="store_true", help="list it in the open-chat directory")
    p.add_argument("--description", default="", help="what the room is about (shown in the directory)")
    p.add_argument("--tags", nargs="+", metavar="TAG", help="directory tags, one word each")
    p = leaf(sub, "open-join", open_join, "join an open chat by its link code or join link")
    p.add_argument("code", metavar="CODE|LINK")
    p.add_argument("--nickname", required=True, help="your name in this room (hides your profile)")
    p = leaf(sub, "open-link", invite_cmd.open_link, "an open chat's join link and its QR code")
    p.add_argument("chat")
    p.add_argument("--no-qr", action="store_true", help="print the link only")
    p = leaf(sub, "open-settings", invite_cmd.open_settings, "owner: list an open chat in the directory, describe it")
    p.add_argument("chat")
    listed = p.add_mutually_exclusive_group()
    listed.add_argument("--listed", dest="listed", action="store_true", default=None, help="show in the directory")
    listed.add_argument("--unlisted", dest="listed", action="store_false", help="hide from the directory")
    p.add_argument("--description", help="what the room is about")
    p.add_argument("--tags", nargs="*", metavar="TAG", help="directory tags (none: clear them)")
    p = leaf(sub, "directory", invite_cmd.directory, "search the directory of listed open chats (CJK included)")
    p.add_argument("query", nargs="*", help="words of the title, description or tags (none: all)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results (from the last page's hint)")
    p.add_argument("--limit", type=int, default=20, help="results per page (at most 50)")
    CHAT_SUBCOMMANDS.update({name: "" for name in sub.choices})
    return parser


def _interactive_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dari chat", parents=[common_options()],
                                description="the interactive chat: live conversation with unread counters."
                                " Subcommands: " + ", ".join(CHAT_SUBCOMMANDS))
    p.add_argument("chat", nargs="?", help="chat id, friend's handle or chat title (default: pick one)")
    p.add_argument("--limit", type=int, default=30, help="messages of history to show first")
    return p


def _chat_entry(leaf: Leaf) -> Callable[[argparse.Namespace], int]:
    def entry(args: argparse.Namespace) -> int:
        rest: list[str] = ["--help"] if args.chat_help else args.rest
        subparser = _chat_parser(leaf)
        if rest and (rest[0] in CHAT_SUBCOMMANDS or rest[0] in ("-h", "--help")):
            parsed = subparser.parse_args(rest, namespace=args)
            return int(parsed.func(parsed))
        from dari.cli import chat_tui

        parsed = _interactive_parser().parse_args(rest, namespace=args)
        return run(parsed, chat_tui.interactive)
    return entry


def register(sub: Any, leaf: Leaf) -> None:
    chat = sub.add_parser("chat", parents=[common_options()], add_help=False,
                          help="chats; `dari chat [CHAT]` opens the interactive chat")
    chat.add_argument("-h", "--help", dest="chat_help", action="store_true")
    chat.add_argument("rest", nargs=argparse.REMAINDER)
    chat.set_defaults(func=_chat_entry(leaf))

    msg = sub.add_parser("msg", help="send, list, edit, unsend, react").add_subparsers(dest="sub", required=True)
    p = leaf(msg, "send", msg_send, "send a message (queued in the outbox if the server is unreachable)")
    p.add_argument("chat", help="chat id, friend's handle or chat title")
    p.add_argument("text", help="the message; - reads it from stdin")
    p.add_argument("--reply", type=int, metavar="SEQ", help="reply to this message")
    p.add_argument("--mention", nargs="+", metavar="HANDLE")
    p = leaf(msg, "history", msg_history, "messages with their unread counters, newest last")
    p.add_argument("chat")
    p.add_argument("--before", type=int, metavar="SEQ")
    p.add_argument("--limit", type=int, default=30)
    p = leaf(msg, "edit", msg_edit, "edit your message")
    p.add_argument("chat")
    p.add_argument("seq", type=int)
    p.add_argument("text")
    p = leaf(msg, "unsend", msg_unsend, "unsend your message for everyone")
    p.add_argument("chat")
    p.add_argument("seq", type=int)
    p = leaf(msg, "react", msg_react, "add (or --off remove) an emoji reaction")
    p.add_argument("chat")
    p.add_argument("seq", type=int)
    p.add_argument("emoji")
    p.add_argument("--off", action="store_true")

