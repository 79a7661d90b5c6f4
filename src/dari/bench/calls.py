"""`dari bench calls`: call setup time, direct and through TURN over TCP.

Two SDK devices (aiortc) on one local `dari serve` with Debian's coturn beside it (no UDP listener,
TURN over TCP and TLS, dari-signed credentials, as in docs/operations.md). Each run: the caller sends
`call.start`; the callee answers as soon as its `call.ringing` arrives; the setup time is from
`call.start` until the caller receives the callee's first audio frame. That covers the server's
state changes, the signaling round trips over the WebSocket session, ICE (with candidate gathering:
aiortc gathers before it sends an offer or answer), DTLS and SRTP.

Modes: `direct` (host candidates win; TURN is offered but not needed) and `turn-tcp` (both sides
relay-only with only a `turn:…?transport=tcp` server: the path left on a network that drops UDP).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from dari.bench.proc import LocalServer
from dari.bench.track import percentile_ms
from dari.bench.turn import start_turn

SECRET = "bench-" + uuid.uuid4().hex
PASSWORD = "bench password 1"


async def _one(caller: Any, callee: Any, chat_id: int, relay: bool) -> tuple[float, float, list[str]]:
    from dari.client.calls import CallAgent

    a = CallAgent(caller, relay=relay)
    b = CallAgent(callee, relay=relay)
    try:
        t0 = time.monotonic()

        async def answer() -> None:
            await b.answer(await b.wait_ringing(timeout=30))

        answering = asyncio.ensure_future(answer())
        await a.place(chat_id)
        await asyncio.wait_for(a.connected.wait(), 30)
        t_connected = time.monotonic() - t0
        await asyncio.wait_for(a.first_audio.wait(), 30)
        t_audio = time.monotonic() - t0
        paths = a.paths()
        await answering
        await a.hangup()
        await asyncio.wait_for(b.ended.wait(), 10)
        return t_connected, t_audio, paths
    finally:
        await a.close()
        await b.close()


async def run_calls(runs: int, log: Any = None) -> dict[str, Any]:
    from dari.client import Client

    say = log or (lambda _text: None)
    work = Path(tempfile.mkdtemp(prefix="dari-bench-calls-"))
    turn = start_turn(work / "turn", SECRET)
    server = LocalServer({"DARI_TURN_URLS": turn.tcp_url, "DARI_TURN_SECRET": SECRET})
    await asyncio.to_thread(server.start)
    clients: list[Client] = []
    report: dict[str, Any] = {"runs": runs, "modes": {}}
    try:
        for name in ("alice", "bob"):
            c = Client(server.url)
            await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
            await c.wait_live()
            clients.append(c)
        caller, callee = clients
        assert callee.user is not None
        chat_id = int((await caller.call("chat.open_direct", user_id=callee.user["user_id"]))["chat_id"])
        for mode, relay in (("direct", False), ("turn-tcp", True)):
            connected: list[float] = []
            audio: list[float] = []
            paths: set[str] = set()
            await _one(caller, callee, chat_id, relay)   # warm-up: imports, codecs, first allocation
            for i in range(runs):
                conn_s, audio_s, used = await _one(caller, callee, chat_id, relay)
                paths.update(used)
                connected.append(conn_s)
                audio.append(audio_s)
                say(f"{mode} {i + 1}/{runs}: connected {conn_s * 1000:.0f} ms, first audio {audio_s * 1000:.0f} ms,"
                    f" path {'/'.join(used)}")
            report["modes"][mode] = _summary(audio, connected, paths)
    finally:
        for c in clients:
            await c.close()
        await asyncio.to_thread(server.stop)
        turn.stop()
    return report


_CALLER_JS = """async () => {
  const calls = window.dari.calls;
  const t0 = performance.now();
  await calls.start(false);
  let connected = null;
  for (;;) {
    if (calls.call?.state === "active" && connected === null) connected = performance.now() - t0;
    const s = await calls.stats();
    if (s.audioPackets > 0) {
      const path = s.paths[0] ? `${s.paths[0].local}/${s.paths[0].protocol}` : "?";
      return { connected: connected ?? performance.now() - t0, audio: performance.now() - t0, path };
    }
    if (performance.now() - t0 > 30000) throw new Error("no audio within 30 s");
    await new Promise((r) => setTimeout(r, 5));
  }
}"""
# The callee answers the moment its page shows the incoming call, as if the person were very quick.
_CALLEE_JS = """() => { const calls = window.dari.calls; clearInterval(window.__answer);
  window.__answer = setInterval(() => {
    if (calls.call?.state === "ringing" && !calls.call.joined) calls.accept();
  }, 2);
}"""
_HANGUP_JS = """async () => { const calls = window.dari.calls; await calls.hangup();
  for (let i = 0; i < 400 && calls.call; i++) await new Promise((r) => setTimeout(r, 10)); }"""


async def run_browser_calls(runs: int, log: Any = None) -> dict[str, Any]:
    """The same in Chromium (fake microphone): click-free `calls.start` on one page, auto-answer on
    the other, until the caller's getStats shows audio packets received. One server per mode,
    the second with call_relay_only (the page then sets iceTransportPolicy "relay")."""
    import shutil

    from dari.bench.web import BrowserMissing
    from dari.client import Client

    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        raise BrowserMissing("Playwright is not installed: pip install -e '.[test]'") from exc
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise BrowserMissing("Chromium is not installed: apt-get install -y chromium")

    say = log or (lambda _text: None)
    work = Path(tempfile.mkdtemp(prefix="dari-bench-calls-web-"))
    turn = start_turn(work / "turn", SECRET)
    report: dict[str, Any] = {"runs": runs, "modes": {}}
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=exe, args=args)
            for mode, relay in (("direct", False), ("turn-tcp", True)):
                env = {"DARI_TURN_URLS": turn.tcp_url, "DARI_TURN_SECRET": SECRET}
                if relay:
                    env["DARI_CALL_RELAY_ONLY"] = "1"
                server = LocalServer(env)
                await asyncio.to_thread(server.start)
                try:
                    pages = []
                    tokens: list[tuple[str, dict[str, Any]]] = []
                    for name in ("alice", "bob"):
                        async with Client(server.url) as c:
                            await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD)
                            assert c.token is not None and c.user is not None
                            tokens.append((c.token, c.user))
                    async with Client(server.url, token=tokens[0][0]) as c:
                        chat_id = (await c.call("chat.open_direct", user_id=tokens[1][1]["user_id"]))["chat_id"]
                    for token, _ in tokens:
                        ctx = await browser.new_context()
                        await ctx.add_init_script(f"localStorage.setItem('dari.token', {token!r})")
                        page = await ctx.new_page()
                        await page.goto(server.url)
                        await page.wait_for_function(f"() => window.dari?.chats?.has({chat_id})", timeout=30000)
                        pages.append(page)
                    caller, callee = pages
                    await caller.evaluate(f"() => window.dari.openChat({chat_id})")
                    await callee.evaluate(_CALLEE_JS)
                    connected: list[float] = []
                    audio: list[float] = []
                    paths: set[str] = set()
                    for i in range(runs + 1):
                        r = await caller.evaluate(_CALLER_JS)
                        await caller.evaluate(_HANGUP_JS)
                        await callee.wait_for_function("() => !window.dari.calls.call", timeout=30000)
                        if i == 0:
                            continue   # warm-up: codecs, the first TURN allocation
                        connected.append(r["connected"] / 1000)
                        audio.append(r["audio"] / 1000)
                        paths.add(r["path"])
                        say(f"browser {mode} {i}/{runs}: connected {r['connected']:.0f} ms, first audio"
                            f" {r['audio']:.0f} ms, path {r['path']}")
                    report["modes"][mode] = _summary(audio, connected, paths)
                finally:
                    await asyncio.to_thread(server.stop)
            await browser.close()
    finally:
        turn.stop()
    return report


def _summary(audio: list[float], connected: list[float], paths: set[str]) -> dict[str, Any]:
    return {"runs": len(audio), "paths": sorted(paths),
            "p50_ms": percentile_ms(audio, 50), "p99_ms": percentile_ms(audio, 99),
            "max_ms": round(max(audio) * 1000, 1), "mean_ms": round(statistics.fmean(audio) * 1000, 1),
            "connected_p50_ms": percentile_ms(connected, 50), "connected_p99_ms": percentile_ms(connected, 99)}


def main(args: argparse.Namespace) -> int:
    """`dari bench calls`, called by bench/cli.py."""
    from dari.bench.machine import machine_info
    from dari.bench.turn import turnserver_path

    if turnserver_path() is None:
        print("dari bench calls needs Debian's coturn: apt-get install coturn", file=sys.stderr)
        return 2
    try:
        import aiortc  # noqa: F401
    except ImportError:
        print("dari bench calls needs aiortc: pip install 'dari[calls]'", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    runs = max(1, args.runs if args.runs > 1 else (5 if args.quick else 50))
    report: dict[str, Any] = {"sdk": asyncio.run(run_calls(runs, log))}
    from dari.bench.web import BrowserMissing

    try:
        report["browser"] = asyncio.run(run_browser_calls(runs, log))
    except BrowserMissing as exc:
        print(f"dari bench calls: no browser figures: {exc}", file=sys.stderr)
    if args.lab:
        from dari.bench.calls_lab import run_lab_calls
        from dari.lab.netns import missing_features

        missing = missing_features()
        if missing:
            print("dari bench calls --lab needs the censorship lab: " + "; ".join(missing), file=sys.stderr)
            return 2
        report["lab"] = asyncio.run(run_lab_calls(runs, log=log))
    report["machine"] = machine_info()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dari bench calls: call.start -> first audio packet at the caller (loopback)")
    for col in ("client", "mode", "path used", "runs", "p50 ms", "p99 ms", "max ms", "connected p50 / p99 ms"):
        table.add_column(col, justify="left" if col in ("client", "mode", "path used") else "right")
    for client, part in report.items():
        if client in ("machine", "lab"):
            continue
        for mode, r in part["modes"].items():
            table.add_row("aiortc" if client == "sdk" else "Chromium", mode, ", ".join(r["paths"]), str(r["runs"]),
                          f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}",
                          f"{r['connected_p50_ms']:.0f} / {r['connected_p99_ms']:.0f}")
    Console().print(table)
    if "lab" in report:
        lab = Table(title="in the censorship lab: censored caller (aiortc) -> control region; udp-block drops all"
                          " UDP but DNS")
        for col in ("phase", "caller path", "callee path", "runs", "p50 ms", "p99 ms", "max ms"):
            lab.add_column(col, justify="left" if "path" in col or col == "phase" else "right")
        for phase, r in report["lab"]["phases"].items():
            lab.add_row(phase, ", ".join(r["caller_paths"]), ", ".join(r["callee_paths"]), str(r["runs"]),
                        f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}")
        Console().print(lab)
    return 0
