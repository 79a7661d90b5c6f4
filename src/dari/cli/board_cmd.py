"""Public boards at the terminal: which exist, making one, and who may make them.

    dari board list                          dari board create TITLE [--slug S] [--show-ip]
    dari admin board grant HANDLE | revoke HANDLE | creators      (operators: admin_handles)
"""

from __future__ import annotations

from typing import Any

from dari.cli.commands import leaf
from dari.cli.content_cmd import _group
from dari.cli.render import simple_table, when
from dari.cli.runtime import Ctx


async def board_list(ctx: Ctx) -> None:
    boards = await ctx.call("board.public")
    rights = await ctx.call("board.rights") if ctx.args.rights else None
    rows = [[b["board_id"], b.get("slug") or "", b["title"], b["posts"], "masked IPs" if b["show_ip"] else ""]
            for b in boards]

    def human() -> None:
        ctx.out.print(simple_table(["id", "slug", "title", "posts", ""], rows))
        if rights is not None:
            ctx.out.print("you may create boards" if rights["can_create"] else
                          "you may not create boards (an operator can grant it)", markup=False)
    ctx.emit({"boards": boards, "rights": rights} if rights is not None else boards, human)


async def board_create(ctx: Ctx) -> None:
    a = ctx.args
    params: dict[str, Any] = {"title": a.title, "show_ip": a.show_ip}
    if a.slug:
        params["slug"] = a.slug
    b = await ctx.call("board.create", **params)
    ctx.emit(b, lambda: ctx.out.print(f"board {b['board_id']} ({b['slug']}) created: {b['title']}", markup=False))


async def _grant(ctx: Ctx, on: bool) -> None:
    res = await ctx.call("admin.board_grant" if on else "admin.board_revoke", handle=ctx.args.handle)
    ctx.emit(res, lambda: ctx.out.print(
        f"{res['handle']} ({res['name']}) {'may' if res['can_create'] else 'may not'} create public boards",
        markup=False))


async def admin_grant(ctx: Ctx) -> None:
    await _grant(ctx, True)


async def admin_revoke(ctx: Ctx) -> None:
    await _grant(ctx, False)


async def admin_creators(ctx: Ctx) -> None:
    rows = await ctx.call("admin.board_creators")
    ctx.emit(rows, lambda: ctx.out.print(simple_table(
        ["handle", "name", "granted by", "since"],
        [[r["handle"], r["name"], r["granted_by"] or "", when(r["granted_at"])] for r in rows])))


def register(sub: Any) -> None:
    bo = _group(sub, "board", "chat boards and public boards")
    leaf(bo, "list", board_list, "the public boards (--rights: may you create one?)").add_argument(
        "--rights", action="store_true")
    p = leaf(bo, "create", board_create, "create a public board (operators and users granted the right)")
    p.add_argument("title")
    p.add_argument("--slug", help="2-32 of a-z 0-9 - (default: made up)")
    p.add_argument("--show-ip", dest="show_ip", action="store_true", help="show writers as masked IPs")

    admin = _group(sub, "admin", "server operator commands")
    ab = admin.add_parser("board", help="who may create public boards (as a logged-in operator)").add_subparsers(
        dest="admin_board_sub", required=True)
    leaf(ab, "grant", admin_grant, "let a user create public boards").add_argument("handle")
    leaf(ab, "revoke", admin_revoke, "take the right away (their boards stay)").add_argument("handle")
    leaf(ab, "creators", admin_creators, "the users granted the right")
