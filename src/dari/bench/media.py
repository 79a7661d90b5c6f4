"""`dari bench media`: upload and download MB/s and thumbnails/s, with an integrity check.

Phases, each a bounded loop over a fixed set of files, timed and metered on its own:

- http-upload: media.upload_begin (REST), the bytes as raw `POST /media/upload` pieces (8 MiB, as
  the SDK sends them), media.upload_finish; several uploads at once. Random bytes: stored as sent.
- ws-upload: the same over one authenticated WebSocket per uploader, base64 `media.upload_chunk`
  frames of the server's chunk size, one in flight per upload (the SDK's route when only the
  session gets through).
- http-download: `GET /media/{id}` of every uploaded file, whole, several rounds.
- http-range-download: the same files in `Range` pieces, assembled and hashed.
- thumbnails: distinct camera JPEGs and screenshot PNGs (bench/photos.py), each uploaded and
  finished: the server decodes it, applies the EXIF orientation, re-encodes it without metadata
  and makes a WebP thumbnail. Images/s counts finished uploads; afterwards every thumbnail and
  stored image is fetched and checked (WebP within 320 px, no EXIF/GPS or text chunk left).

Integrity: every download is hashed and compared with the sha256 of what was uploaded (which is
also the blob id the server must answer). MB are 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import msgspec

from dari.bench.photos import GPS_IFD, camera_jpeg, screenshot_png
from dari.bench.proc import LocalServer, ProcStat, raise_nofile
from dari.bench.track import Meter, percentile_ms
from dari.bench.wire import Conn, User, rest, signup_many

MB = 1_000_000
HTTP_PIECE = 8 << 20   # the SDK's piece size for plain-HTTP uploads (client/media.py)


@dataclass
class Plan:
    http_files: list[int]
    http_conc: int
    ws_files: list[int]
    ws_conc: int
    download_rounds: int
    download_conc: int
    range_bytes: int
    range_conc: int
    jpeg: tuple[int, int]
    jpegs: int
    png: tuple[int, int]
    pngs: int
    thumb_conc: int


FULL = Plan(http_files=[s * MB for s in (8, 16, 24, 32) * 4], http_conc=4,
            ws_files=[s * MB for s in (8, 16, 24, 32) * 2], ws_conc=4, download_rounds=5, download_conc=4,
            range_bytes=1 << 20, range_conc=8, jpeg=(4032, 3024), jpegs=32, png=(1080, 2400), pngs=16, thumb_conc=4)
QUICK = Plan(http_files=[s * MB for s in (2, 4, 6, 8)], http_conc=2, ws_files=[s * MB for s in (2, 4)], ws_conc=2,
             download_rounds=2, download_conc=2, range_bytes=1 << 20, range_conc=4, jpeg=(1024, 768), jpegs=8,
             png=(540, 1200), pngs=4, thumb_conc=2)


@dataclass
class Blob:
    data: bytes
    sha: str
    blob_id: str = ""


@dataclass
class Phase:
    """Counters of one phase: bytes or items done, per-item seconds, errors (a few kept as samples)."""

    name: str
    items: int = 0
    nbytes: int = 0
    times: list[float] = field(default_factory=list)
    finish: list[float] = field(default_factory=list)
    errors: int = 0
    mismatches: int = 0
    samples: list[str] = field(default_factory=list)

    def error(self, exc: BaseException | str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")


def _check(body: dict[str, Any]) -> Any:
    if body.get("error"):
        raise RuntimeError(f"{body['error'].get('code')}: {body['error'].get('message')}")
    return body["result"]


class Bench:
    def __init__(self, http: aiohttp.ClientSession, base: str, server: ProcStat | None) -> None:
        self.http = http
        self.base = base
        self.server = server
        self.results: dict[str, dict[str, Any]] = {}
        self.chunk_bytes = 0

    async def timed(self, phase: Phase, jobs: list[Callable[[], Awaitable[None]]], conc: int,
                    extra: Callable[[float], dict[str, Any]]) -> None:
        """Run jobs with `conc` at once under a Meter; record the phase's figures."""
        sem = asyncio.Semaphore(conc)

        async def one(job: Callable[[], Awaitable[None]]) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    await job()
                except Exception as exc:
                    phase.error(exc)
                    return
                phase.times.append(time.perf_counter() - t0)

        meter = Meter(self.server)
        meter.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(j) for j in jobs))
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {"seconds": round(wall, 2), "concurrency": conc, "items": phase.items,
                               "mb": round(phase.nbytes / MB, 1), "mb_per_s": round(phase.nbytes / MB / wall, 1),
                               "item_p50_ms": percentile_ms(phase.times, 50),
                               "item_p99_ms": percentile_ms(phase.times, 99)}
        out.update(extra(wall))
        out.update(meter.stop())
        out.update(errors=phase.errors, mismatches=phase.mismatches, error_samples=phase.samples)
        self.results[phase.name] = out

    def _auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {user.token}"}

    # -- uploads ------------------------------------------------------------------------------------
    async def http_upload(self, user: User, blob: Blob, phase: Phase, name: str = "bench.bin") -> dict[str, Any]:
        begin = await rest(self.http, self.base, "media.upload_begin",
                           {"size": len(blob.data), "name": name}, user.token)
        view, offset = memoryview(blob.data), 0
        while offset < len(blob.data):
            async with self.http.post(f"{self.base}/media/upload", data=view[offset:offset + HTTP_PIECE],
                                      params={"upload_id": begin["upload_id"], "offset": str(offset)},
                                      headers=self._auth(user)) as resp:
                offset = int(_check(msgspec.json.decode(await resp.read()))["offset"])
        t0 = time.perf_counter()
        res: dict[str, Any] = await rest(self.http, self.base, "media.upload_finish",
                                         {"upload_id": begin["upload_id"]}, user.token)
        phase.finish.append(time.perf_counter() - t0)
        return res

    async def ws_upload(self, conn: Conn, blob: Blob, phase: Phase) -> dict[str, Any]:
        begin = msgspec.json.decode(await conn.call("media.upload_begin", {"size": len(blob.data), "name": "ws.bin"}))
        chunk, offset = int(begin["chunk_size"]), 0
        self.chunk_bytes = chunk
        while offset < len(blob.data):
            piece = base64.b64encode(blob.data[offset:offset + chunk]).decode()
            res = msgspec.json.decode(await conn.call("media.upload_chunk", {
                "upload_id": begin["upload_id"], "offset": offset, "data": piece}))
            offset = int(res["offset"])
        t0 = time.perf_counter()
        done: dict[str, Any] = msgspec.json.decode(await conn.call("media.upload_finish",
                                                                   {"upload_id": begin["upload_id"]}))
        phase.finish.append(time.perf_counter() - t0)
        return done

    def _stored(self, phase: Phase, blob: Blob, res: dict[str, Any]) -> None:
        blob.blob_id = str(res["blob_id"])
        if blob.blob_id != blob.sha or int(res["size"]) != len(blob.data):
            phase.mismatches += 1
            phase.error(f"stored {res['blob_id'][:12]}/{res['size']} for {blob.sha[:12]}/{len(blob.data)}")
        phase.items += 1
        phase.nbytes += len(blob.data)

    # -- downloads ----------------------------------------------------------------------------------
    async def get(self, user: User, blob_id: str, suffix: str = "", rng: tuple[int, int] | None = None) -> bytes:
        headers = self._auth(user)
        if rng is not None:
            headers["Range"] = f"bytes={rng[0]}-{rng[1] - 1}"
        async with self.http.get(f"{self.base}/media/{blob_id}{suffix}", headers=headers) as resp:
            data = await resp.read()
            want = 200 if rng is None else 206
            if resp.status != want:
                raise RuntimeError(f"HTTP {resp.status} (wanted {want}): {data[:200]!r}")
        return data

    async def download(self, user: User, blob: Blob, phase: Phase) -> None:
        data = await self.get(user, blob.blob_id)
        if hashlib.sha256(data).hexdigest() != blob.sha:
            phase.mismatches += 1
            phase.error(f"download of {blob.sha[:12]} differs ({len(data)} bytes)")
        phase.items += 1
        phase.nbytes += len(data)

    async def range_download(self, user: User, blob: Blob, phase: Phase, piece: int, conc: int) -> None:
        buf = bytearray(len(blob.data))
        sem = asyncio.Semaphore(conc)

        async def part(start: int) -> None:
            end = min(start + piece, len(buf))
            async with sem:
                data = await self.get(user, blob.blob_id, rng=(start, end))
            if len(data) != end - start:
                raise RuntimeError(f"range {start}-{end}: {len(data)} bytes")
            buf[start:end] = data
            phase.nbytes += len(data)

        await asyncio.gather(*(part(s) for s in range(0, len(buf), piece)))
        phase.items += 1
        if hashlib.sha256(buf).hexdigest() != blob.sha:
            phase.mismatches += 1
            phase.error(f"ranged download of {blob.sha[:12]} differs")


