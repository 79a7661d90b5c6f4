"""The person-at-a-terminal CLI, run as a real `dari` subprocess against a real `dari serve`."""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, ServerProcess

Run = Callable[..., subprocess.CompletedProcess[str]]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DARI_HOME": str(home), "DARI_PASSWORD": PASSWORD, "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def dari(tmp_path: Path) -> Run:
    home = tmp_path / "home"

    def run(*args: str, ok: bool = True, stdin: str | None = None, timeout: float = 60) -> \
            subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "dari.cli.main", *args], input=stdin, capture_output=True,
                              text=True, env=_env(home), timeout=timeout)
        if ok:
            assert proc.returncode == 0, f"dari {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc
    run.home = home  # type: ignore[attr-defined]
    return run


def js(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def signup(dari: Run, server: ServerProcess, profile: str, handle: str, name: str) -> dict[str, Any]:
    return dict(js(dari("account", "signup", handle, "--name", name, "--server", server.url, "--profile", profile,
                        "--json")))


def link_device(dari: Run, server: ServerProcess, existing: str, profile: str, device: str) -> dict[str, Any]:
    """`dari account link` on a new profile, approved with `dari device approve` on an existing one."""
    proc = subprocess.Popen([sys.executable, "-m", "dari.cli.main", "account", "link", "--device", device, "--server",
                             server.url, "--profile", profile, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(dari.home))  # type: ignore[attr-defined]
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("code: "), first + proc.stderr.read()
        approved = dari("device", "approve", first.split()[1], "--profile", existing)
        assert "handed over" in approved.stdout, approved.stdout + approved.stderr
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err, err
        return dict(json.loads(out))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_people_two_devices_chat_with_unread_counters(dari: Run, server: ServerProcess) -> None:
    alice = signup(dari, server, "alice", "alice", "Alice")
    signup(dari, server, "bob", "bob", "Bob")
    # The token is a password-equivalent: only its owner may read it.
    token = dari.home / "alice" / "token"  # type: ignore[attr-defined]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert json.loads((dari.home / "alice" / "profile.json").read_text())["server"] == server.url  # type: ignore

    # A second profile is a second device of the same account (the PC next to the phone), linked from
    # the first so it carries the same end-to-end encryption master key at once (docs/e2ee.md: a password
    # login would wait until the first device shares the keys with `dari device share-keys`).
    pc = link_device(dari, server, "alice", "alice-pc", "PC")
    assert pc["user"]["user_id"] == alice["user"]["user_id"] and pc["keys"] is True
    devices = js(dari("device", "list", "--profile", "alice", "--json"))
    assert len(devices) == 2 and "PC" in {d["name"] for d in devices}
    assert [d["current"] for d in devices].count(True) == 1

    dari("friend", "add", "bob", "--profile", "alice")
    friends = js(dari("friend", "list", "--profile", "alice", "--json"))
    assert [f["user"]["handle"] for f in friends] == ["bob"]

    chat = js(dari("chat", "open", "bob", "--profile", "alice", "--json"))
    chat_id = chat["chat_id"]
    sent = js(dari("msg", "send", str(chat_id), "안녕 bob", "--profile", "alice", "--json"))
    assert sent["seq"] >= 1 and sent["unread"] == 1 and sent["text"] == "안녕 bob"
    # A handle names the 1:1 chat too.
    second = js(dari("msg", "send", "bob", "second", "--reply", str(sent["seq"]), "--profile", "alice", "--json"))
    assert second["chat_id"] == chat_id and second["reply_to"] == sent["seq"]

    listing = js(dari("chat", "list", "--profile", "bob", "--json"))
    assert [(c["chat_id"], c["unread"]) for c in listing] == [(chat_id, 2)]
    assert listing[0]["last_message"]["text"] == "second"

    history = dari("msg", "history", str(chat_id), "--profile", "alice")
    lines = [ln for ln in history.stdout.splitlines() if "Alice:" in ln]
    assert len(lines) == 2 and all(ln.endswith("[1]") for ln in lines), history.stdout

    dari("chat", "read", str(chat_id), "--profile", "bob")
    page = js(dari("msg", "history", str(chat_id), "--profile", "alice-pc", "--json"))
    texts = [(m["text"], m["unread"]) for m in page["messages"] if m["kind"] == "text"]
    assert texts == [("안녕 bob", 0), ("second", 0)]
    assert "[1]" not in dari("msg", "history", str(chat_id), "--profile", "alice").stdout

    assert js(dari("chat", "list", "--profile", "bob", "--json"))[0]["unread"] == 0
    hits = js(dari("search", "안녕", "--profile", "bob", "--json"))
    assert [h["seq"] for h in hits] == [sent["seq"]]

    status = js(dari("status", "--profile", "alice", "--json"))
    assert status["connection"] == "online" and status["user"]["handle"] == "alice"
    assert status["outbox_pending"] == 0


def test_groups_mute_edit_react_unsend(dari: Run, server: ServerProcess) -> None:
    signup(dari, server, "a", "minji", "Minji")
    jun = signup(dari, server, "b", "jun", "Jun")["user"]
    signup(dari, server, "c", "sora", "Sora")
    group = js(dari("chat", "group", "create", "Study", "--with", "jun", "--profile", "a", "--json"))
    gid = group["chat_id"]
    assert sorted(m["handle"] for m in group["members"]) == ["jun", "minji"]
    dari("chat", "invite", str(gid), "sora", "--profile", "a")
    dari("chat", "rename", "Study", "Study club", "--profile", "a")
    dari("chat", "mute", str(gid), "--profile", "b")
    msg = js(dari("msg", "send", "Study club", "exam friday", "--profile", "a", "--json"))
    assert msg["unread"] == 2   # Jun and Sora have not read it

    chats = js(dari("chat", "list", "--profile", "b", "--json"))
    assert chats[0]["chat_id"] == gid and chats[0]["muted"] and chats[0]["title"] == "Study club"
    table = dari("chat", "list", "--profile", "b").stdout
    assert "Study club" in table and "🔕" in table

    dari("msg", "edit", str(gid), str(msg["seq"]), "exam thursday", "--profile", "a")
    dari("msg", "react", str(gid), str(msg["seq"]), "👍", "--profile", "b")
    page = js(dari("msg", "history", str(gid), "--profile", "c", "--json"))
    last = page["messages"][-1]
    assert last["text"] == "exam thursday" and last["edited_at"]
    assert last["reactions"] == {"👍": [jun["user_id"]]}
    dari("msg", "unsend", str(gid), str(msg["seq"]), "--profile", "a")
    assert js(dari("msg", "history", str(gid), "--profile", "c", "--json"))["messages"][-1]["unsent"]

    dari("chat", "remove", str(gid), "sora", "--profile", "a")
    # System lines are rendered from their structured events.
    shown = dari("msg", "history", str(gid), "--profile", "b").stdout
    for line in ("Minji created the group “Study”", "Minji invited Sora", "Minji renamed the chat to “Study club”",
                 "Minji removed Sora"):
        assert f"— {line} —" in shown, shown
    members = js(dari("chat", "info", str(gid), "--profile", "a", "--json"))["members"]
    assert sorted(m["handle"] for m in members) == ["jun", "minji"]

    room = js(dari("chat", "open-create", "Seoul runners", "--nickname", "runner1", "--profile", "a", "--json"))
    joined = js(dari("chat", "open-join", room["link_code"], "--nickname", "quiet", "--profile", "c", "--json"))
    assert joined["chat_id"] == room["chat_id"]
    # Open chat nicknames hide the real profile.
    assert all(m["handle"] == "" for m in joined["members"])


def test_bad_input_prints_a_clear_error(dari: Run, server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(extra_env={"DARI_MAX_MESSAGE_CHARS": "50"})
    bad = dari("account", "signup", "Not A Handle!", "--server", server.url, "--profile", "x", ok=False)
    assert bad.returncode != 0
    assert bad.stderr.startswith("error [invalid_params]: invalid handle 'Not A Handle!'"), bad.stderr

    weak = subprocess.run([sys.executable, "-m", "dari.cli.main", "account", "signup", "shorty", "--server",
                           server.url, "--profile", "x"], capture_output=True, text=True, timeout=60,
                          env={**_env(dari.home), "DARI_PASSWORD": "short"})  # type: ignore[attr-defined]
    assert weak.returncode != 0 and weak.stderr.startswith("error [invalid_params]:"), weak.stderr

    signup(dari, server, "a", "alice", "Alice")
    signup(dari, server, "b", "bob", "Bob")
    chat_id = js(dari("chat", "open", "bob", "--profile", "a", "--json"))["chat_id"]
    long = dari("msg", "send", str(chat_id), "x" * 51, "--profile", "a", ok=False)
    assert long.returncode != 0
    assert long.stderr.startswith("error [limit_exceeded]: message is 51 characters; the limit is 50"), long.stderr

    nobody = dari("friend", "add", "nosuchperson", "--profile", "a", ok=False)
    assert nobody.returncode != 0 and nobody.stderr.startswith("error [not_found]:"), nobody.stderr

    stranger = dari("msg", "history", "99999", "--profile", "a", ok=False)
    assert stranger.returncode != 0 and stranger.stderr.startswith("error [forbidden]:"), stranger.stderr

    logged_out = dari("chat", "list", "--profile", "nobody", ok=False)
    assert logged_out.returncode != 0 and logged_out.stderr.startswith("error [unauthenticated]:")

    # Nothing of the refused message was stored.
    assert "x" * 51 not in dari("msg", "history", str(chat_id), "--profile", "b").stdout


def test_offline_send_is_queued_and_delivered_after_restart(dari: Run,
                                                            server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    signup(dari, server, "a", "alice", "Alice")
    signup(dari, server, "b", "bob", "Bob")
    chat_id = str(js(dari("chat", "open", "bob", "--profile", "a", "--json"))["chat_id"])

    server.stop()
    first = dari("msg", "send", chat_id, "sent while down 1", "--profile", "a", "--json")
    assert js(first)["queued"] is True
    # The profile remembers which chat is the 1:1 with bob, so a handle works offline too.
    dari("msg", "send", "bob", "sent while down 2", "--profile", "a")
    queued = js(dari("outbox", "list", "--profile", "a", "--json"))
    assert [p["text"] for p in queued["pending"]] == ["sent while down 1", "sent while down 2"]
    down = dari("chat", "list", "--profile", "a", ok=False)
    assert down.returncode != 0 and "error [unavailable]" in down.stderr

    server.start()
    flushed = dari("outbox", "flush", "--profile", "a")
    assert "delivered 2 queued" in flushed.stderr
    assert js(dari("outbox", "list", "--profile", "a", "--json"))["pending"] == []

    # Queued again, and this time delivered by whatever command runs next.
    server.stop()
    dari("msg", "send", chat_id, "sent while down 3", "--profile", "a")
    server.start()
    later = dari("chat", "list", "--profile", "a")
    assert "delivered 1 queued" in later.stderr

    page = js(dari("msg", "history", chat_id, "--profile", "b", "--json"))
    texts = [m["text"] for m in page["messages"] if m["kind"] == "text"]
    assert texts == ["sent while down 1", "sent while down 2", "sent while down 3"]   # in order, exactly once


class Interactive:
    """`dari chat CHAT` with pipes for stdin and stdout (not a TTY), read line by line."""

    def __init__(self, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dari.cli.main", "chat", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if predicate(line):
                return line
        stderr = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no matching line; saw {self.seen!r}\n{stderr}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def test_interactive_chat_without_a_tty(dari: Run, server: ServerProcess) -> None:
    signup(dari, server, "a", "alice", "Alice")
    signup(dari, server, "b", "bob", "Bob")
    chat_id = str(js(dari("chat", "open", "alice", "--profile", "b", "--json"))["chat_id"])
    dari("msg", "send", chat_id, "before you came", "--profile", "b")

    tui = Interactive(dari.home, "bob", "--profile", "a")  # type: ignore[attr-defined]
    try:
        tui.expect(lambda ln: ln.startswith("== Bob"))
        # Shown means read: the history line carries no counter, and Bob's badge clears.
        early = tui.expect(lambda ln: "before you came" in ln)
        assert not early.endswith("]"), early
        tui.send("hello from the terminal")
        mine = tui.expect(lambda ln: "Alice: hello from the terminal" in ln)
        assert mine.endswith("[1]"), mine            # Bob has not read it yet
        seq = int(mine.split()[0].lstrip("#"))

        dari("chat", "read", chat_id, "--profile", "b")
        tui.expect(lambda ln: ln.startswith(f"~ Bob read up to #{seq}") and f"#{seq}=0" in ln)

        dari("msg", "send", chat_id, "hi back", "--profile", "b")
        tui.expect(lambda ln: "Bob: hi back" in ln)
        tui.send(f"/react {seq} ❤")
        tui.expect(lambda ln: ln.startswith("~ ") and "❤1" in ln)
        tui.send("/quit")
        assert tui.proc.wait(20) == 0
    finally:
        if tui.proc.poll() is None:
            tui.proc.kill()
            tui.proc.wait()
    page = js(dari("msg", "history", chat_id, "--profile", "b", "--json"))
    by_text = {m["text"]: m["unread"] for m in page["messages"] if m["kind"] == "text"}
    # The interactive chat read Bob's reply as it showed it.
    assert by_text == {"before you came": 0, "hello from the terminal": 0, "hi back": 0}
    assert js(dari("chat", "list", "--profile", "a", "--json"))[0]["unread"] == 0
