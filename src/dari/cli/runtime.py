"""What every CLI command shares: the profile, a connected SDK client, error reporting, references.

A command is `async def cmd(ctx: Ctx) -> int | None`; `run` gives it a context, turns every failure
into `error [code]: message` on stderr with a non-zero exit (never a traceback), and delivers
whatever is still queued in the outbox before exiting (G7: the next CLI run sends it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dari.cli.profile import Profile, ProfileError
from dari.cli.render import make_console
from dari.protocol import methods
from dari.protocol.errors import DariError, ErrorCode

if TYPE_CHECKING:
    # Imported when a command runs: `dari serve` and `dari --help` build this parser too and
    # should not pay for the HTTP client.
    from dari.client import Client, Event

# A person at a terminal should hear about a dead server in seconds, not the SDK's 30 s default.
CALL_TIMEOUT = 15.0
FLUSH_TIMEOUT = 5.0
_HANDLE = methods.Handle.__metadata__[0].pattern  # type: ignore[attr-defined]


@dataclass
class Ctx:
    args: argparse.Namespace
    profile: Profile
    out: Console
    err: Console
    json: bool = False
    client: Client | None = None
    notes: list[str] = field(default_factory=list)

    async def connect(self, *, cursor: int | None = None, require_online: bool = True) -> Client:
        """A logged-in client on this profile's device, its outbox attached."""
        if self.client is not None:
            return self.client
        from dari.client import Client

        token = self.profile.require_login()
        c = Client(self.profile.server, token=token, cursor=cursor, outbox_path=self.profile.outbox_path,
                   call_timeout=CALL_TIMEOUT, crypto_path=self.profile.crypto_path)
        self.client = c
        try:
            await c.connect()
        except DariError as err:
            if err.code == ErrorCode.UNAUTHENTICATED:
                self.profile.clear_login()
                raise DariError(err.code, f"{err.message} (this device was logged out; log in again)") from None
            raise
        if require_online and c.state != "online":
            raise DariError(ErrorCode.UNAVAILABLE, f"cannot reach the server at {self.profile.server}")
        return c

    async def call(self, method: str, /, **params: Any) -> Any:
        c = await self.connect()
        return await c.call(method, **params)

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """Print JSON with --json, else the human rendering."""
        if self.json:
            from dari.cli.render import print_json

            print_json(data)
        else:
            human()


Command = Callable[[Ctx], Awaitable[int | None]]


def run(args: argparse.Namespace, cmd: Command) -> int:
    err = make_console(stderr=True)
    try:
        profile = Profile.load(getattr(args, "profile", None), getattr(args, "server", None))
    except ProfileError as exc:
        err.print(f"error [{exc.code}]: {exc.message}", markup=False)
        return 1
    ctx = Ctx(args, profile, make_console(), err, bool(getattr(args, "json", False)))
    try:
        return asyncio.run(_run(ctx, cmd))
    except KeyboardInterrupt:
        return 130


async def _run(ctx: Ctx, cmd: Command) -> int:
    import aiohttp

    code = 1
    try:
        code = int(await cmd(ctx) or 0)
    except DariError as exc:
        _report(ctx, exc.code.value, exc.message)
    except ProfileError as exc:
        _report(ctx, exc.code, exc.message)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        _report(ctx, "unavailable", f"cannot reach the server at {ctx.profile.server}: {detail}")
    finally:
        if ctx.client is not None:
            await _finish(ctx, ctx.client)
    return code


def _report(ctx: Ctx, code: str, message: str) -> None:
    ctx.err.print(f"error [{code}]: {message}", markup=False, highlight=False)


async def _finish(ctx: Ctx, c: Client) -> None:
    """Deliver what is queued (from this run or an earlier offline one), then close."""
    try:
        if c.outbox is not None and len(c.outbox) and c.state == "online":
            try:
                await c.flush_outbox(FLUSH_TIMEOUT)
            except TimeoutError:
                pass
        if c.e2ee is not None and c.state == "online" and c.token:
            await c.e2ee.wait_ready()     # a key request or a reset elsewhere is noticed at start-up
        events = c.drain_events()
        report_outbox_events(ctx, events)
        report_e2ee_events(ctx, events)
        if c.outbox is not None and len(c.outbox):
            ctx.err.print(f"note: {len(c.outbox)} message(s) queued in the outbox; they are sent on the next"
                          " run or by `dari outbox flush`", markup=False)
    finally:
        await c.close()


