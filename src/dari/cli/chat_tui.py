"""`dari chat CHAT`: the interactive terminal chat.

One state (ChatState: messages, members with their read pointers, who is typing) and two faces:
- on a terminal, a full-screen rich view redrawn as things change, with our own input line read
  key by key (rich has no input widget, and a plain input() would be overwritten by redraws);
- otherwise (stdin or stdout not a TTY), lines in, lines out, so scripts and tests can use it.

KakaoTalk's unread counter is computed here from the members' read pointers (a message's unread =
active members whose read_seq < its seq) and updated from `chat.read` events, so it changes live
without asking the server again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from dari.cli.render import clean, message_line, one_line
from dari.cli.runtime import Ctx, chat_ref
from dari.client import Client, Event
from dari.protocol.errors import DariError

TYPING_SHOW_S = 6.0      # a typing indicator fades if no refresh arrives (the sender may have left)
TYPING_SEND_S = 3.0      # how often we repeat our own "typing" while keys are pressed
HELP = ("/reply SEQ TEXT · /edit SEQ TEXT · /unsend SEQ · /react SEQ EMOJI · /unreact SEQ EMOJI · /more ·"
        " /quit   (//text sends a line starting with /)")


class ChatState:
    def __init__(self, me: int, detail: dict[str, Any]) -> None:
        self.me = me
        self.chat_id = int(detail["chat_id"])
        self.messages: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[str, Any]] = {}
        self.typing: dict[int, float] = {}
        self.pending: dict[str, str] = {}   # client_id -> text, queued in the outbox, not yet stored
        self.set_detail(detail)

    def set_detail(self, detail: dict[str, Any]) -> None:
        self.title, self.kind = str(detail["title"] or "(untitled)"), str(detail["kind"])
        self.members = {int(m["user_id"]): dict(m) for m in detail["members"]}

    def unread(self, seq: int) -> int:
        return sum(1 for m in self.members.values() if m["read_seq"] < seq)

    def add(self, msg: dict[str, Any]) -> None:
        self.messages[int(msg["seq"])] = msg
        sender = self.members.get(int(msg["sender_id"]))
        if msg.get("kind") != "system" and sender is not None:
            # The server moves a sender's pointer to their own message: mirror it without an event.
            sender["read_seq"] = max(sender["read_seq"], int(msg["seq"]))
        self.pending.pop(str(msg.get("client_id", "")), None)

    def last_seq(self) -> int:
        return max(self.messages, default=0)

    def name(self, user_id: int) -> str:
        m = self.members.get(user_id)
        return str(m["display_name"]) if m else f"user {user_id}"

    def typing_names(self) -> list[str]:
        now = time.monotonic()
        self.typing = {u: t for u, t in self.typing.items() if t > now}
        return [self.name(u) for u in self.typing]

    def line(self, seq: int) -> Text:
        return message_line(self.messages[seq], me=self.me, unread=self.unread(seq))


class ChatApp:
    def __init__(self, ctx: Ctx, client: Client, state: ChatState, *, screen: bool) -> None:
        self.ctx, self.c, self.s, self.screen = ctx, client, state, screen
        self.notices: list[Text] = []
        self.buffer = ""
        self.live: Live | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._typing_sent = 0.0
        self._conn = client.state

    # -- output ----------------------------------------------------------------------------
    def say(self, text: Text) -> None:
        if self.screen:
            self.notices = [*self.notices[-2:], text]
            self.refresh()
        else:
            self.ctx.out.print(text, soft_wrap=True)

    def show(self, seq: int) -> None:
        if self.screen:
            self.refresh()
        else:
            self.ctx.out.print(self.s.line(seq), soft_wrap=True)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def status(self) -> str:
        route = getattr(self.c, "route", None) or "websocket"
        return f"{self.c.state} · {route} · {self.ctx.profile.server}"

    def render(self) -> Group:
        console = self.ctx.out
        width, height = console.size.width, console.size.height
        header = Text(f" {clean(self.s.title)} ", style="bold reverse")
        header.append(f" {self.s.kind}, {len(self.s.members)} members", style="dim")
        header.append(f"   ● {self.status()}", style="green" if self.c.state == "online" else "red")
        lines: list[Text] = []
        for seq in sorted(self.s.messages):
            lines.extend(self.s.line(seq).wrap(console, width))
        for text in self.s.pending.values():
            lines.append(Text(f"⏳ {one_line(text, width - 4)}", style="dim"))
        lines.extend(self.notices)
        typing = self.s.typing_names()
        footer = Text(f"{', '.join(clean(n) for n in typing)} typing…" if typing else "", style="italic dim")
        shown = self.buffer[-(width - 3):]
        prompt = Text("> ", style="bold").append(clean(shown)).append("█", style="blink")
        room = max(1, height - 3)
        body = lines[-room:]
        body = [Text("")] * (room - len(body)) + body
        return Group(header, *body, footer, prompt)

    # -- loading and reading ---------------------------------------------------------------
    async def load(self, limit: int) -> None:
        self.s.set_detail(await self.c.call("chat.get", chat_id=self.s.chat_id))
        page = await self.c.call("message.history", chat_id=self.s.chat_id, limit=limit)
        self.s.messages.clear()
        for m in page["messages"]:
            self.s.messages[int(m["seq"])] = m
        await self.mark_read()
        if not self.screen:
            for seq in sorted(self.s.messages):
                self.show(seq)

    async def mark_read(self) -> None:
        """What is on the screen has been read (KakaoTalk marks a chat read as it is open)."""
        me = self.s.members.get(self.s.me)
        last = self.s.last_seq()
        if me is None or me["read_seq"] >= last or self.c.state != "online":
            return
        # Our own counter drops as the message is shown, not a round trip later.
        me["read_seq"] = last
        with contextlib.suppress(DariError, TimeoutError):
            await self.c.call("chat.read", chat_id=self.s.chat_id, seq=last)

    # -- events ----------------------------------------------------------------------------
    async def on_event(self, ev: Event) -> bool:
        p = ev.payload if isinstance(ev.payload, dict) else {}
        if ev.name == "session.revoked":
            self.say(Text("this device was logged out", style="red"))
            return False
        if ev.name == "session.resync":
            self.say(Text("~ reloading after a long time away", style="dim"))
            await self.load(len(self.s.messages) or 30)
            return True
        if ev.name == "outbox.failed":
            self.s.pending.pop(str(p.get("client_id")), None)
            self.say(Text(f"! not sent [{clean(p.get('code'))}]: {clean(p.get('message'))}", style="red"))
            return True
        if ev.name == "e2ee.key_changed" and int(p.get("user_id", 0)) in self.s.members:
            who = clean(self.s.name(int(p["user_id"])))
            self.say(Text(f"! {who}'s security code changed: compare safety numbers (dari verify #{p['user_id']})",
                          style="bold yellow"))
            return True
        if p.get("chat_id") != self.s.chat_id:
            return True
        if ev.name == "message.decrypted" and int(p.get("seq", 0)) in self.s.messages:
            self.s.messages[int(p["seq"])].update(p)
            self.say(Text("~ ", style="dim").append_text(self.s.line(int(p["seq"]))))
            return True
        if ev.name == "message.new":
            self.s.add(p)
            self.s.typing.pop(int(p["sender_id"]), None)
            if p["sender_id"] != self.s.me:
                await self.mark_read()
            self.show(int(p["seq"]))
        elif ev.name == "chat.read":
            self._on_read(int(p["user_id"]), int(p["seq"]), int(p.get("prev_seq", 0)))
        elif ev.name == "typing" and p.get("user_id") != self.s.me:
            uid = int(p["user_id"])
            if p.get("typing", True):
                if uid not in self.s.typing and not self.screen:
                    self.say(Text(f"… {clean(self.s.name(uid))} is typing", style="dim italic"))
                self.s.typing[uid] = time.monotonic() + TYPING_SHOW_S
            else:
                self.s.typing.pop(uid, None)
            self.refresh()
        elif ev.name in ("message.edited", "message.unsent", "message.reaction"):
            msg = self.s.messages.get(int(p["seq"]))
            if msg is not None:
                if ev.name == "message.edited":
                    msg.update(text=p["text"], edited_at=p["edited_at"],
                               **({"e2ee_status": p["e2ee_status"]} if "e2ee_status" in p else {}))
                elif ev.name == "message.unsent":
                    msg.update(unsent=True, text="", reactions={})
                else:
                    msg["reactions"] = p.get("reactions", {})
                self.say(Text("~ ", style="dim").append_text(self.s.line(int(p["seq"]))))
        elif ev.name in ("chat.members", "chat.renamed"):
            self.s.set_detail(await self.c.call("chat.get", chat_id=self.s.chat_id))
            self.say(Text(f"~ {clean(self.s.title)}: {len(self.s.members)} members", style="dim"))
        return True

    def _on_read(self, user_id: int, seq: int, prev: int) -> None:
        member = self.s.members.get(user_id)
        if member is None or seq <= member["read_seq"]:
            return
        old = member["read_seq"]
        member["read_seq"] = seq
        changed = [q for q in sorted(self.s.messages) if max(old, prev) < q <= seq]
        if self.screen:
            self.refresh()
        elif changed:
            counts = ", ".join(f"#{q}={self.s.unread(q)}" for q in changed[-8:])
            self.say(Text(f"~ {clean(self.s.name(user_id))} read up to #{seq} · unread {counts}", style="dim"))

    # -- input -----------------------------------------------------------------------------
    async def on_input(self, line: str) -> bool:
        line = line.rstrip("\r\n")
        if not line.strip():
            return True
        try:
            return await self._command(line)
        except DariError as err:
            self.say(Text(f"! error [{err.code.value}]: {err.message}", style="red"))
        except (ValueError, IndexError):
            self.say(Text(f"! usage: {HELP}", style="red"))
        return True

    async def _command(self, line: str) -> bool:
        if not line.startswith("/") or line.startswith("//"):
            await self.send(line[1:] if line.startswith("//") else line)
            return True
        cmd, _, rest = line.partition(" ")
        arg, _, text = rest.strip().partition(" ")
        chat = self.s.chat_id
        if cmd in ("/quit", "/q", "/exit"):
            return False
        if cmd == "/reply":
            await self.send(text, reply_to=int(arg))
        elif cmd == "/edit":
            await self.c.call("message.edit", chat_id=chat, seq=int(arg), text=text)
        elif cmd == "/unsend":
            await self.c.call("message.unsend", chat_id=chat, seq=int(arg))
        elif cmd in ("/react", "/unreact"):
            await self.c.call("message.react", chat_id=chat, seq=int(arg), emoji=text.strip(), on=cmd == "/react")
        elif cmd == "/more":
            await self._older()
        else:
            self.say(Text(HELP, style="dim"))
        return True

    async def send(self, text: str, reply_to: int | None = None) -> None:
        if not text.strip():
            raise ValueError("empty")
        cid = await self.c.send_message(self.s.chat_id, text, reply_to=reply_to)
        self.s.pending[str(cid)] = text
        if self.screen:
            self._typing_sent = 0.0
            self.refresh()
            if self.c.state == "online":
                with contextlib.suppress(DariError, TimeoutError):
                    await self.c.call("typing.set", chat_id=self.s.chat_id, typing=False)
        elif self.c.state != "online":
            self.say(Text("… queued in the outbox (offline); it is sent when the connection is back", style="dim"))

    async def _older(self) -> None:
        first = min(self.s.messages, default=0)
        if first <= 1:
            self.say(Text("~ this is the beginning of the chat", style="dim"))
            return
        page = await self.c.call("message.history", chat_id=self.s.chat_id, before_seq=first, limit=30)
        for m in page["messages"]:
            self.s.messages[int(m["seq"])] = m
            self.show(int(m["seq"]))

    def typed(self) -> None:
        """A key was pressed: tell the others we are typing, at most every few seconds."""
        now = time.monotonic()
        if self.c.state == "online" and now - self._typing_sent > TYPING_SEND_S:
            self._typing_sent = now
            task = asyncio.ensure_future(self.c.call("typing.set", chat_id=self.s.chat_id, typing=True))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        pump = asyncio.create_task(self._pump_events())
        watch = asyncio.create_task(self._watch_connection())
        try:
            while True:
                kind, item = await self.queue.get()
                if kind == "event":
                    if not await self.on_event(item):
                        break
                elif item is None or not await self.on_input(item):
                    break
        finally:
            for task in (pump, watch):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _pump_events(self) -> None:
        async for ev in self.c.events():
            self.queue.put_nowait(("event", ev))

    async def _watch_connection(self) -> None:
        # The SDK reconnects by itself without an event; poll so the status line follows it.
        while True:
            await asyncio.sleep(0.5)
            if self.c.state != self._conn:
                self._conn = self.c.state
                if self.screen:
                    self.refresh()
                else:
                    self.say(Text(f"~ connection: {self._conn}", style="dim"))
                if self._conn == "online":
                    await self.mark_read()


# -- input sources ---------------------------------------------------------------------------------
def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """stdin lines into the queue from a thread: pipes cannot be read asynchronously everywhere."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, ("input", line))
    loop.call_soon_threadsafe(queue.put_nowait, ("input", None))


