"""The CLI shows stickers, photos, files, voice and unsent messages as lines, not blanks (issue 13):
`dari msg history`, `dari chat list`, `dari search` and the live `dari chat`, as real subprocesses
against a real `dari serve`."""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path

from PIL import Image

from dari.cli.render import attachment_label, summary
from tests.conftest import ServerProcess
from tests.test_cli import Interactive, Run, dari, js, signup  # noqa: F401  (dari is a fixture)


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def test_history_search_list_and_live_chat_show_every_kind(dari: Run, server: ServerProcess,  # noqa: F811
                                                            tmp_path: Path) -> None:
    signup(dari, server, "ann", "ann", "Ann")
    signup(dari, server, "ben", "ben", "Ben")
    dari("friend", "add", "ben", "--profile", "ann")
    photo, report, voice = tmp_path / "night.png", tmp_path / "report.pdf", tmp_path / "memo.wav"
    img = io.BytesIO()
    Image.new("RGB", (1280, 960), (10, 20, 60)).save(img, format="PNG")
    photo.write_bytes(img.getvalue())
    report.write_bytes(b"%PDF-1.4\n" + b"0" * (1258291 - 9))     # 1.2 MB
    voice.write_bytes(wav(7.0))
    send = ("msg", "send-file", "ben")
    dari(*send, str(photo), "--caption", "한강 야경", "--profile", "ann")
    dari(*send, str(report), "--profile", "ann")
    dari(*send, str(voice), "--profile", "ann")
    dari("sticker", "send", "ben", "1", "--profile", "ann")
    oops = js(dari("msg", "send", "ben", "oops", "--profile", "ann", "--json"))
    dari("msg", "unsend", "ben", str(oops["seq"]), "--profile", "ann")

    history = dari("msg", "history", "ann", "--profile", "ben").stdout
    # Ben has not read them: each line ends with the unread counter, cut off here.
    lines = [re.sub(r"  \[1\]$", "", ln) for ln in history.splitlines() if "Ann:" in ln]
    assert len(lines) == 5, history
    photo_line, file_line, voice_line, sticker_line, unsent_line = lines
    assert photo_line.endswith("Ann: [photo 1280×960] 한강 야경"), photo_line
    assert file_line.endswith("Ann: [file report.pdf, 1.2 MB]"), file_line
    assert voice_line.endswith("Ann: [voice 0:07]"), voice_line
    assert re.search(r"Ann: \[sticker \S+\]$", sticker_line), sticker_line
    assert unsent_line.endswith("Ann: (message unsent)"), unsent_line

    # The list's preview and search hits say what a media message is.
    listing = dari("chat", "list", "--profile", "ben").stdout
    assert "(unsent)" in listing, listing
    found = dari("search", "야경", "--profile", "ben").stdout
    assert "[photo 1280×960] 한강 야경" in found, found
    found = dari("search", "report.pdf", "--profile", "ben").stdout
    assert "[file report.pdf, 1.2 MB]" in found, found

    # The live chat shows what arrives while it runs.
    tui = Interactive(dari.home, "ann", "--profile", "ben")  # type: ignore[attr-defined]
    try:
        tui.expect(lambda ln: ln.startswith("== Ann"))
        tui.expect(lambda ln: "Ann: [voice 0:07]" in ln)
        dari("sticker", "send", "ben", "2", "--profile", "ann")
        tui.expect(lambda ln: bool(re.search(r"Ann: \[sticker \S+\]", ln)))
        dari(*send, str(report), "--caption", "final", "--profile", "ann")
        tui.expect(lambda ln: "Ann: [file report.pdf, 1.2 MB] final" in ln)
        tui.send("/quit")
        assert tui.proc.wait(20) == 0
    finally:
        if tui.proc.poll() is None:
            tui.proc.kill()
            tui.proc.wait()


def test_labels_for_every_message_kind() -> None:
    assert attachment_label("video", {"duration_ms": 12_400, "width": 1280, "height": 720, "size": 3_565_158}) \
        == "[video 0:12 1280×720, 3.4 MB]"
    assert attachment_label("voice", {"duration_ms": 3_725_000}) == "[voice 1:02:05]"
    assert attachment_label("file", {"name": "a\x1b[2Jb.txt", "size": 10}) == "[file a\ufffd[2Jb.txt, 10 B]"
    assert attachment_label("sticker", {"sticker_id": 4}) == "[sticker #4]"
    assert attachment_label("image", None) == "[photo]"
    assert attachment_label("poll", None) == "[poll]"            # a kind this CLI does not know yet
    assert attachment_label("text", None) == "" and attachment_label("system", None) == ""
    assert summary({"kind": "image", "text": "", "attachment": {"width": 2, "height": 3}}) == "[photo 2×3]"
    assert summary({"kind": "file", "text": "x", "unsent": True}) == "(unsent)"