def report_e2ee_events(ctx: Ctx, events: list[Event]) -> None:
    """What needs the user's attention even when the command was about something else."""
    from dari.cli.render import event_line

    for ev in events:
        if ev.name in ("e2ee.key_request", "e2ee.own_key_reset"):
            ctx.err.print(event_line(ev.name, ev.payload))


def report_outbox_events(ctx: Ctx, events: list[Event], skip: set[str] | None = None) -> None:
    sent = [e for e in events if e.name == "outbox.sent" and e.payload.get("client_id") not in (skip or set())]
    if sent:
        ctx.err.print(f"note: delivered {len(sent)} queued message(s)", markup=False)
    for e in events:
        if e.name == "outbox.failed" and e.payload.get("client_id") not in (skip or set()):
            ctx.err.print(f"error [{e.payload['code']}]: a queued message was refused: {e.payload['message']}",
                          markup=False)


# -- input ---------------------------------------------------------------------------------------
def check_handle(handle: str) -> str:
    import re

    h = handle.removeprefix("@")
    if not re.match(_HANDLE, h):
        raise DariError(ErrorCode.INVALID_PARAMS,
                        f"invalid handle {handle!r}: use 3-32 characters of a-z, 0-9, _ and .")
    return h


def read_secret(prompt: str, env: str, *, confirm: bool = False) -> str:
    """From $env (scripts, tests), else a hidden prompt on a terminal, else one line of stdin."""
    value = os.environ.get(env)
    if value is not None:
        return value
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != value:
            raise DariError(ErrorCode.INVALID_PARAMS, "the passwords do not match")
        return value
    line = sys.stdin.readline()
    if not line:
        raise DariError(ErrorCode.INVALID_PARAMS, f"no password given (set {env} or pipe it on stdin)")
    return line.rstrip("\n")


# -- references: people by handle, chats by id, handle or title ----------------------------------
async def user_ref(ctx: Ctx, ref: str) -> dict[str, Any]:
    if ref.startswith("#") and ref[1:].isdigit():
        return dict(await ctx.call("user.get", user_id=int(ref[1:])))
    return dict(await ctx.call("user.get", handle=check_handle(ref)))


async def chat_ref(ctx: Ctx, ref: str, *, create_direct: bool = False) -> int:
    """A chat id; or a friend's handle (their 1:1 chat, opened if `create_direct`); or a chat title."""
    if ref.isdigit():
        return int(ref)
    chats: list[dict[str, Any]] = await ctx.call("chat.list")
    handle = ref.removeprefix("@")
    user: dict[str, Any] | None = None
    try:
        user = await user_ref(ctx, handle)
    except DariError as err:
        if err.code not in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_PARAMS):
            raise
    if user is not None:
        found = next((int(ch["chat_id"]) for ch in chats
                      if ch["kind"] == "direct" and ch.get("peer_id") == user["user_id"]), None)
        if found is None and create_direct:
            found = int((await (await ctx.connect()).open_direct(user["user_id"]))["chat_id"])
        if found is not None:
            remember_direct(ctx, user["handle"], found)
            return found
    titled = [ch for ch in chats if (ch["title"] or "").casefold() == ref.casefold()]
    if len(titled) == 1:
        return int(titled[0]["chat_id"])
    if len(titled) > 1:
        ids = ", ".join(str(ch["chat_id"]) for ch in titled)
        raise DariError(ErrorCode.CONFLICT, f"several chats are called {ref!r} (ids {ids}); use the id")
    raise DariError(ErrorCode.NOT_FOUND, f"no chat {ref!r}: give a chat id, a handle or a title"
                    " (see `dari chat list`)")


def remember_direct(ctx: Ctx, handle: str, chat_id: int) -> None:
    """Handle -> 1:1 chat id, kept in the profile so `msg send HANDLE` can queue while offline."""
    direct = ctx.profile.extra.setdefault("direct_chats", {})
    if direct.get(handle) != chat_id:
        direct[handle] = chat_id
        ctx.profile.save()


def known_direct(ctx: Ctx, ref: str) -> int | None:
    value = ctx.profile.extra.get("direct_chats", {}).get(ref.removeprefix("@"))
    return int(value) if value is not None else None


def common_options() -> argparse.ArgumentParser:
    """--profile/--server/--json on every command. SUPPRESS defaults let them be given at any level."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--profile", default=argparse.SUPPRESS,
                   help="profile (device) name; default $DARI_PROFILE or 'default'")
    p.add_argument("--server", default=argparse.SUPPRESS, help="server URL, remembered in the profile")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return p
