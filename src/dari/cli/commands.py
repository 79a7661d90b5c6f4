"""The person-at-a-terminal commands: account, device, friend, search, status, outbox, watch.

Chat and message commands live in chat_commands.py, the interactive chat in chat_tui.py.
`dari.cli.main` imports this module and calls `register`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from rich.text import Text

from dari.cli import chat_commands, invite_cmd
from dari.cli.profile import ProfileError
from dari.cli.render import clean, event_line, simple_table, summary, when
from dari.cli.runtime import (
    CALL_TIMEOUT,
    Command,
    Ctx,
    chat_ref,
    check_handle,
    common_options,
    read_secret,
    report_outbox_events,
    run,
    user_ref,
)
from dari.protocol.errors import DariError, ErrorCode


def _device_name(args: argparse.Namespace) -> str:
    return str(args.device or f"cli@{socket.gethostname()}")[:64]


def _password(prompt: str, env: str, *, confirm: bool = False) -> str:
    pw = read_secret(prompt, env, confirm=confirm)
    if len(pw) < 8:
        raise DariError(ErrorCode.INVALID_PARAMS, "a password has at least 8 characters")
    return pw


# -- account -------------------------------------------------------------------------------------
async def _log_in(ctx: Ctx, signup: bool) -> int:
    a, prof = ctx.args, ctx.profile
    handle = check_handle(a.handle)
    if prof.token is not None:
        raise ProfileError("conflict", f"profile {prof.name!r} is already logged in as @{prof.handle};"
                           " log out first or use another --profile")
    password = _password("password: ", "DARI_PASSWORD", confirm=signup)
    device = _device_name(a)
    from dari.client import Client

    c = Client(prof.server, outbox_path=prof.outbox_path, call_timeout=CALL_TIMEOUT, crypto_path=prof.crypto_path)
    ctx.client = c
    if signup:
        res = await c.signup(handle, a.name or handle, password, device_name=device, phone=a.phone,
                             region=a.region, device_kind="cli")
    else:
        res = await c.login(handle, password, device_name=device, device_kind="cli")
    if c.e2ee is not None and await c.e2ee.wait_ready() and c.e2ee_state == "waiting_for_approval":
        ctx.err.print("note: your account's encrypted chats are locked on this device until one of your other"
                      " devices shares the keys: there, run `dari device requests` and `dari device share-keys"
                      f" {res['device_id']}` (or approve it on your phone). Plaintext chats work meanwhile. No"
                      " other device left? `dari account reset-keys` (your contacts then see a security code"
                      " change).", markup=False)
    prof.adopt(res, device)
    prof.cursor = c.cursor   # `dari watch` starts from the moment of login
    prof.save()
    ctx.emit({"user": res["user"], "device_id": res["device_id"], "profile": prof.name, "server": prof.server},
             lambda: ctx.out.print(Text(f"{'signed up' if signup else 'logged in'} as "
                                        f"{clean(res['user']['display_name'])} (@{res['user']['handle']}),"
                                        f" device {res['device_id']} ({device}), profile {prof.name}")))
    return 0


async def link(ctx: Ctx) -> int:
    """Log this profile in as a new device of an account without a password: show a code, approve it
    from a logged-in device (`dari device approve CODE`), and receive the end-to-end encryption keys
    (master key and the chats' history keys) from it."""
    a, prof = ctx.args, ctx.profile
    if prof.token is not None:
        raise ProfileError("conflict", f"profile {prof.name!r} is already logged in as @{prof.handle};"
                           " log out first or use another --profile")
    device = _device_name(a)
    from dari.client import Client

    c = Client(prof.server, outbox_path=prof.outbox_path, call_timeout=CALL_TIMEOUT, crypto_path=prof.crypto_path)
    ctx.client = c
    start = await c.link_start(device, "cli")
    ctx.err.print(f"code: {start['code']}", markup=False)
    ctx.err.print(f"approve it from a logged-in device within 5 minutes: dari device approve {start['code']}",
                  markup=False)
    res = await c.link_wait(start["secret"], timeout=a.timeout, wait_keys=False)
    prof.adopt(res, device)
    prof.cursor = c.cursor
    prof.save()
    keys = c.e2ee is None
    if c.e2ee is not None:
        try:
            await asyncio.wait_for(c.e2ee.linked.wait(), a.timeout)
            keys = True
        except TimeoutError:
            ctx.err.print("note: the encryption keys have not arrived yet; they come when the approving device"
                          " is online (encrypted chats stay unreadable here until then)", markup=False)
    ctx.emit({"user": res["user"], "device_id": res["device_id"], "profile": prof.name, "keys": keys},
             lambda: ctx.out.print(Text(f"linked as {clean(res['user']['display_name'])} (@{res['user']['handle']}),"
                                        f" device {res['device_id']} ({device}), profile {prof.name}")))
    return 0


async def reset_keys(ctx: Ctx) -> int:
    """A new end-to-end encryption master key for the account, for when no device holding the
    current one is left (a lost phone)."""
    warning = ("this makes a new encryption key for your account: your contacts see that your security code"
               " changed, your other devices can no longer read or send encrypted messages until you share"
               " the new keys with them (`dari device share-keys` here), and this device cannot read older"
               " encrypted messages it never had the keys for")
    if not ctx.args.yes:
        ctx.err.print(f"{warning}. Run again with --yes to do it.", markup=False)
        return 1
    c = await ctx.connect()
    res = await c.reset_e2ee()
    ctx.err.print(f"warning: {warning}.", markup=False)
    ctx.emit(res, lambda: ctx.out.print("new encryption key made: your contacts' chats show that your security"
                                        " code changed", markup=False))
    return 0


async def signup(ctx: Ctx) -> int:
    return await _log_in(ctx, True)


async def login(ctx: Ctx) -> int:
    return await _log_in(ctx, False)


async def logout(ctx: Ctx) -> None:
    await ctx.call("device.logout")
    ctx.profile.clear_login()
    ctx.out.print(f"logged out of profile {ctx.profile.name}", markup=False)


def _print_me(ctx: Ctx, me: dict[str, Any]) -> None:
    ctx.emit(me, lambda: ctx.out.print(Text.assemble(
        (clean(me["display_name"]), "bold"), f" @{me['handle']} (user {me['user_id']})\n",
        f"status: {clean(me.get('status_message') or '-')}\n",
        f"presence visible to: {me.get('presence_visibility')}   phone: {'set' if me.get('has_phone') else 'none'}"
        f"\nprofile {ctx.profile.name}, device {ctx.profile.device_id}, server {ctx.profile.server}")))


async def me(ctx: Ctx) -> None:
    _print_me(ctx, await ctx.call("account.me"))


async def profile_cmd(ctx: Ctx) -> None:
    a = ctx.args
    if a.name is None and a.status is None:
        _print_me(ctx, await ctx.call("account.me"))
        return
    res = await ctx.call("account.update_profile", display_name=a.name, status_message=a.status)
    ctx.profile.display_name = res["display_name"]
    ctx.profile.save()
    _print_me(ctx, res)


async def password(ctx: Ctx) -> None:
    old = _password("current password: ", "DARI_PASSWORD")
    new = _password("new password: ", "DARI_NEW_PASSWORD", confirm=True)
    await ctx.call("account.change_password", old_password=old, new_password=new)
    ctx.out.print("password changed; your other devices stay logged in", markup=False)


async def privacy(ctx: Ctx) -> None:
    _print_me(ctx, await ctx.call("account.set_privacy", presence_visibility=ctx.args.visibility))


async def phone(ctx: Ctx) -> None:
    c = await ctx.connect()
    if ctx.args.clear:
        res = await c.call("account.set_phone", phone_hash=None)
    elif ctx.args.number:
        # Only a keyed hash leaves this machine, never the number (issue 2).
        (h,) = await c.contact_hashes([ctx.args.number], ctx.args.region)
        res = await c.call("account.set_phone", phone_hash=h)
    else:
        raise DariError(ErrorCode.INVALID_PARAMS, "give a phone number or --clear")
    _print_me(ctx, res)


async def delete(ctx: Ctx) -> None:
    if not ctx.args.yes:
        raise DariError(ErrorCode.INVALID_PARAMS, "this deletes your account for good; repeat with --yes")
    pw = _password("password: ", "DARI_PASSWORD")
    await ctx.call("account.delete", password=pw)
    ctx.profile.clear_login()
    ctx.out.print("account deleted", markup=False)


# -- devices -------------------------------------------------------------------------------------
async def device_list(ctx: Ctx) -> None:
    devices = await ctx.call("device.list")
    ctx.emit(devices, lambda: ctx.out.print(simple_table(
        ["id", "name", "kind", "", "status"],
        [[d["device_id"], d["name"], d.get("kind") or "", "this device" if d.get("current") else "",
          # "online" only while the server holds a live connection of that device
          "online" if d.get("online") else f"last seen {when(d.get('last_seen_at'))}"] for d in devices])))


async def device_rename(ctx: Ctx) -> None:
    d = await ctx.call("device.rename", device_id=ctx.args.device_id, name=ctx.args.name)
    ctx.emit(d, lambda: ctx.out.print(Text(f"device {d['device_id']} is now named {clean(d['name'])}")))


async def device_revoke(ctx: Ctx) -> None:
    await ctx.call("device.revoke", device_id=ctx.args.device_id)
    if ctx.args.device_id == ctx.profile.device_id:
        ctx.profile.clear_login()
    ctx.out.print(f"device {ctx.args.device_id} logged out", markup=False)


async def device_approve(ctx: Ctx) -> None:
    c = await ctx.connect()
    res = await c.call("device.link_approve", code=ctx.args.code)
    ctx.out.print(f"device {res['device_id']} ({res['name']}) is now logged in to your account", markup=False)
    if c.e2ee is None or not await c.e2ee.wait_ready() or ctx.args.no_wait:
        return
    # Stay until the new device asked for our keys and got them (it needs our master key to read).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.args.wait
    while res["device_id"] not in c.e2ee.transfers_sent:
        if loop.time() > deadline:
            ctx.err.print("note: the new device has not asked for the encryption keys yet; it gets them when"
                          " this device is online again", markup=False)
            return
        await asyncio.sleep(0.1)
    ctx.out.print("encryption keys and chat history handed over", markup=False)


async def device_requests(ctx: Ctx) -> None:
    """Your devices asking this one for the encryption keys (a password login on a new device)."""
    c = await ctx.connect()
    reqs = await c.e2ee_key_requests() if c.e2ee is not None else []
    ctx.emit(reqs, lambda: ctx.out.print(simple_table(
        ["id", "name", "asked"], [[r["device_id"], r["device_name"], when(r["requested_at"])] for r in reqs])
        if reqs else "no device is waiting for your encryption keys"))


async def device_share_keys(ctx: Ctx) -> None:
    """Share the master key and the chats' history keys with one of your devices that asked for them."""
    c = await ctx.connect()
    reqs = await c.e2ee_key_requests() if c.e2ee is not None else []
    ref = str(ctx.args.device).strip()
    found = [r for r in reqs if str(r["device_id"]) == ref] or [r for r in reqs if r["device_name"] == ref]
    if not found:
        raise DariError(ErrorCode.NOT_FOUND, f"no device {ref!r} is waiting for your encryption keys"
                        " (see `dari device requests`; the device asks again when it next connects)")
    if len(found) > 1:
        raise DariError(ErrorCode.CONFLICT, f"several devices are named {ref!r}: use the id"
                        f" ({', '.join(str(r['device_id']) for r in found)})")
    r = found[0]
    await c.share_e2ee_keys(int(r["device_id"]))
    ctx.emit({"device_id": r["device_id"], "device_name": r["device_name"], "shared": True},
             lambda: ctx.out.print(Text(f"encryption keys and chat history shared with device {r['device_id']}"
                                        f" ({clean(r['device_name'])})")))


# -- friends -------------------------------------------------------------------------------------
def _friend_rows(friends: list[dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for f in friends:
        u = f["user"]
        marks = " ".join(m for m, on in (("★", f.get("favourite")), ("hidden", f.get("hidden")),
                                         ("mutual", f.get("mutual"))) if on)
        rows.append([u["user_id"], "@" + u["handle"], u["display_name"], marks, u.get("status_message", "")])
    return rows


async def friend_list(ctx: Ctx) -> None:
    friends = [f for f in await ctx.call("friend.list") if ctx.args.all or not f.get("hidden")]
    ctx.emit(friends, lambda: ctx.out.print(
        simple_table(["id", "handle", "name", "", "status"], _friend_rows(friends))))


async def _friend_user_call(ctx: Ctx, method: str, verb: str, **extra: Any) -> None:
    user = await user_ref(ctx, ctx.args.handle)
    res = await ctx.call(method, user_id=user["user_id"], **extra)
    ctx.emit(res, lambda: ctx.out.print(Text(f"{verb} {clean(user['display_name'])} (@{user['handle']})")))


async def friend_remove(ctx: Ctx) -> None:
    await _friend_user_call(ctx, "friend.remove", "removed")


async def friend_block(ctx: Ctx) -> None:
    await _friend_user_call(ctx, "friend.block", "blocked")


async def friend_unblock(ctx: Ctx) -> None:
    await _friend_user_call(ctx, "friend.unblock", "unblocked")


async def friend_favourite(ctx: Ctx) -> None:
    on = not ctx.args.off
    await _friend_user_call(ctx, "friend.update", "favourite:" if on else "no longer favourite:", favourite=on)


async def friend_hide(ctx: Ctx) -> None:
    on = not ctx.args.off
    await _friend_user_call(ctx, "friend.update", "hidden:" if on else "shown again:", hidden=on)


async def friend_blocked(ctx: Ctx) -> None:
    users = await ctx.call("friend.blocked")
    ctx.emit(users, lambda: ctx.out.print(simple_table(
        ["id", "handle", "name"], [[u["user_id"], "@" + u["handle"], u["display_name"]] for u in users])))


async def friend_find(ctx: Ctx) -> None:
    c = await ctx.connect()
    hashes = await c.contact_hashes(ctx.args.phones, ctx.args.region)
    users = await c.call("friend.find_by_contacts", phone_hashes=hashes)
    ctx.emit(users, lambda: ctx.out.print(simple_table(
        ["id", "handle", "name"], [[u["user_id"], "@" + u["handle"], u["display_name"]] for u in users])
        if users else "nobody found"))


# -- search, status, outbox, watch ----------------------------------------------------------------
async def search(ctx: Ctx) -> None:
    a = ctx.args
    chat_id = await chat_ref(ctx, a.chat) if a.chat else None
    hits = await ctx.call("message.search", query=a.query, chat_id=chat_id, limit=a.limit)
    ctx.emit(hits, lambda: ctx.out.print(simple_table(
        ["chat", "", "msg", "when", "text"],
        [[h["chat_id"], h["chat_title"], f"#{h['seq']}", when(h["created_at"]), summary(h, 100)] for h in hits])
        if hits else "no matches"))


async def verify(ctx: Ctx) -> int:
    """The safety number with someone: compare it in person (or scan the QR payload); --confirm pins
    their master key as verified, so a change is flagged until you verify again."""
    user = await user_ref(ctx, ctx.args.handle)
    c = await ctx.connect()
    info = await (c.verify_user(user["user_id"]) if ctx.args.confirm else c.safety_number(user["user_id"]))
    groups = info["safety_number"].split(" ")

    def human() -> None:
        ctx.out.print(Text(f"safety number with {clean(user['display_name'])} (@{user['handle']}):"))
        for i in range(0, 12, 4):
            ctx.out.print("  " + "  ".join(groups[i:i + 4]), markup=False)
        state = "verified" if info["verified"] else "not verified (compare the numbers, then --confirm)"
        if info.get("changed") and not info["verified"]:
            state = "their security code CHANGED since you first saw it; compare again, then --confirm"
        ctx.out.print(Text(state, style="green" if info["verified"] else "yellow"))
        ctx.out.print(Text(f"QR: {info['qr']}", style="dim"))
    ctx.emit({**info, "handle": user["handle"]}, human)
    return 0


async def status(ctx: Ctx) -> int:
    prof = ctx.profile
    info: dict[str, Any] = {"profile": prof.name, "path": str(prof.path), "server": prof.server,
                            "user": None, "device_id": prof.device_id, "connection": "not logged in",
                            "server_version": None, "outbox_pending": 0, "outbox_failed": 0, "cursor": prof.cursor}
    from dari.client import Outbox

    if prof.has_outbox():
        box = Outbox(prof.outbox_path)
        info["outbox_pending"], info["outbox_failed"] = len(box), len(box.failed())
        box.close()
    if prof.token is not None:
        c = await ctx.connect(require_online=False)
        info["connection"] = c.state
        info["route"] = "websocket"
        if c.state == "online":
            server_info = await c.call("server.info")
            info["server_version"] = server_info["version"]
            info["user"] = c.user
            if c.e2ee is not None:
                await c.e2ee.wait_ready()
            info["e2ee"] = c.e2ee_state     # "waiting_for_approval": another device must share the keys
    ctx.emit(info, lambda: ctx.out.print(Text("\n".join(f"{k:>15}: {clean(v)}" for k, v in info.items()
                                                        if k not in ("user",)) +
                                              (f"\n{'user':>15}: {clean(info['user']['display_name'])} "
                                               f"@{info['user']['handle']}" if info["user"] else ""))))
    return 0 if info["connection"] in ("online", "not logged in") else 1


async def outbox_list(ctx: Ctx) -> None:
    from dari.client import Outbox

    # Reads the file only: the point is to look at the outbox while the server is unreachable.
    box = Outbox(ctx.profile.outbox_path)
    try:
        pending: list[dict[str, Any]] = [
            {"client_id": p.client_id, "chat_id": p.chat_id, "text": p.text, "reply_to": p.reply_to,
             "created_at": int(p.created_at * 1000), "attempts": p.attempts} for p in box.pending()]
        failed = [{"client_id": f[0], "chat_id": f[1], "text": f[2], "code": f[3], "message": f[4]}
                  for f in box.failed()]
    finally:
        box.close()
    rows: list[list[object]] = [["queued", p["chat_id"], when(p["created_at"]), p["text"], f"{p['attempts']} tries"]
                                for p in pending]
    rows += [[Text("failed", style="red"), f["chat_id"], "", f["text"], f"[{f['code']}] {f['message']}"]
             for f in failed]
    ctx.emit({"pending": pending, "failed": failed}, lambda: ctx.out.print(
        simple_table(["state", "chat", "queued at", "text", ""], rows) if rows else "the outbox is empty"))


async def outbox_flush(ctx: Ctx) -> int:
    c = await ctx.connect()
    assert c.outbox is not None
    try:
        await c.flush_outbox(ctx.args.timeout)
    except TimeoutError:
        pass
    report_outbox_events(ctx, c.drain_events())
    left = len(c.outbox)
    ctx.emit({"pending": left}, lambda: ctx.out.print(
        "the outbox is empty" if not left else f"{left} message(s) still queued", markup=False))
    return 1 if left else 0


async def watch(ctx: Ctx) -> None:
    """Events since the last `dari watch` (G4 at the terminal), then live ones with --follow."""
    c = await ctx.connect(cursor=ctx.profile.cursor)
    async for ev in c.events():
        if ev.name == "session.live" and not ctx.args.follow:
            break
        if ev.name.startswith("outbox.") or ev.name in ("session.live", "typing", "presence"):
            continue
        if ev.name == "session.resync":
            ctx.err.print("note: away too long; older events are gone, showing new ones", markup=False)
        elif ctx.json:
            import json

            print(json.dumps({"event": ev.name, "payload": ev.payload, "cursor": ev.cursor}, ensure_ascii=False),
                  flush=True)
        else:
            ctx.out.print(event_line(ev.name, ev.payload))
        if c.cursor is not None:
            ctx.profile.cursor = c.cursor
            ctx.profile.save()
    if c.cursor is not None:
        ctx.profile.cursor = c.cursor
        ctx.profile.save()


# -- the parser ----------------------------------------------------------------------------------
def leaf(sub: Any, name: str, cmd: Command, help_: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_,
                                                parents=[common_options()], **kw)
    p.set_defaults(func=lambda args, _cmd=cmd: run(args, _cmd))
    return p


REGION_HELP = ("country a number without +code is from, e.g. KR or JP (default: $DARI_REGION, else the"
               " locale's country, else KR)")


def register(sub: Any) -> None:
    acc = sub.add_parser("account", help="sign up, log in, your profile").add_subparsers(dest="sub", required=True)
    p = leaf(acc, "signup", signup, "create an account and log this profile in as a device")
    p.add_argument("handle")
    p.add_argument("--name", help="display name (default: the handle)")
    p.add_argument("--phone", help="phone number for contact discovery (only a keyed hash is sent)")
    p.add_argument("--region", help=REGION_HELP)
    p.add_argument("--device", help="device name (default cli@HOSTNAME)")
    p = leaf(acc, "login", login, "log this profile in as a new device of an account")
    p.add_argument("handle")
    p.add_argument("--device", help="device name (default cli@HOSTNAME)")
    p = leaf(acc, "link", link, "log this profile in as a new device by a code approved on another device")
    p.add_argument("--device", help="device name (default cli@HOSTNAME)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the approval and the keys")
    p = leaf(acc, "reset-keys", reset_keys, "make a new encryption key when none of your other devices is left"
             " (contacts see a security code change)")
    p.add_argument("--yes", action="store_true", help="yes, make a new key")
    leaf(acc, "logout", logout, "log this device out")
    leaf(acc, "me", me, "your profile")
    p = leaf(acc, "profile", profile_cmd, "show or change display name and status message")
    p.add_argument("--name")
    p.add_argument("--status")
    leaf(acc, "password", password, "change password ($DARI_PASSWORD / $DARI_NEW_PASSWORD or prompts)")
    p = leaf(acc, "privacy", privacy, "who sees when you are online")
    p.add_argument("visibility", choices=["everyone", "friends", "nobody"])
    p = leaf(acc, "phone", phone, "set (or --clear) your phone number for contact discovery")
    p.add_argument("number", nargs="?")
    p.add_argument("--clear", action="store_true")
    p.add_argument("--region", help=REGION_HELP)
    p = leaf(acc, "delete", delete, "delete your account")
    p.add_argument("--yes", action="store_true", help="yes, really")

    dev = sub.add_parser("device", help="your logged-in devices").add_subparsers(dest="sub", required=True)
    leaf(dev, "list", device_list, "devices logged in to your account")
    leaf(dev, "revoke", device_revoke, "log a device out").add_argument("device_id", type=int, metavar="ID")
    p = leaf(dev, "rename", device_rename, "rename one of your devices (your other devices see it at once)")
    p.add_argument("device_id", type=int, metavar="ID")
    p.add_argument("name", metavar="NAME")
    p = leaf(dev, "approve", device_approve, "log in a new device (a browser, `dari account link`) showing this code")
    p.add_argument("code", metavar="CODE")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait to hand over the encryption keys")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the new device")
    leaf(dev, "requests", device_requests, "your devices waiting for this one to share the encryption keys")
    p = leaf(dev, "share-keys", device_share_keys, "give one of your devices that asked the encryption keys and"
             " chat history (check it is yours first: `dari device list`)")
    p.add_argument("device", metavar="ID|NAME")

    fr = sub.add_parser("friend", help="friends and blocks").add_subparsers(dest="sub", required=True)
    leaf(fr, "add", invite_cmd.friend_add, "add a friend by handle, invite link or invite code").add_argument(
        "who", metavar="HANDLE|LINK|CODE")
    p = leaf(fr, "invite", invite_cmd.friend_invite, "your invite link and its QR code: whoever opens it can add you")
    p.add_argument("--rotate", action="store_true", help="replace the link (the old one stops working)")
    p.add_argument("--revoke", action="store_true", help="turn the link off")
    p.add_argument("--no-qr", action="store_true", help="print the link only")
    leaf(fr, "list", friend_list, "your friends").add_argument("--all", action="store_true",
                                                               help="include hidden friends")
    for name, cmd, text in (("remove", friend_remove, "remove a friend"), ("block", friend_block, "block a user"),
                            ("unblock", friend_unblock, "unblock a user")):
        leaf(fr, name, cmd, text).add_argument("handle")
    leaf(fr, "blocked", friend_blocked, "users you blocked")
    for name, cmd, text in (("favourite", friend_favourite, "mark a friend as favourite"),
                            ("hide", friend_hide, "hide a friend from your list")):
        p = leaf(fr, name, cmd, text)
        p.add_argument("handle")
        p.add_argument("--off", action="store_true", help="undo")
    p = leaf(fr, "find", friend_find, "find people by phone number")
    p.add_argument("phones", nargs="+", metavar="PHONE")
    p.add_argument("--region", help=REGION_HELP)

    chat_commands.register(sub, leaf)

    p = leaf(sub, "search", search, "search your messages (Korean, Chinese, Japanese too)")
    p.add_argument("query")
    p.add_argument("--chat", help="only this chat")
    p.add_argument("--limit", type=int, default=20)
    p = leaf(sub, "verify", verify, "the safety number with someone (E2EE); --confirm marks them verified")
    p.add_argument("handle")
    p.add_argument("--confirm", action="store_true", help="the numbers match: mark verified")
    leaf(sub, "status", status, "server, user, device, connection and outbox")
    ob = sub.add_parser("outbox", help="messages waiting to be sent").add_subparsers(dest="sub", required=True)
    leaf(ob, "list", outbox_list, "queued and refused messages (works offline)")
    leaf(ob, "flush", outbox_flush, "send what is queued now").add_argument("--timeout", type=float, default=30.0)
    leaf(sub, "watch", watch, "events since the last watch").add_argument(
        "--follow", "-f", action="store_true", help="keep printing live events")