def _photos(plan: Plan, salt: int) -> list[tuple[str, bytes]]:
    out = [("jpeg", camera_jpeg(salt + i, *plan.jpeg, rotated=i % 2 == 0)) for i in range(plan.jpegs)]
    out += [("png", screenshot_png(salt + 10_000 + i, *plan.png)) for i in range(plan.pngs)]
    return out


def _clean(kind: str, stored: bytes, thumb: bytes) -> str | None:
    """Why a processed image is wrong, or None: thumbnail a WebP within 320 px, metadata gone."""
    from PIL import Image

    t = Image.open(io.BytesIO(thumb))
    if t.format != "WEBP" or max(t.size) > 320:
        return f"thumbnail is {t.format} {t.size}"
    img = Image.open(io.BytesIO(stored))
    exif = img.getexif()
    if len(exif) or exif.get_ifd(GPS_IFD):
        return f"stored {kind} still has EXIF {sorted(exif)}"
    if kind == "png" and "Comment" in img.info:
        return "stored png still has its text chunk"
    return None


async def run_media(quick: bool, server_url: str | None = None, server_pid: int | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    say = log or (lambda _text: None)
    raise_nofile()
    server: LocalServer | None = None
    stat: ProcStat | None = None
    if server_url is None:
        server = LocalServer()
        await asyncio.to_thread(server.start)
        base, stat = server.url, server.stat
    else:
        base, stat = server_url.rstrip("/"), (ProcStat(server_pid) if server_pid else None)
    try:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
            return await _phases(Bench(http, base, stat), plan, say)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _phases(b: Bench, plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    nusers = max(plan.http_conc, plan.ws_conc, plan.thumb_conc)
    users = await signup_many(b.http, b.base, nusers, f"m{secrets.token_hex(3)}_")

    def blobs(sizes: list[int]) -> list[Blob]:
        out = []
        for s in sizes:
            data = os.urandom(s)
            out.append(Blob(data, hashlib.sha256(data).hexdigest()))
        return out

    # http-upload
    files = blobs(plan.http_files)
    say(f"http-upload: {len(files)} files, {sum(plan.http_files) / MB:.0f} MB, {plan.http_conc} at once")
    up = Phase("http-upload")

    def http_job(i: int, blob: Blob) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            b._stored(up, blob, await b.http_upload(users[i % nusers], blob, up))
        return job

    await b.timed(up, [http_job(i, f) for i, f in enumerate(files)], plan.http_conc,
                  lambda wall: {"finish_p50_ms": percentile_ms(up.finish, 50),
                                "finish_p99_ms": percentile_ms(up.finish, 99)})

    # ws-upload: one session per uploader, its files one after another
    ws_files = blobs(plan.ws_files)
    say(f"ws-upload: {len(ws_files)} files, {sum(plan.ws_files) / MB:.0f} MB, {plan.ws_conc} sessions")
    ws_url = b.base.replace("http", "ws", 1) + "/ws"
    conns = [Conn(i, users[i % nusers]) for i in range(plan.ws_conc)]
    await asyncio.gather(*(c.open(b.http, ws_url) for c in conns))
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    wsp = Phase("ws-upload")

    def ws_job(blob: Blob) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            conn = await idle.get()   # one upload at a time per session
            try:
                b._stored(wsp, blob, await b.ws_upload(conn, blob, wsp))
            finally:
                idle.put_nowait(conn)
        return job

    try:
        await b.timed(wsp, [ws_job(f) for f in ws_files], plan.ws_conc,
                      lambda wall: {"finish_p50_ms": percentile_ms(wsp.finish, 50),
                                    "finish_p99_ms": percentile_ms(wsp.finish, 99), "chunk_bytes": b.chunk_bytes})
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    stored = [f for f in files if f.blob_id]
    dl = Phase("http-download")
    say(f"http-download: {len(stored)} files x {plan.download_rounds} rounds, {plan.download_conc} at once")

    await b.timed(dl, [partial(b.download, users[i % nusers], f, dl)
                       for _ in range(plan.download_rounds) for i, f in enumerate(stored)],
                  plan.download_conc, lambda wall: {"rounds": plan.download_rounds})

    rg = Phase("http-range-download")
    say(f"http-range-download: {len(stored)} files in {plan.range_bytes >> 20} MiB ranges, {plan.range_conc} at once")

    requests = sum(-(-len(f.data) // plan.range_bytes) for f in stored)
    await b.timed(rg, [partial(b.range_download, users[i % nusers], f, rg, plan.range_bytes, plan.range_conc)
                       for i, f in enumerate(stored)], 1,
                  lambda wall: {"range_bytes": plan.range_bytes, "requests": requests, "concurrency": plan.range_conc,
                                "requests_per_s": round(requests / wall, 1)})

    # thumbnails
    say(f"thumbnails: making {plan.jpegs} JPEGs {plan.jpeg[0]}x{plan.jpeg[1]} and {plan.pngs} PNGs"
        f" {plan.png[0]}x{plan.png[1]}")
    photos = await asyncio.to_thread(_photos, plan, secrets.randbelow(1 << 30))
    # One image first, outside the measurement: the server's first image loads Pillow's codecs.
    warm = await asyncio.to_thread(camera_jpeg, secrets.randbelow(1 << 30) + (1 << 31), 64, 48, rotated=False)
    th = Phase("thumbnails")
    try:
        await b.http_upload(users[0], Blob(warm, hashlib.sha256(warm).hexdigest()), Phase("warm-up"))
    except Exception as exc:
        th.error(exc)
    done: list[tuple[str, User, dict[str, Any]]] = []

    def th_job(i: int, kind: str, data: bytes) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            blob, user = Blob(data, hashlib.sha256(data).hexdigest()), users[i % nusers]
            res = await b.http_upload(user, blob, th, name=f"p{i}.{kind}")
            if res.get("kind") != "image" or not res.get("thumbnail_id"):
                raise RuntimeError(f"{kind} came back as {res.get('type')} without a thumbnail")
            th.items += 1
            th.nbytes += len(data)
            done.append((kind, user, res))
        return job

    await b.timed(th, [th_job(i, k, d) for i, (k, d) in enumerate(photos)], plan.thumb_conc,
                  lambda wall: {"images_per_s": round(th.items / wall, 2), "jpegs": plan.jpegs, "pngs": plan.pngs,
                                "jpeg_px": f"{plan.jpeg[0]}x{plan.jpeg[1]}", "png_px": f"{plan.png[0]}x{plan.png[1]}",
                                "jpeg_avg_kb": _avg_kb(photos, "jpeg"), "png_avg_kb": _avg_kb(photos, "png"),
                                "finish_p50_ms": percentile_ms(th.finish, 50),
                                "finish_p99_ms": percentile_ms(th.finish, 99)})
    say("checking thumbnails and stripped metadata")
    for kind, user, res in done:
        try:
            why = _clean(kind, await b.get(user, res["blob_id"]), await b.get(user, res["blob_id"], "/thumb"))
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            th.mismatches += 1
            th.error(why)
    b.results["thumbnails"].update(mismatches=th.mismatches, errors=th.errors, error_samples=th.samples)

    phases = (up, wsp, dl, rg, th)
    checked = sum(p.items for p in phases)
    errors = sum(p.errors for p in phases)
    mismatches = sum(p.mismatches for p in phases)
    integrity = {"ok": errors == 0 and mismatches == 0 and checked > 0, "checked": checked,
                 "mismatches": mismatches, "errors": errors}
    report: dict[str, Any] = {"scenarios": b.results, "integrity": integrity}
    if b.server is not None:
        report["server_peak_rss_mb"] = round(b.server.peak_rss_kb() / 1024, 1)
    return report


def _avg_kb(photos: list[tuple[str, bytes]], kind: str) -> float | None:
    sizes = [len(d) for k, d in photos if k == kind]
    return round(sum(sizes) / len(sizes) / 1000, 1) if sizes else None


def main(args: argparse.Namespace) -> int:
    """`dari bench media`, called by bench/cli.py."""
    from dari.bench.machine import machine_info

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    def log(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    report = asyncio.run(run_media(args.quick, args.server, args.server_pid, log))
    report["machine"] = machine_info()
    report["options"] = {"quick": args.quick, "server": args.server or "local"}
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _table(report)
    return 0 if report["integrity"]["ok"] else 1


def _table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from dari.bench.cli import _fmt

    results = report["scenarios"]
    table = Table(title="dari bench media (MB = 10^6 bytes; CPU % of one core)")
    table.add_column("figure")
    for name in results:
        table.add_column(name, justify="right")
    for title, key in (("items", "items"), ("MB", "mb"), ("MB/s", "mb_per_s"), ("images/s", "images_per_s"),
                       ("in flight", "concurrency"), ("item p50 ms", "item_p50_ms"), ("item p99 ms", "item_p99_ms"),
                       ("finish p50 ms", "finish_p50_ms"), ("errors", "errors"), ("mismatches", "mismatches"),
                       ("server CPU %", "server_cpu_pct"), ("server RSS MB", "server_rss_mb"),
                       ("load generator CPU %", "client_cpu_pct")):
        table.add_row(title, *(_fmt(r.get(key)) for r in results.values()))
    console = Console()
    console.print(table)
    integ = report["integrity"]
    colour = "green" if integ["ok"] else "red"
    console.print(f"[{colour}]integrity: {'ok' if integ['ok'] else 'FAILED'}[/{colour}] ({integ['checked']} items"
                  f" checked, {integ['mismatches']} mismatches, {integ['errors']} errors); server peak RSS"
                  f" {report.get('server_peak_rss_mb', '-')} MB")
    for name, r in report["scenarios"].items():
        for sample in r.get("error_samples") or []:
            console.print(f"[red]{name}: {sample}[/red]")
