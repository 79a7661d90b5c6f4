"""Media through a real server: uploads (chunked, HTTP, resumed), type detection, EXIF stripping,
thumbnails, authorization, size caps, dedup, expiry, and media messages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from dari.client import Client
from dari.client.media import download, send_chunks, send_file, upload
from dari.protocol.errors import DariError
from dari.services.mediaproc import mp4_info
from tests.conftest import PASSWORD, ServerProcess

GPS_IFD = 0x8825


def jpeg_with_gps(size: tuple[int, int] = (640, 480)) -> bytes:
    img = Image.new("RGB", size, (200, 80, 40))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc."                 # Make
    exif[0x0112] = 6                             # orientation: rotate 90
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 41.0)})
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


async def group(owner: Client, *others: Client) -> int:
    ids = [o.user["user_id"] for o in others]   # type: ignore[index]
    chat = await owner.call("chat.create_group", title="photos", member_ids=ids)
    return int(chat["chat_id"])


async def get(c: Client, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    h = {"Authorization": f"Bearer {c.token}", **(headers or {})}
    async with aiohttp.ClientSession() as http, http.get(c.url + path, headers=h) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_photo_exif_gps_stripped_and_thumbnail(make_user: Any, server: ServerProcess) -> None:
    alice = await make_user("alice")
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(GPS_IFD)
    blob = await upload(alice, original, name="me.jpg")
    assert blob["type"] == "image/jpeg" and blob["kind"] == "image"
    # The orientation tag was applied: the stored picture stands upright, 480 wide.
    assert (blob["width"], blob["height"]) == (480, 640)
    assert blob["thumbnail_id"]
    stored = await download(alice, blob["blob_id"])
    img = Image.open(io.BytesIO(stored))
    exif = img.getexif()
    assert not exif.get_ifd(GPS_IFD) and GPS_IFD not in exif and 0x010F not in exif
    assert b"SpyCam" not in stored and b"Exif" not in stored
    # And on disk too, not only in what the server chose to send.
    on_disk = next(p for p in (server.data_dir / "blobs").rglob(blob["blob_id"]))
    assert b"SpyCam" not in on_disk.read_bytes()
    thumb = await download(alice, blob["blob_id"], thumb=True)
    t = Image.open(io.BytesIO(thumb))
    assert t.format == "WEBP" and max(t.size) <= 320


async def test_photo_message_members_only(make_user: Any) -> None:
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    chat_id = await group(alice, bob)
    msg = await send_file(alice, chat_id, jpeg_with_gps((200, 100)), caption="our trip", name="trip.jpg")
    assert msg["kind"] == "image" and msg["text"] == "our trip"
    att = msg["attachment"]
    assert att["width"] == 100 and att["height"] == 200 and att["type"] == "image/jpeg" and att["name"] == "trip.jpg"
    ev = await bob.next_event("message.new")
    while ev.payload["kind"] != "image":
        ev = await bob.next_event("message.new")
    assert ev.payload["attachment"]["blob_id"] == att["blob_id"]
    history = await bob.call("message.history", chat_id=chat_id)
    assert history["messages"][-1]["attachment"]["blob_id"] == att["blob_id"]
    assert (await get(bob, f"/media/{att['blob_id']}"))[0] == 200
    assert (await get(bob, f"/media/{att['blob_id']}/thumb"))[0] == 200
    # Carol is not in the chat: forbidden over HTTP and over the protocol, thumbnail included (G9).
    for path in (f"/media/{att['blob_id']}", f"/media/{att['blob_id']}/thumb"):
        status, body, _ = await get(carol, path)
        assert status == 403 and b"forbidden" in body
    for method, extra in (("media.read", {}), ("media.info", {}), ("media.read", {"thumb": True})):
        with pytest.raises(DariError) as e:
            await carol.call(method, blob_id=att["blob_id"], **extra)
        assert e.value.code == "forbidden"
    # Nor can she post it somewhere she is a member.
    own = await group(carol, bob)
    with pytest.raises(DariError) as e:
        await carol.call("message.send_media", chat_id=own, client_id="x1", blob_id=att["blob_id"])
    assert e.value.code == "forbidden"
    # Without a token: unauthenticated.
    async with aiohttp.ClientSession() as http, http.get(f"{alice.url}/media/{att['blob_id']}") as resp:
        assert resp.status == 401


async def test_send_media_exactly_once_and_kinds(make_user: Any) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat_id = await group(alice, bob)
    blob = await upload(alice, b"just some notes\n" * 10, name="notes.png")
    # The name says PNG; the bytes say text: the server believes the bytes.
    assert blob["type"] == "text/plain" and blob["kind"] == "file"
    with pytest.raises(DariError) as e:
        await alice.call("message.send_media", chat_id=chat_id, client_id="c1", blob_id=blob["blob_id"], kind="image")
    assert e.value.code == "invalid_params" and "text/plain" in e.value.message
    first = await alice.call("message.send_media", chat_id=chat_id, client_id="c2", blob_id=blob["blob_id"],
                             name="notes.txt")
    again = await alice.call("message.send_media", chat_id=chat_id, client_id="c2", blob_id=blob["blob_id"],
                             name="notes.txt")
    assert first["kind"] == "file" and again["seq"] == first["seq"]
    history = await alice.call("message.history", chat_id=chat_id)
    assert [m["seq"] for m in history["messages"] if m["kind"] == "file"] == [first["seq"]]
    with pytest.raises(DariError) as e:
        await alice.call("message.send_media", chat_id=chat_id, client_id="c3", blob_id=blob["blob_id"], kind="voice")
    assert e.value.code == "invalid_params"


async def test_corrupt_image_is_a_clear_error(make_user: Any, server: ServerProcess) -> None:
    alice = await make_user("alice")
    good = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(good, format="PNG")
    truncated = good.getvalue()[:200]
    for bad in (truncated, b"\x89PNG\r\n\x1a\n" + os.urandom(500)):
        with pytest.raises(DariError) as e:
            await upload(alice, bad, name="broken.png")
        assert e.value.code == "invalid_params" and "corrupt image" in e.value.message
    assert not list((server.data_dir / "blobs").rglob("*.part"))


async def test_size_cap_and_bad_chunks(server_factory: Any) -> None:
    srv = server_factory(extra_env={"DARI_MEDIA_MAX_BYTES": "5000"})
    c = Client(srv.url)
    await c.signup(f"big_{uuid.uuid4().hex[:6]}", "Big", PASSWORD)
    try:
        with pytest.raises(DariError) as e:
            await c.call("media.upload_begin", size=5001, name="huge.bin")
        assert e.value.code == "limit_exceeded" and "5000" in e.value.message
        begin = await c.call("media.upload_begin", size=100, name="x.bin")
        uid = begin["upload_id"]
        with pytest.raises(DariError) as e:   # more than announced
            await c.call("media.upload_chunk", upload_id=uid, offset=0, data=base64.b64encode(b"x" * 101).decode())
        assert e.value.code == "limit_exceeded"
        with pytest.raises(DariError) as e:   # a gap
            await c.call("media.upload_chunk", upload_id=uid, offset=50, data=base64.b64encode(b"x").decode())
        assert e.value.code == "conflict" and e.value.details["offset"] == 0
        with pytest.raises(DariError) as e:
            await c.call("media.upload_chunk", upload_id=uid, offset=0, data="not base64!!")
        assert e.value.code == "invalid_params"
        with pytest.raises(DariError) as e:   # finishing early
            await c.call("media.upload_finish", upload_id=uid)
        assert e.value.code == "conflict"
        with pytest.raises(DariError) as e:
            await c.call("media.upload_status", upload_id="A" * 24)
        assert e.value.code == "not_found"
        with pytest.raises(DariError) as e:
            await c.call("media.info", blob_id="not-a-hash")
        assert e.value.code == "invalid_params"
    finally:
        await c.close()


async def test_resume_after_dropped_connection_and_server_restart(server_factory: Any) -> None:
    srv = server_factory()
    handle = f"res_{uuid.uuid4().hex[:6]}"
    c1 = Client(srv.url)
    await c1.signup(handle, "Res", PASSWORD)
    data = os.urandom(1_300_000)
    begin = await c1.call("media.upload_begin", size=len(data), name="big.bin")
    uid, chunk = begin["upload_id"], begin["chunk_size"]
    await c1.call("media.upload_chunk", upload_id=uid, offset=0, data=base64.b64encode(data[:chunk]).decode())
    token = c1.token
    await c1.close()                                  # the connection drops mid-upload
    srv.kill()                                        # ...and the server dies too
    srv.start()
    c2 = Client(srv.url, token=token)
    try:
        status = await c2.call("media.upload_status", upload_id=uid)
        assert status["offset"] == chunk and status["size"] == len(data)
        # Resending a chunk the server already has is harmless (it overwrites the same bytes).
        await send_chunks(c2, uid, data, status["offset"] - 10, chunk)
        blob = await c2.call("media.upload_finish", upload_id=uid)
        assert blob["blob_id"] == hashlib.sha256(data).hexdigest() and blob["size"] == len(data)
        assert await download(c2, blob["blob_id"], http=False) == data
    finally:
        await c2.close()


async def test_resume_when_the_link_drops_during_send(make_user: Any) -> None:
    alice = await make_user("alice")
    data = os.urandom(1_100_000)
    begin = await alice.call("media.upload_begin", size=len(data), name="x.bin")
    dropped = False

    def progress(done: int, total: int) -> None:
        nonlocal dropped
        if not dropped:
            dropped = True
            asyncio.get_running_loop().create_task(alice._link.close())  # type: ignore[union-attr]

    await send_chunks(alice, begin["upload_id"], data, 0, begin["chunk_size"], progress=progress)
    blob = await alice.call("media.upload_finish", upload_id=begin["upload_id"])
    assert dropped and blob["blob_id"] == hashlib.sha256(data).hexdigest()


async def test_dedup_http_upload_and_range(make_user: Any, server: ServerProcess) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    data = os.urandom(300_000)
    a = await upload(alice, data, name="a.bin", http=True)
    b = await upload(bob, data, name="b.bin")
    assert a["blob_id"] == b["blob_id"]
    files = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file() and p.name == a["blob_id"]]
    assert len(files) == 1
    status, body, headers = await get(alice, f"/media/{a['blob_id']}", {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20]
    assert headers["Content-Disposition"] == "attachment"   # never rendered inline as a page
    # Bob uploaded the same bytes: he can read them; a stranger still cannot.
    assert await download(bob, a["blob_id"]) == data
    carol = await make_user("carol")
    assert (await get(carol, f"/media/{a['blob_id']}"))[0] == 403


async def test_expiry_pruner(server_factory: Any) -> None:
    srv = server_factory(extra_env={"DARI_MEDIA_EXPIRY_KINDS": "file:0.00002", "DARI_MEDIA_PRUNE_INTERVAL_S": "0.5"})
    c = Client(srv.url)
    await c.signup(f"exp_{uuid.uuid4().hex[:6]}", "Exp", PASSWORD)
    try:
        blob = await upload(c, b"short-lived " * 100)
        assert blob["expires_at"] and blob["expires_at"] - time.time() * 1000 < 3000
        path = next((srv.data_dir / "blobs").rglob(blob["blob_id"]))
        for _ in range(50):
            if not path.exists():
                break
            await asyncio.sleep(0.2)
        assert not path.exists()
        with pytest.raises(DariError) as e:
            await c.call("media.info", blob_id=blob["blob_id"])
        assert e.value.code == "forbidden" and "expire" in e.value.message
        photo = await upload(c, jpeg_with_gps((50, 50)))   # images keep the default: no expiry
        assert photo["expires_at"] is None
    finally:
        await c.close()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_mp4_duration_and_size(tmp_path: Path) -> None:
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">III", 0, 0, 1000) + struct.pack(">I", 12_345) + bytes(80))
    tkhd = _box(b"tkhd", bytes(4) + bytes(72) + struct.pack(">II", 1280 << 16, 720 << 16))
    moov = _box(b"moov", mvhd + _box(b"trak", tkhd))
    path = tmp_path / "v.mp4"
    path.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"mdat", bytes(100)) + moov)
    assert mp4_info(str(path)) == (12_345, 1280, 720)


async def test_video_message(make_user: Any, tmp_path: Path) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    chat_id = await group(alice, bob)
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">III", 0, 0, 600) + struct.pack(">I", 1800) + bytes(80))
    tkhd = _box(b"tkhd", bytes(4) + bytes(72) + struct.pack(">II", 640 << 16, 360 << 16))
    video = _box(b"ftyp", b"isom" + bytes(4)) + _box(b"moov", mvhd + _box(b"trak", tkhd))
    msg = await send_file(alice, chat_id, video, name="clip.mp4")
    assert msg["kind"] == "video"
    assert msg["attachment"]["duration_ms"] == 3000 and msg["attachment"]["width"] == 640


def test_cli_send_file_and_save(tmp_path: Path, server: ServerProcess) -> None:
    import json
    import subprocess
    import sys

    env = {**os.environ, "DARI_HOME": str(tmp_path / "home"), "DARI_PASSWORD": PASSWORD, "COLUMNS": "200"}

    def dari(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "dari.cli.main", *args], capture_output=True, text=True,
                              env=env, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 0 or not ok, proc.stderr
        return proc

    for who in ("ann", "ben"):
        dari("account", "signup", f"{who}_{uuid.uuid4().hex[:5]}", "--server", server.url, "--profile", who)
    ben = json.loads(dari("account", "me", "--profile", "ben", "--json").stdout)
    dari("friend", "add", ben["handle"], "--profile", "ann")
    photo = tmp_path / "beach.jpg"
    photo.write_bytes(jpeg_with_gps((120, 90)))
    sent = json.loads(dari("msg", "send-file", ben["handle"], str(photo), "--caption", "바다!", "--profile", "ann",
                           "--json").stdout)
    assert sent["kind"] == "image" and sent["text"] == "바다!"
    blob_id = sent["attachment"]["blob_id"]
    out = tmp_path / "saved.jpg"
    dari("media", "save", blob_id, str(out), "--profile", "ben")
    saved = Image.open(out)
    assert saved.size == (90, 120) and not saved.getexif().get_ifd(GPS_IFD)   # turned upright
    # Over the session only (as through a relay), into a directory, thumbnail.
    dari("media", "save", blob_id, str(tmp_path), "--thumb", "--profile", "ben")
    assert (tmp_path / (blob_id[:16] + ".webp")).exists()
    dari("msg", "send-file", ben["handle"], str(tmp_path / "missing.bin"), "--profile", "ann", ok=False)
    dari("sticker", "send", ben["handle"], "1", "--profile", "ann")
