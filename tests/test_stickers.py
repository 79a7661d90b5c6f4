"""Sticker packs: the default pack, install/remove, recent, sticker messages, and import validation
(limits, zip bombs, path traversal) through the SDK and `dari admin stickers import`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dari.client import Client
from dari.client.media import download, upload
from dari.protocol.errors import DariError
from dari.services import sticker_pack
from tests.conftest import PASSWORD


def png(size: int = 128, colour: tuple[int, int, int, int] = (255, 0, 0, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def apng(frames: int = 3) -> bytes:
    imgs = [Image.new("RGBA", (96, 96), (i * 60, 0, 0, 255)) for i in range(frames)]
    out = io.BytesIO()
    imgs[0].save(out, format="PNG", save_all=True, append_images=imgs[1:], duration=100, loop=0)
    return out.getvalue()


def manifest(slug: str, files: list[str]) -> bytes:
    return json.dumps({"slug": slug, "title": "Test pack", "author": "tests",
                       "stickers": [{"file": f, "emoji": "🙂"} for f in files]}).encode()


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


async def test_default_pack_send_and_recent(make_user: Any) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    packs = await alice.call("sticker.packs")
    default = next(p for p in packs if p["slug"] == "dari-bridge")
    assert default["installed"] and default["is_default"] and default["animated"]
    installed = await alice.call("sticker.installed")
    stickers = installed[0]["stickers"]
    assert len(stickers) == 16 and any(s["animated"] for s in stickers) and all(s["name"] for s in stickers)
    chat = await alice.call("chat.create_group", title="s", member_ids=[bob.user["user_id"]])  # type: ignore[index]
    sticker = stickers[1]
    msg = await alice.call("message.send_sticker", chat_id=chat["chat_id"], client_id="s1",
                           sticker_id=sticker["sticker_id"])
    again = await alice.call("message.send_sticker", chat_id=chat["chat_id"], client_id="s1",
                             sticker_id=sticker["sticker_id"])
    assert msg["kind"] == "sticker" and msg["attachment"]["sticker_id"] == sticker["sticker_id"]
    assert again["seq"] == msg["seq"]
    assert [s["sticker_id"] for s in await alice.call("sticker.recent")] == [sticker["sticker_id"]]
    # Anyone logged in can fetch sticker images (they are not private).
    data = await download(bob, sticker["blob_id"])
    assert Image.open(io.BytesIO(data)).size == (256, 256)
    # Remove the pack: it leaves the picker and cannot be sent from; install brings it back.
    await alice.call("sticker.remove", pack_id=default["pack_id"])
    assert await alice.call("sticker.installed") == []
    with pytest.raises(DariError) as e:
        await alice.call("message.send_sticker", chat_id=chat["chat_id"], client_id="s2",
                         sticker_id=sticker["sticker_id"])
    assert e.value.code == "forbidden"
    await alice.call("sticker.install", pack_id=default["pack_id"])
    assert len(await alice.call("sticker.installed")) == 1
    with pytest.raises(DariError) as e:
        await alice.call("sticker.install", pack_id=999999)
    assert e.value.code == "not_found"


def test_validation_rejects_bad_packs(tmp_path: Path) -> None:
    good = {"manifest.json": manifest("ok-pack", ["a.png", "b.png"]), "a.png": png(), "b.png": apng()}
    pack = sticker_pack.validate(sticker_pack.read_zip(zip_of(good)))
    assert [s.animated for s in pack.stickers] == [False, True]
    # A zipped folder ("pack/manifest.json") is accepted as well.
    assert sticker_pack.validate(sticker_pack.read_zip(zip_of({f"pack/{k}": v for k, v in good.items()})))

    def rejected(files: dict[str, bytes], needle: str) -> None:
        with pytest.raises(sticker_pack.PackError) as e:
            sticker_pack.validate(sticker_pack.read_zip(zip_of(files)))
        assert needle in e.value.message, e.value.message

    rejected({"a.png": png()}, "manifest.json is missing")
    rejected({**good, "manifest.json": b"{not json"}, "manifest.json")
    rejected({**good, "a.png": png(1024)}, "1024x1024")
    rejected({**good, "a.png": png(8)}, "8x8")
    rejected({**good, "a.png": b"\x89PNG\r\n\x1a\n" + os.urandom(300)}, "corrupt image")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64)).save(jpeg, format="JPEG")
    rejected({**good, "a.png": jpeg.getvalue()}, "JPEG is not allowed")
    rejected({**good, "manifest.json": manifest("ok-pack", ["a.png", "missing.png"])}, "missing.png")
    rejected({**good, "manifest.json": manifest("ok-pack", [f"{i}.png" for i in range(41)])}, "1-40")
    rejected({**good, "manifest.json": manifest("Bad Slug!", ["a.png"])}, "slug")
    # Zip bombs: a highly compressible entry, and more entries than allowed.
    rejected({**good, "pad.bin": bytes(5 << 20)}, "ratio")
    rejected({**good, **{f"x{i}.txt": b"x" for i in range(120)}}, "files in the archive")
    # Path traversal and absolute paths.
    rejected({**good, "../evil.png": png()}, "leaves the pack")
    rejected({**good, "/etc/evil.png": png()}, "absolute")
    # A symlink entry.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(sticker_pack.PackError) as e:
        sticker_pack.read_zip(out.getvalue())
    assert "symlink" in e.value.message
    with pytest.raises(sticker_pack.PackError):
        sticker_pack.read_zip(b"not a zip at all")


def test_lying_zip_header_is_capped() -> None:
    """An entry whose header claims a small size but inflates to more is cut off while reading."""
    big = bytes(3 << 20)
    data = zip_of({"manifest.json": manifest("liar", ["a.png"]), "a.png": big})
    # Rewrite the declared sizes of a.png (local header and central directory) to 1000 bytes.
    buf = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := buf.find(sig, pos)) != -1:
            name_len = int.from_bytes(buf[pos + (26 if sig == b"PK\x03\x04" else 28):][:2], "little")
            start = pos + (30 if sig == b"PK\x03\x04" else 46)
            if bytes(buf[start:start + name_len]) == b"a.png":
                buf[pos + off:pos + off + 4] = (1000).to_bytes(4, "little")
            pos += 4
    with pytest.raises(sticker_pack.PackError):
        sticker_pack.read_zip(bytes(buf))


def test_cli_admin_import(tmp_path: Path, server_factory: Any) -> None:
    srv = server_factory()
    srv.stop()
    folder = tmp_path / "mypack"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(manifest("cli-pack", ["one.png"]))
    (folder / "one.png").write_bytes(png(200))
    env = {**os.environ}
    cmd = [sys.executable, "-m", "dari.cli.main", "admin", "stickers", "import", str(folder), "--data-dir",
           str(srv.data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cli-pack" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "already" in again.stderr
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_of({"manifest.json": manifest("bomb", ["a.png"]), "a.png": png(), "z": bytes(20 << 20)}))
    bad = subprocess.run([*cmd[:6], str(bomb), *cmd[7:]], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "rejected" in bad.stderr and "Traceback" not in bad.stderr
    listed = subprocess.run([*cmd[:5], "list", *cmd[7:]], capture_output=True, text=True, env=env, timeout=60)
    assert "cli-pack" in listed.stdout and "dari-bridge" in listed.stdout


async def test_admin_import_over_the_protocol(server_factory: Any) -> None:
    handle = f"op_{uuid.uuid4().hex[:6]}"
    srv = server_factory(extra_env={"DARI_ADMIN_HANDLES": handle})
    op, user = Client(srv.url), Client(srv.url)
    await op.signup(handle, "Op", PASSWORD)
    await user.signup(f"u_{uuid.uuid4().hex[:6]}", "U", PASSWORD)
    try:
        archive = zip_of({"manifest.json": manifest("proto-pack", ["a.png"]), "a.png": png()})
        blob = await upload(op, archive, name="pack.zip")
        pack = await op.call("admin.sticker_import", blob_id=blob["blob_id"])
        assert pack["slug"] == "proto-pack" and not pack["installed"] and len(pack["stickers"]) == 1
        ublob = await upload(user, archive + b" ", name="pack.zip")
        with pytest.raises(DariError) as e:
            await user.call("admin.sticker_import", blob_id=ublob["blob_id"])
        assert e.value.code == "forbidden"
        # A user installs it, then it is in their picker.
        await user.call("sticker.install", pack_id=pack["pack_id"])
        assert {p["slug"] for p in await user.call("sticker.installed")} == {"dari-bridge", "proto-pack"}
    finally:
        await op.close()
        await user.close()