class KeyReader:
    """Keys from a terminal in cbreak mode, decoded as UTF-8 (Hangul, kana, hanzi), escapes skipped."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.esc = 0

    def feed(self) -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            self.app.queue.put_nowait(("input", None))
            return
        for ch in self.decoder.decode(data):
            self.key(ch)
        self.app.refresh()

    def key(self, ch: str) -> None:
        app = self.app
        if self.esc == 1:
            self.esc = 2 if ch in "[O" else 0
            return
        if self.esc == 2:
            if "@" <= ch <= "~":
                self.esc = 0
            return
        if ch == "\x1b":
            self.esc = 1
        elif ch in "\r\n":
            app.queue.put_nowait(("input", app.buffer))
            app.buffer = ""
        elif ch in "\x7f\x08":
            app.buffer = app.buffer[:-1]
        elif ch == "\x15":                       # Ctrl-U
            app.buffer = ""
        elif ch == "\x17":                       # Ctrl-W
            app.buffer = app.buffer.rstrip().rpartition(" ")[0] + (" " if " " in app.buffer.rstrip() else "")
        elif ch == "\x04" and not app.buffer:   # Ctrl-D on an empty line
            app.queue.put_nowait(("input", None))
        elif ch.isprintable():
            app.buffer += ch
            app.typed()


async def pick_chat(ctx: Ctx) -> int:
    from rich.prompt import IntPrompt

    from dari.cli.render import chat_table
    from dari.protocol.errors import ErrorCode

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DariError(ErrorCode.INVALID_PARAMS, "name the chat: dari chat CHAT (see `dari chat list`)")
    chats: list[dict[str, Any]] = await ctx.call("chat.list")
    if not chats:
        raise DariError(ErrorCode.NOT_FOUND, "no chats yet: `dari chat open HANDLE` starts one")
    ctx.out.print(chat_table(chats))
    ids = [int(ch["chat_id"]) for ch in chats]
    choice = await asyncio.to_thread(IntPrompt.ask, "chat id", console=ctx.out, default=ids[0])
    if choice not in ids:
        raise DariError(ErrorCode.NOT_FOUND, f"you have no chat {choice}")
    return int(choice)


async def interactive(ctx: Ctx) -> int:
    c = await ctx.connect()
    chat_id = await chat_ref(ctx, ctx.args.chat, create_direct=True) if ctx.args.chat else await pick_chat(ctx)
    assert c.user is not None
    detail = await c.call("chat.get", chat_id=chat_id)
    screen = sys.stdin.isatty() and sys.stdout.isatty()
    app = ChatApp(ctx, c, ChatState(int(c.user["user_id"]), detail), screen=screen)
    loop = asyncio.get_running_loop()
    if not screen:
        ctx.out.print(Text(f"== {clean(app.s.title)} ({app.s.kind}, {len(app.s.members)} members) · "
                           f"{app.status()} ==", style="bold"), soft_wrap=True)
        await app.load(ctx.args.limit)
        threading.Thread(target=_read_lines, args=(loop, app.queue), daemon=True).start()
        await app.run()
        return 0
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    reader = KeyReader(app)
    try:
        tty.setcbreak(fd)
        loop.add_reader(fd, reader.feed)
        loop.add_signal_handler(signal.SIGINT, lambda: app.queue.put_nowait(("input", None)))
        with Live(get_renderable=app.render, console=ctx.out, screen=True, auto_refresh=True,
                  refresh_per_second=4) as live:
            app.live = live
            await app.load(ctx.args.limit)
            await app.run()
    finally:
        app.live = None
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGINT)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return 0
