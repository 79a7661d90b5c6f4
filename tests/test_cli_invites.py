"""`dari friend invite` / `dari friend add LINK|CODE`, `dari chat directory`, `open-settings`,
`open-link` and `open-join LINK`, as real `dari` subprocesses against a real `dari serve`."""

from __future__ import annotations

import re

from tests.conftest import ServerProcess
from tests.test_cli import Run, dari, js, signup

__all__ = ["dari"]


def test_friend_invite_link_qr_and_add_by_link_or_code(dari: Run, server: ServerProcess) -> None:
    signup(dari, server, "a", "ahn", "Ahn")
    signup(dari, server, "b", "baek", "Baek")
    signup(dari, server, "c", "choi", "Choi")
    out = dari("friend", "invite", "--profile", "a").stdout
    m = re.search(rf"{re.escape(server.url)}/#/add/([A-Za-z0-9_-]{{12}})", out)
    assert m, out
    link, code = m.group(0), m.group(1)
    assert "▀" in out or "▄" in out or "█" in out       # the QR code, drawn in the terminal
    assert js(dari("friend", "invite", "--profile", "a", "--json"))["link"] == link   # stable

    added = dari("friend", "add", link, "--profile", "b").stdout
    assert "added Ahn (@ahn)" in added
    assert "added Ahn (@ahn)" in dari("friend", "add", code, "--profile", "c").stdout
    for profile in ("b", "c"):
        assert "ahn" in [f["user"]["handle"] for f in js(dari("friend", "list", "--profile", profile, "--json"))]

    new = js(dari("friend", "invite", "--rotate", "--profile", "a", "--json"))
    assert new["code"] != code and new["link"].endswith("/#/add/" + new["code"])
    gone = dari("friend", "add", link, "--profile", "c", ok=False)
    assert gone.returncode != 0 and gone.stderr.startswith("error [not_found]: this invite link is not valid"), \
        gone.stderr
    assert "invite link is off" in dari("friend", "invite", "--revoke", "--profile", "a").stdout
    off = dari("friend", "add", new["link"], "--profile", "b", ok=False)
    assert off.stderr.startswith("error [not_found]:"), off.stderr
    wrong = dari("friend", "add", f"{server.url}/#/join/{code}", "--profile", "b", ok=False)
    assert wrong.stderr.startswith("error [invalid_params]:") and "not a friend invite" in wrong.stderr
    junk = dari("friend", "add", "Bad Code!", "--profile", "b", ok=False)
    assert junk.stderr.startswith("error [invalid_params]:"), junk.stderr
    assert js(dari("friend", "invite", "--profile", "a", "--json", "--no-qr"))["code"] not in (code, new["code"])


def test_chat_directory_listing_and_join_link(dari: Run, server: ServerProcess) -> None:
    signup(dari, server, "o", "owner", "Owner")
    signup(dari, server, "j", "joiner", "Joiner")
    room = js(dari("chat", "open-create", "부산 맛집 탐방", "--nickname", "먹보", "--listed", "--description",
                   "돼지국밥 좋아하는 사람", "--tags", "맛집", "busan", "--profile", "o", "--json"))
    assert room["listed"] and room["tags"] == ["맛집", "busan"]
    hidden = js(dari("chat", "open-create", "맛집 비밀 모임", "--nickname", "먹보", "--profile", "o", "--json"))

    out = dari("chat", "directory", "맛집", "--profile", "j").stdout
    assert "부산 맛집 탐방" in out and room["link_code"] in out and "1/" in out and "#busan" in out
    assert "비밀" not in out and hidden["link_code"] not in out
    page = js(dari("chat", "directory", "돼지국밥", "--profile", "j", "--json"))
    assert [c["link_code"] for c in page["chats"]] == [room["link_code"]]
    assert "no listed open chats match" in dari("chat", "directory", "없는말", "--profile", "j").stdout

    link_out = dari("chat", "open-link", str(room["chat_id"]), "--profile", "o").stdout
    link = f"{server.url}/#/join/{room['link_code']}"
    assert link in link_out and ("▀" in link_out or "█" in link_out)
    joined = js(dari("chat", "open-join", link, "--nickname", "국밥러", "--profile", "j", "--json"))
    assert joined["chat_id"] == room["chat_id"]
    assert js(dari("chat", "directory", "busan", "--profile", "j", "--json"))["chats"][0]["member_count"] == 2

    # The owner lists the hidden room; only the owner may; then unlists the first.
    refused = dari("chat", "open-settings", str(room["chat_id"]), "--unlisted", "--profile", "j", ok=False)
    assert refused.stderr.startswith("error [forbidden]:"), refused.stderr
    dari("chat", "open-settings", str(hidden["chat_id"]), "--listed", "--tags", "secret", "--profile", "o")
    dari("chat", "open-settings", str(room["chat_id"]), "--unlisted", "--profile", "o")
    codes = [c["link_code"] for c in js(dari("chat", "directory", "맛집", "--profile", "j", "--json"))["chats"]]
    assert codes == [hidden["link_code"]]

    long = dari("chat", "directory", "가" * 101, "--profile", "j", ok=False)
    assert long.stderr.startswith("error [invalid_params]:") and "100" in long.stderr, long.stderr
    words = dari("chat", "directory", *"abcdefghi", "--profile", "j", ok=False)
    assert words.stderr.startswith("error [invalid_params]: a directory search takes at most 8 words"), words.stderr
    bad_tag = dari("chat", "open-settings", str(hidden["chat_id"]), "--tags", "a,b", "--profile", "o", ok=False)
    assert bad_tag.stderr.startswith("error [invalid_params]:"), bad_tag.stderr
