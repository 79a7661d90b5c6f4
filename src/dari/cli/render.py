"""Turning results and events into terminal text.

Everything another user wrote (names, messages, titles) goes through `clean` and into rich `Text`
objects, never into markup strings: a message must not be able to restyle, clear or move the
reader's terminal.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dari.protocol.system_events import describe

# C0/C1 controls (ESC starts terminal escape sequences) and bidi overrides that can disguise text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(value: object) -> str:
    return _UNSAFE.sub("\ufffd", str(value))


def one_line(value: object, width: int = 60) -> str:
    text = clean(value).replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def when(ms: int | None, now: float | None = None) -> str:
    if not ms:
        return "-"
    t = ms / 1000
    now = time.time() if now is None else now
    if time.strftime("%Y-%m-%d", time.localtime(t)) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M", time.localtime(t))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def unread_of(seq: int, read_pointers: list[int]) -> int:
    """KakaoTalk's counter: how many active members have not read up to this message."""
    return sum(1 for p in read_pointers if p < seq)


def system_line(msg: dict[str, Any]) -> str:
    """A system message in English, from its structured event (the stored text for unknown events)."""
    text = str(msg.get("text", ""))
    return describe(msg["system"], text) if isinstance(msg.get("system"), dict) else text
def size_text(n: object) -> str:
    """1.2 MB, as the web client writes it (binary units)."""
    if not isinstance(n, int) or n < 0:
        return ""
    if n < 1024:
        return f"{n} B"
    v, unit = n / 1024, "KB"
    for unit in ("KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            break
        v /= 1024
    return f"{v:.1f} {unit}" if v < 10 else f"{round(v)} {unit}"


def duration_text(ms: object) -> str:
    if not isinstance(ms, int) or ms < 0:
        return ""
    s = round(ms / 1000)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


_LABELS = {"image": "photo", "video": "video", "voice": "voice", "file": "file"}


def attachment_label(kind: str, att: dict[str, Any] | None) -> str:
    """What a message carries besides text, in brackets: `[photo 1280x960]` (a multiplication sign
    between the sides), `[file report.pdf, 1.2 MB]`, `[voice 0:07]`, `[sticker 😀]`; "" for text."""
    a = att or {}
    if kind == "sticker":
        return f"[sticker {clean(a['emoji'])}]" if a.get("emoji") else f"[sticker #{a.get('sticker_id', '?')}]"
    if kind not in _LABELS:
        return "" if kind in ("text", "system") else f"[{clean(kind)}]"
    dims = f"{a['width']}×{a['height']}" if a.get("width") and a.get("height") else ""
    first = {"image": [dims], "video": [duration_text(a.get("duration_ms")), dims],
             "voice": [duration_text(a.get("duration_ms"))], "file": [one_line(a.get("name") or "", 80)]}[kind]
    head = " ".join(x for x in [_LABELS[kind], *first] if x)
    size = size_text(a.get("size")) if kind in ("file", "video") else ""
    return f"[{head}{', ' + size if size else ''}]"


def summary(msg: dict[str, Any], width: int = 60) -> str:
    """One line for previews and search hits: the attachment label, then the text (a caption)."""
    if msg.get("unsent"):
        return "(unsent)"
    if msg.get("kind") == "system":
        return one_line(system_line(msg), width)
    label = attachment_label(str(msg.get("kind", "text")), msg.get("attachment"))
    text = one_line(msg.get("text") or "", width)
    return f"{label} {text}".strip() if label else text


def message_line(msg: dict[str, Any], *, me: int | None = None, unread: int | None = None) -> Text:
    """`#12 14:03 Alice: hello  [1]`, the bracket being the unread counter (hidden at 0)."""
    count = msg.get("unread", 0) if unread is None else unread
    line = Text()
    line.append(f"#{msg['seq']} ", style="dim")
    line.append(when(msg.get("created_at")) + " ", style="dim")
    if msg.get("kind") == "system":
        line.append(f"— {clean(system_line(msg))} —", style="italic dim")
        return line
    mine = me is not None and msg.get("sender_id") == me
    line.append(clean(msg.get("sender_name") or f"user {msg.get('sender_id')}"),
                style="bold green" if mine else "bold cyan")
    line.append(": ")
    if msg.get("reply_to"):
        line.append(f"↪#{msg['reply_to']} ", style="magenta")
    label = "" if msg.get("unsent") else attachment_label(str(msg.get("kind", "text")), msg.get("attachment"))
    if msg.get("unsent"):
        line.append("(message unsent)", style="dim italic")
    elif msg.get("e2ee_status") not in (None, "ok"):
        # Our own words, styled apart: the sender's text could not be read at all.
        line.append(clean(msg.get("text", "")), style="bold red")
    elif label:
        # The label is ours (styled apart), the caption is the sender's.
        line.append(label, style="blue")
        if msg.get("text"):
            line.append(" " + clean(msg["text"]))
    else:
        line.append(clean(msg.get("text", "")))
    if msg.get("edited_at") and not msg.get("unsent"):
        line.append(" (edited)", style="dim")
    for emoji, users in sorted((msg.get("reactions") or {}).items()):
        line.append(f" {clean(emoji)}{len(users)}", style="yellow")
    if count:
        line.append(f"  [{count}]", style="bold yellow")
    return line


def chat_table(chats: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None)
    for col in ("id", "chat", "unread", "last", "preview"):
        table.add_column(col, no_wrap=col != "preview")
    for ch in chats:
        title = Text(clean(ch["title"] or "(untitled)"), style="bold")
        if ch["kind"] != "direct":
            title.append(f" ({ch['member_count']})", style="dim")
        if ch["muted"]:
            title.append(" 🔕", style="dim")
        badge = Text(str(ch["unread"]), style="bold white on red") if ch["unread"] else Text("")
        last = ch.get("last_message") or {}
        preview = Text(summary(last) if last else "", style="dim")
        table.add_row(str(ch["chat_id"]), title, badge, when(ch.get("last_activity")), preview)
    return table


def simple_table(columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[v if isinstance(v, Text) else Text(clean("" if v is None else v)) for v in row])
    return table


def event_line(name: str, payload: Any) -> Text:
    """One line per event for `dari watch`."""
    p = payload if isinstance(payload, dict) else {}
    if name == "message.new":
        return Text(f"[chat {p.get('chat_id')}] ").append_text(message_line(p))
    if name == "message.decrypted":
        return Text(f"[chat {p.get('chat_id')}] (key arrived) ").append_text(message_line(p))
    if name == "e2ee.key_changed":
        return Text(f"user {p.get('user_id')}'s security code changed: compare safety numbers again"
                    f" (dari verify #{p.get('user_id')})", style="bold yellow")
    if name == "e2ee.key_request":
        return Text(f"your device {p.get('device_id')} ({clean(p.get('device_name'))}) asks for your encryption"
                    f" keys: if it is yours, dari device share-keys {p.get('device_id')}", style="bold yellow")
    if name == "e2ee.own_key_reset":
        return Text("your encryption keys were reset on another of your devices: this device cannot send"
                    " encrypted messages until that device shares the new keys (dari device share-keys there)",
                    style="bold red")
    if name == "friend.added_you":
        user = p.get("user", {})
        return Text(f"{clean(user.get('display_name'))} (@{clean(user.get('handle'))}) added you as a friend")
    if name == "chat.read":
        return Text(f"[chat {p.get('chat_id')}] user {p.get('user_id')} read up to #{p.get('seq')}", style="dim")
    return Text(f"{clean(name)} {one_line(json.dumps(payload, ensure_ascii=False), 100)}", style="dim")


def make_console(stderr: bool = False) -> Console:
    # Highlighting would colour digits and URLs inside other people's messages: we style explicitly.
    # soft_wrap: an error or a message stays one line for grep and scripts; the terminal wraps it.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)
