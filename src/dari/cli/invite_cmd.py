"""`dari friend invite`, `dari friend add LINK|CODE|HANDLE`, `dari chat directory [QUERY]`,
`dari chat open-settings`: meeting people by invite link, QR code and the open-chat directory.

The links are the web page's own (SERVER/#/add/CODE, SERVER/#/join/CODE), so one link works in a
browser, on a phone's camera and here.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.text import Text

from dari.cli.render import clean, simple_table
from dari.cli.runtime import Ctx, chat_ref, check_handle
from dari.protocol.errors import DariError, ErrorCode

_HANDLE = re.compile(r"^@?[a-z0-9_.]{3,32}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{6,32}$")


def page_link(ctx: Ctx, kind: str, code: str) -> str:
    return f"{ctx.profile.server.rstrip('/')}/#/{kind}/{code}"


def code_from(ref: str, kind: str) -> str:
    """The code of a link (…/#/add/CODE) or a bare code; a clear error for anything else."""
    ref = ref.strip()
    if "/#/" in ref:
        m = re.search(rf"/#/{kind}/([^/?#\s]+)$", ref)
        if not m:
            want = "a friend invite (…/#/add/CODE)" if kind == "add" else "an open chat link (…/#/join/CODE)"
            raise DariError(ErrorCode.INVALID_PARAMS, f"{ref!r} is not {want}")
        ref = m.group(1)
    if not _CODE.match(ref):
        raise DariError(ErrorCode.INVALID_PARAMS, f"{ref!r} is not a valid code: 6-32 of A-Z a-z 0-9 _ -")
    return ref


def print_qr(ctx: Ctx, link: str) -> None:
    if ctx.json or getattr(ctx.args, "no_qr", False):
        return
    import segno

    sys.stdout.flush()
    segno.make(link, error="m").terminal(out=sys.stdout, compact=True)


# -- friends ---------------------------------------------------------------------------------------
async def friend_invite(ctx: Ctx) -> None:
    a = ctx.args
    if a.revoke:
        res = await ctx.call("friend.invite_revoke")
        ctx.emit(res, lambda: ctx.out.print("your invite link is off" if res["revoked"] else "no invite link was on"))
        return
    inv = await ctx.call("friend.invite_rotate" if a.rotate else "friend.invite")
    link = page_link(ctx, "add", inv["code"])
    ctx.emit({**inv, "link": link}, lambda: ctx.out.print(
        f"{'new ' if a.rotate else ''}invite link (whoever opens it can add you):\n{link}", soft_wrap=True))
    print_qr(ctx, link)


async def friend_add(ctx: Ctx) -> None:
    who: str = ctx.args.who
    if "/" not in who and _HANDLE.match(who):
        f = await ctx.call("friend.add", handle=check_handle(who))
    else:
        # Invite codes always hold a capital letter, so they are never read as handles.
        f = await ctx.call("friend.add_by_invite", code=code_from(who, "add"))
    ctx.emit(f, lambda: ctx.out.print(Text(f"added {clean(f['user']['display_name'])} (@{f['user']['handle']})"
                                           + (" — you are friends both ways" if f.get("mutual") else ""))))


# -- open chats ------------------------------------------------------------------------------------
async def directory(ctx: Ctx) -> None:
    a = ctx.args
    query = " ".join(a.query)
    page = await ctx.call("chat.directory", query=query, offset=a.offset, limit=a.limit)

    def human() -> None:
        if not page["chats"]:
            ctx.out.print(f"no listed open chats match {query!r}" if query else "no listed open chats yet")
            return
        ctx.out.print(simple_table(
            ["code", "title", "members", "tags", "description"],
            [[c["link_code"], c["title"] + (" (joined)" if c.get("chat_id") else ""),
              f"{c['member_count']}/{c['member_limit']}", " ".join("#" + t for t in c["tags"]),
              c["description"][:60]] for c in page["chats"]]))
        if page.get("next_offset") is not None:
            ctx.out.print(f"more: dari chat directory {query} --offset {page['next_offset']}".replace("  ", " "))
        ctx.out.print("join: dari chat open-join CODE --nickname NAME")
    ctx.emit(page, human)


async def open_settings(ctx: Ctx) -> None:
    a = ctx.args
    params: dict[str, Any] = {"chat_id": await chat_ref(ctx, a.chat)}
    if a.listed is not None:
        params["listed"] = a.listed
    if a.description is not None:
        params["description"] = a.description
    if a.tags is not None:
        params["tags"] = a.tags
    d = await ctx.call("chat.open_settings", **params)
    link = page_link(ctx, "join", d["link_code"])

    def human() -> None:
        state = "listed in the directory" if d["listed"] else "not listed"
        ctx.out.print(Text(f"{clean(d['title'])}: {state}"
                           + (f", tags {' '.join('#' + t for t in d['tags'])}" if d["tags"] else "")))
        ctx.out.print(f"join link: {link}", soft_wrap=True)
    ctx.emit({**d, "link": link}, human)


async def open_link(ctx: Ctx) -> None:
    d = await ctx.call("chat.get", chat_id=await chat_ref(ctx, ctx.args.chat))
    if d["kind"] != "open" or not d.get("link_code"):
        raise DariError(ErrorCode.INVALID_PARAMS, "only open chats have a join link")
    link = page_link(ctx, "join", d["link_code"])
    ctx.emit({"chat_id": d["chat_id"], "link_code": d["link_code"], "link": link},
             lambda: ctx.out.print(f"join link of {d['title']}:\n{link}", soft_wrap=True))
    print_qr(ctx, link)
