"""End-to-end encryption from the command line: on by default, safety numbers, local search."""

from __future__ import annotations

import json
import re
import sqlite3

from conftest import ServerProcess
from dari.client.e2ee.codec import b64d, b64e
from test_cli import Run, dari, js, signup  # noqa: F401  (the `dari` fixture)
from test_e2ee_sdk import assert_absent


def test_cli_chats_are_encrypted_and_verify_numbers_match(dari: Run, server: ServerProcess) -> None:  # noqa: F811
    ann = signup(dari, server, "ann", "ann", "Ann")
    signup(dari, server, "ben", "ben", "Ben")
    dari("friend", "add", "ben", "--profile", "ann")
    chat = js(dari("chat", "open", "ben", "--profile", "ann", "--json"))
    assert chat["e2ee"] is True
    assert "end-to-end encrypted" in dari("chat", "info", str(chat["chat_id"]), "--profile", "ann").stdout
    secret = "퇴근 후에 비밀 장소에서 만나요"
    sent = js(dari("msg", "send", "ben", secret, "--profile", "ann", "--json"))
    assert sent["text"] == secret and sent["e2ee_status"] == "ok"
    history = dari("msg", "history", "ann", "--profile", "ben").stdout
    assert f"Ann: {secret}" in history, history
    hits = js(dari("search", "비밀", "--profile", "ben", "--json"))
    assert [h["seq"] for h in hits] == [sent["seq"]]
    group = js(dari("chat", "group", "create", "모임", "--with", "ben", "--profile", "ann", "--json"))
    assert group["e2ee"] is True
    plain = js(dari("chat", "group", "create", "open plan", "--with", "ben", "--plain", "--profile", "ann", "--json"))
    assert plain["e2ee"] is False
    assert_absent(server.data_dir, secret, "비밀 장소")

    a = js(dari("verify", "ben", "--profile", "ann", "--json"))
    b = js(dari("verify", "ann", "--profile", "ben", "--json"))
    assert a["safety_number"] == b["safety_number"] and not a["verified"]
    assert re.fullmatch(r"(\d{5} ){11}\d{5}", a["safety_number"])
    assert a["qr"] == b["qr"] and a["qr"].startswith(f"dari-verify:1:{ann['user']['user_id']}:")
    human = dari("verify", "ben", "--profile", "ann").stdout
    assert " ".join(a["safety_number"].split()[:4]).replace(" ", "  ") in human and "not verified" in human
    assert js(dari("verify", "ben", "--confirm", "--profile", "ann", "--json"))["verified"] is True
    assert js(dari("verify", "ben", "--profile", "ann", "--json"))["verified"] is True
    # A stored envelope changed on the server shows as undecryptable, with the reason.
    victim = js(dari("msg", "send", "ben", "이 메시지는 변조됩니다", "--profile", "ann", "--json"))
    env = dict(victim["e2ee"])
    raw = bytearray(b64d(env["ciphertext"]))
    raw[len(raw) // 2] ^= 0x01
    env["ciphertext"] = b64e(bytes(raw))
    db = sqlite3.connect(server.data_dir / "dari.db", timeout=10)
    with db:
        db.execute("UPDATE messages SET e2ee = ? WHERE chat_id = ? AND seq = ?",
                   (json.dumps(env), victim["chat_id"], victim["seq"]))
    db.close()
    shown = dari("msg", "history", "ann", "--profile", "ben").stdout
    assert f"#{victim['seq']}" in shown and "🔒 This message could not be decrypted (tampered)" in shown, shown
    assert "변조됩니다" not in shown
    # A password login on another device does not make a new master key: it waits for Ann's device.
    login = dari("account", "login", "ann", "--server", server.url, "--profile", "ann-tablet", "--json")
    tablet = js(login)["device_id"]
    assert f"dari device share-keys {tablet}" in login.stderr and "reset-keys" in login.stderr, login.stderr
    refused = dari("msg", "send", "ben", "태블릿 비밀", "--profile", "ann-tablet", ok=False)
    assert refused.returncode == 1 and "waiting for your other device to share" in refused.stderr, refused.stderr
    assert_absent(server.data_dir, "태블릿 비밀")
    assert js(dari("status", "--profile", "ann-tablet", "--json"))["e2ee"] == "waiting_for_approval"
    assert js(dari("verify", "ann", "--profile", "ben", "--json"))["changed"] is False
    asked = js(dari("device", "requests", "--profile", "ann", "--json"))
    assert [r["device_id"] for r in asked] == [tablet]
    # Nothing is shared before Ann says so; then the tablet reads the history and sends.
    shared = dari("device", "share-keys", str(tablet), "--profile", "ann")
    assert "shared with device" in shared.stdout, shared.stdout + shared.stderr
    assert f"Ann: {secret}" in dari("msg", "history", "ben", "--profile", "ann-tablet").stdout
    assert js(dari("msg", "send", "ben", "태블릿에서 안녕", "--profile", "ann-tablet", "--json"))["e2ee_status"] == "ok"
    assert "Ann: 태블릿에서 안녕" in dari("msg", "history", "ann", "--profile", "ben").stdout
    assert js(dari("status", "--profile", "ann-tablet", "--json"))["e2ee"] == "ready"
    # With no device left, reset-keys makes a new master key: it warns, and Ben sees the change.
    assert "--yes" in dari("account", "reset-keys", "--profile", "ann-tablet", ok=False).stderr
    reset = dari("account", "reset-keys", "--yes", "--profile", "ann-tablet")
    assert "security code changed" in reset.stderr, reset.stderr
    changed = js(dari("verify", "ann", "--profile", "ben", "--json"))
    assert changed["changed"] is True and changed["verified"] is False
    assert changed["safety_number"] != b["safety_number"]
    assert "CHANGED" in dari("verify", "ann", "--profile", "ben").stdout
    # Ann's first device is told instead of failing silently.
    told = dari("device", "list", "--profile", "ann")
    assert "your encryption keys were reset on another of your devices" in told.stderr, told.stderr
    # Logging out ends the device: its keys and its index of decrypted messages leave the disk too.
    home = dari.home / "ben"  # type: ignore[attr-defined]
    assert list(home.glob("crypto-*.db"))
    dari("account", "logout", "--profile", "ben")
    assert not list(home.glob("crypto-*"))
