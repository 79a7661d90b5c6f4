"""Files, stickers, stories and boards at the terminal, and `dari admin stickers`.

    dari msg send-file CHAT PATH [--caption TEXT]     dari media save BLOB_ID PATH [--thumb]
    dari sticker list | install PACK | remove PACK | send CHAT STICKER_ID
    dari story post TEXT [--photo PATH] [--visibility V] | feed | like ID | comment ID TEXT
    dari board posts BOARD_ID | read POST_ID | post BOARD_ID TITLE [BODY] | comment POST_ID TEXT
    dari admin stickers import PATH [--data-dir D] [--database URL] | list
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from typing import Any

from rich.text import Text

from dari.cli.commands import leaf
from dari.cli.render import simple_table, when
from dari.cli.runtime import Ctx, chat_ref
from dari.protocol.errors import DariError, ErrorCode


def _group(sub: Any, name: str, help_: str) -> Any:
    """The subcommands of `dari NAME`, reusing the group when another module made it."""
    existing = sub.choices.get(name)
    if existing is not None and existing._subparsers is not None:
        return existing._subparsers._group_actions[0]
    return sub.add_parser(name, help=help_).add_subparsers(dest=f"{name}_sub", required=True)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} B"


# -- files -----------------------------------------------------------------------------------------
async def send_file(ctx: Ctx) -> None:
    from dari.client.media import send_file as sdk_send

    a = ctx.args
    if not os.path.isfile(a.path):
        raise DariError(ErrorCode.INVALID_PARAMS, f"no file {a.path}")
    chat_id = await chat_ref(ctx, a.chat, create_direct=True)
    c = await ctx.connect()
    msg = await sdk_send(c, chat_id, a.path, caption=a.caption or "", kind=a.kind, http=not a.no_http)
    att = msg.get("attachment") or {}
    dims = f", {att['width']}x{att['height']}" if att.get("width") else ""
    ctx.emit(msg, lambda: ctx.out.print(Text(
        f"sent {msg['kind']} #{msg['seq']} to chat {chat_id}: {os.path.basename(a.path)} ({att.get('type')},"
        f" {_size(int(att.get('size', 0)))}{dims}) blob {att.get('blob_id', '')[:16]}")))


async def media_save(ctx: Ctx) -> None:
    from dari.client.media import download, download_attachment

    a = ctx.args
    c = await ctx.connect()
    # A blob of an end-to-end encrypted chat is random bytes: its key is in the message that carries it.
    att = await c.e2ee.find_attachment(a.blob_id) if c.e2ee is not None else None
    data = await (download_attachment(c, att, thumb=a.thumb) if att is not None
                  else download(c, a.blob_id, thumb=a.thumb))
    path = a.path
    if os.path.isdir(path):
        path = os.path.join(path, a.blob_id[:16] + (".webp" if a.thumb else ""))
    await asyncio.to_thread(_write, path, data)
    ctx.emit({"path": path, "size": len(data)}, lambda: ctx.out.print(f"saved {_size(len(data))} to {path}",
                                                                      markup=False))


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


# -- stickers --------------------------------------------------------------------------------------
async def sticker_list(ctx: Ctx) -> None:
    packs = await ctx.call("sticker.installed" if not ctx.args.all else "sticker.packs")
    rows = []
    for p in packs:
        ids = " ".join(f"{s['sticker_id']}{s['emoji']}" + (f"({s['name']})" if s.get("name") else "")
                       for s in p.get("stickers") or [])
        rows.append([p["pack_id"], p["title"], "installed" if p["installed"] else "", ids])
    ctx.emit(packs, lambda: ctx.out.print(simple_table(["pack", "title", "", "stickers (id+emoji, name)"], rows)))


async def sticker_install(ctx: Ctx) -> None:
    await ctx.call("sticker.remove" if ctx.args.remove else "sticker.install", pack_id=ctx.args.pack_id)
    ctx.out.print(f"pack {ctx.args.pack_id} {'removed' if ctx.args.remove else 'installed'}", markup=False)


async def sticker_send(ctx: Ctx) -> None:
    from dari.client.media import send_sticker

    chat_id = await chat_ref(ctx, ctx.args.chat, create_direct=True)
    msg = await send_sticker(await ctx.connect(), chat_id, ctx.args.sticker_id, client_id=uuid.uuid4().hex)
    ctx.emit(msg, lambda: ctx.out.print(f"sent sticker #{msg['seq']} {msg['attachment'].get('emoji', '')}",
                                        markup=False))


# -- stories ---------------------------------------------------------------------------------------
def _story_line(s: dict[str, Any]) -> Text:
    head = Text(f"#{s['story_id']} ", style="dim")
    head.append(s["author"]["display_name"], style="bold")
    head.append(f"  {when(s['created_at'])}  [{s['visibility']}]  ♥{s['likes']} 💬{s['comments']} 👁{s['views']}"
                f"{'  📷' * len(s['media'])}\n  {s['text']}")
    return head


async def story_post(ctx: Ctx) -> None:
    from dari.client.media import upload

    a = ctx.args
    c = await ctx.connect()
    media = [(await upload(c, p))["blob_id"] for p in a.photo or []]
    s = await c.call("story.create", text=a.text, media=media, visibility=a.visibility)
    ctx.emit(s, lambda: ctx.out.print(_story_line(s)))


async def story_feed(ctx: Ctx) -> None:
    if ctx.args.user:
        from dari.cli.runtime import user_ref

        user = await user_ref(ctx, ctx.args.user)
        page = await ctx.call("story.profile", user_id=user["user_id"], limit=ctx.args.limit)
    else:
        page = await ctx.call("story.feed", limit=ctx.args.limit)
    def human() -> None:
        for s in page["stories"]:
            ctx.out.print(_story_line(s))
        if not page["stories"]:
            ctx.out.print("no stories yet", markup=False)
    ctx.emit(page, human)


async def story_like(ctx: Ctx) -> None:
    res = await ctx.call("story.like", story_id=ctx.args.story_id, on=not ctx.args.off)
    ctx.emit(res, lambda: ctx.out.print(f"story {res['story_id']}: {res['likes']} likes", markup=False))


async def story_comment(ctx: Ctx) -> None:
    res = await ctx.call("story.comment", story_id=ctx.args.story_id, text=ctx.args.text, parent_id=ctx.args.reply)
    ctx.emit(res, lambda: ctx.out.print(f"comment {res['comment_id']} posted", markup=False))


# -- boards ----------------------------------------------------------------------------------------
def _author(a: dict[str, Any]) -> str:
    return str(a.get("ip") or a.get("name") or "")


async def board_posts(ctx: Ctx) -> None:
    a = ctx.args
    board_id = a.board
    if a.chat:
        board_id = (await ctx.call("board.get", chat_id=await chat_ref(ctx, a.chat)))["board_id"]
    if board_id is None:
        raise DariError(ErrorCode.INVALID_PARAMS, "give a board id or --chat CHAT")
    page = await ctx.call("board.posts", board_id=int(board_id), page=a.page, query=a.query or "",
                          search_in=a.search_in)
    rows = [["공지" if p["pinned"] else p["number"], p["title"] + (f" [{p['comment_count']}]" if p["comment_count"]
                                                                    else ""),
             _author(p["author"]), when(p["created_at"]), p["views"]] for p in page["notices"] + page["posts"]]
    def human() -> None:
        ctx.out.print(Text(f"{page['board']['title']}  page {page['page']}/{page['pages']} ({page['total']} posts)"))
        ctx.out.print(simple_table(["no.", "title", "author", "date", "views"], rows))
    ctx.emit(page, human)


async def board_read(ctx: Ctx) -> None:
    p = await ctx.call("board.post", post_id=ctx.args.post_id)

    def human() -> None:
        ctx.out.print(Text(f"#{p['number']} {p['title']}", style="bold"))
        ctx.out.print(Text(f"{_author(p['author'])}  {when(p['created_at'])}  views {p['views']}\n\n{p['body']}"))
        if p.get("poll"):
            poll = p["poll"]
            ctx.out.print(Text(f"\npoll: {poll['question']}{' (closed)' if poll['closed'] else ''}"))
            for i, o in enumerate(poll["options"]):
                ctx.out.print(Text(f"  [{i}] {o['text']}: {o['votes']}"))
        for cm in p["comments"]:
            ctx.out.print(Text(f"  └ {_author(cm['author'])}: {cm['body']}"))
    ctx.emit(p, human)


async def board_post(ctx: Ctx) -> None:
    from dari.client.media import upload

    a = ctx.args
    c = await ctx.connect()
    media = [(await upload(c, p))["blob_id"] for p in a.photo or []]
    poll = {"question": a.poll, "options": a.option, "multiple": a.multiple} if a.poll else None
    res = await c.call("board.post_create", board_id=a.board_id, title=a.title, body=a.body or "", media=media,
                       poll=poll)
    ctx.emit(res, lambda: ctx.out.print(f"posted #{res['number']} (post {res['post_id']})", markup=False))


async def board_comment(ctx: Ctx) -> None:
    res = await ctx.call("board.comment", post_id=ctx.args.post_id, body=ctx.args.text)
    ctx.emit(res, lambda: ctx.out.print(f"comment {res['comment_id']} posted", markup=False))


# -- dari admin stickers (on the server's data dir, like `dari admin relay`) -----------------------
def _admin_stickers(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_admin_stickers_async(args))
    except DariError as err:
        print(f"dari admin stickers: error [{err.code.value}]: {err.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dari admin stickers: {exc}", file=sys.stderr)
        return 1


async def _admin_stickers_async(args: argparse.Namespace) -> int:
    from dari.bus import Bus
    from dari.config import load_settings
    from dari.services import sticker_pack
    from dari.services.core import Core
    from dari.services.media import Media
    from dari.services.stickers import Stickers
    from dari.storage import open_database

    settings = load_settings(args.config, {"data_dir": args.data_dir, "database": args.database})
    db = open_database(settings.database_url(), data_dir=settings.data_dir)
    await db.start()
    try:
        core = Core(settings, db, Bus())
        stickers = Stickers(core, Media(core))
        if args.admin_stickers_sub == "import":
            pack = await asyncio.to_thread(sticker_pack.load, args.path)
            out = await stickers.import_pack(pack)
            print(f"imported sticker pack {out.slug!r} ({out.title}): {len(out.stickers or [])} stickers,"
                  f" pack id {out.pack_id}")
            return 0
        rows = await db.read(lambda tx: tx.all(
            "SELECT p.id, p.slug, p.title, p.is_default, (SELECT COUNT(*) FROM stickers s WHERE s.pack_id = p.id)"
            " FROM sticker_packs p ORDER BY p.id"))
        for r in rows:
            print(f"{r[0]:>4}  {r[1]:<24} {r[2]:<24} {r[4]:>3} stickers{'  (default)' if r[3] else ''}")
        return 0
    finally:
        await db.close()


def register(sub: Any) -> None:
    msg = _group(sub, "msg", "send, list, edit, unsend, react")
    p = leaf(msg, "send-file", send_file, "send a photo, video, voice message or file")
    p.add_argument("chat", help="chat id, friend's handle or chat title")
    p.add_argument("path")
    p.add_argument("--caption")
    p.add_argument("--kind", choices=["image", "video", "voice", "file"], help="default: from the file's bytes")
    p.add_argument("--no-http", action="store_true", help="upload in chunks over the session (any route)")

    media = _group(sub, "media", "files shared with you")
    p = leaf(media, "save", media_save, "download a file (or --thumb its thumbnail) to PATH")
    p.add_argument("blob_id")
    p.add_argument("path")
    p.add_argument("--thumb", action="store_true")

    st = _group(sub, "sticker", "sticker packs and sticker messages")
    leaf(st, "list", sticker_list, "your sticker packs (--all: every pack)").add_argument("--all", action="store_true")
    p = leaf(st, "install", sticker_install, "install (or --remove) a pack")
    p.add_argument("pack_id", type=int)
    p.add_argument("--remove", action="store_true")
    p = leaf(st, "send", sticker_send, "send a sticker")
    p.add_argument("chat")
    p.add_argument("sticker_id", type=int)

    so = _group(sub, "story", "stories: post, feed, like, comment")
    p = leaf(so, "post", story_post, "post a story")
    p.add_argument("text")
    p.add_argument("--photo", action="append", metavar="PATH")
    p.add_argument("--visibility", choices=["public", "friends", "close_friends", "only_me"], default="friends")
    p = leaf(so, "feed", story_feed, "your friends' stories (or --user HANDLE's)")
    p.add_argument("--user")
    p.add_argument("--limit", type=int, default=20)
    p = leaf(so, "like", story_like, "like (or --off unlike) a story")
    p.add_argument("story_id", type=int)
    p.add_argument("--off", action="store_true")
    p = leaf(so, "comment", story_comment, "comment on a story (--reply COMMENT_ID for a reply)")
    p.add_argument("story_id", type=int)
    p.add_argument("text")
    p.add_argument("--reply", type=int)

    bo = _group(sub, "board", "chat boards and public boards")
    p = leaf(bo, "posts", board_posts, "a board's posts (numbered, paged, searchable)")
    p.add_argument("board", nargs="?", type=int)
    p.add_argument("--chat", help="a group chat's board")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--query")
    p.add_argument("--search-in", dest="search_in", choices=["title", "body", "title_body", "author"],
                   default="title_body")
    leaf(bo, "read", board_read, "read a post with its comments").add_argument("post_id", type=int)
    p = leaf(bo, "post", board_post, "write a post")
    p.add_argument("board_id", type=int)
    p.add_argument("title")
    p.add_argument("body", nargs="?")
    p.add_argument("--photo", action="append", metavar="PATH")
    p.add_argument("--poll", metavar="QUESTION")
    p.add_argument("--option", action="append", default=[])
    p.add_argument("--multiple", action="store_true")
    p = leaf(bo, "comment", board_comment, "comment on a post")
    p.add_argument("post_id", type=int)
    p.add_argument("text")

    admin = _group(sub, "admin", "server operator commands")
    sa = admin.add_parser("stickers", help="sticker packs on this server").add_subparsers(
        dest="admin_stickers_sub", required=True)
    imp = sa.add_parser("import", help="validate and import a pack (folder or zip with manifest.json)")
    imp.add_argument("path")
    lst = sa.add_parser("list", help="the server's sticker packs")
    for q in (imp, lst):
        q.add_argument("--data-dir", default="dari-data", help="the server's data dir (blobs live there)")
        q.add_argument("--database", help="the server's database URL (default: sqlite in the data dir)")
        q.add_argument("--config", help="the server's TOML settings")
        q.set_defaults(func=_admin_stickers)
