"""`dari bench web`: the web client in Chromium with a long 1:1 chat (issue 8).

Setup: a fresh local server (or --server), three accounts, a 1:1 chat filled with N messages
through the lean client (several in flight from both members) and a small second chat to switch to.
Then Debian's Chromium (Playwright) logs in as one member and measures, in the page's own clock:
click on the chat -> its last message visible (cold after a reload without and with the browser's
timeline cache, and warm after switching chats), scrolling up to the "beginning of conversation"
marker and back down (frames, longest frame, long tasks), and the message list's DOM size, the
cached messages and the JS heap (after a forced GC) before and after scrolling through every message.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from dari.bench.proc import LocalServer
from dari.bench.wire import PASSWORD, Conn, open_direct, rest, signup_many

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHAT_JS = Path(__file__).resolve().parent.parent / "web" / "js" / "chat.js"
SCROLL_STEP_PX = 2000  # per animation frame: a very fast fling (120,000 px/s at 60 Hz)
WORDS = ("안녕하세요", "hello", "你好", "こんにちは", "dari", "bridge", "lunch", "tomorrow", "photo", "ok")

# Click the chat row and wait (one check per animation frame) until the message with `seq` is
# inside the scroller's visible rectangle. Milliseconds on the page's clock.
JS_OPEN = """async ({chatId, seq, timeoutMs}) => {
  const t0 = performance.now();
  document.querySelector(`.chat-item[data-chat-id="${chatId}"]`).click();
  return await new Promise((resolve) => {
    const check = () => {
      const node = document.querySelector(`#msg-list li.msg[data-seq="${seq}"]`);
      if (node) {
        const box = document.getElementById("messages").getBoundingClientRect();
        const r = node.getBoundingClientRect();
        if (r.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1) {
          resolve(performance.now() - t0);
          return;
        }
      }
      if (performance.now() - t0 > timeoutMs) { resolve(null); return; }
      requestAnimationFrame(check);
    };
    check();
  });
}"""

# Scroll by `step` px per animation frame (up: negative) until `done()` holds; count frames, the
# longest frame, long tasks, and the most message rows the DOM held at any frame.
JS_SCROLL = """async ({up, step, timeoutMs, lastSeq}) => {
  const sc = document.getElementById("messages");
  const rows = () => document.querySelectorAll("#msg-list li.msg[data-seq]").length;
  const visible = (sel) => {
    const node = document.querySelector(sel);
    if (!node) return false;
    const box = sc.getBoundingClientRect(), r = node.getBoundingClientRect();
    return r.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  };
  const done = up ? () => visible("#msg-list li.beginning")
                  : () => visible(`#msg-list li.msg[data-seq="${lastSeq}"]`)
                          && sc.scrollHeight - sc.scrollTop - sc.clientHeight < 2;
  const longTasks = [];
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) longTasks.push(e.duration); });
  try { obs.observe({ type: "longtask" }); } catch (e) { /* not supported: reported as null */ }
  const t0 = performance.now();
  let frames = 0, maxFrame = 0, prev = null, maxRows = rows(), steps = 0, ok = false;
  while (performance.now() - t0 < timeoutMs) {
    if (done()) { ok = true; break; }
    sc.scrollTop = up ? Math.max(0, sc.scrollTop - step) : sc.scrollTop + step;
    steps++;
    const ts = await new Promise((r) => requestAnimationFrame(r));
    frames++;
    if (prev !== null) maxFrame = Math.max(maxFrame, ts - prev);
    prev = ts;
    maxRows = Math.max(maxRows, rows());
  }
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  return { ok, ms, frames, steps, fps: frames / (ms / 1000), max_frame_ms: maxFrame, max_rows: maxRows,
           long_tasks: longTasks.length, long_task_ms: longTasks.reduce((a, b) => a + b, 0),
           long_task_max_ms: longTasks.length ? Math.max(...longTasks) : 0 };
}"""

JS_DOM = """(chatId) => {
  const tl = window.dari.chat.timelines.get(chatId);
  return { rows: document.querySelectorAll("#msg-list li.msg[data-seq]").length,
           list_elements: document.querySelectorAll("#msg-list *").length,
           document_elements: document.getElementsByTagName("*").length,
           cached_messages: tl ? tl.msgs.size : 0, at_latest: tl ? tl.atLatest : null };
}"""

JS_DROP_TIMELINE_CACHE = """() => {
  const c = JSON.parse(localStorage.getItem("dari.cache") || "null");
  if (c && c.timelines) { delete c.timelines; localStorage.setItem("dari.cache", JSON.stringify(c)); }
}"""


class BrowserMissing(RuntimeError):
    """Playwright or Chromium is not installed."""


def chat_js_const(name: str) -> int | None:
    """A bound of the web client (MAX_RENDERED, MAX_CACHED in chat.js), read from the file the server serves."""
    m = re.search(rf"const {name} = (\d+)", CHAT_JS.read_text())
    return int(m.group(1)) if m else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def _summary(values: list[float | None]) -> dict[str, Any]:
    ok = [v for v in values if v is not None]
    return {"p50_ms": _pct(ok, 0.5), "p99_ms": _pct(ok, 0.99), "max_ms": round(max(ok), 1) if ok else None,
            "runs": len(values), "timeouts": len(values) - len(ok), "all_ms": [None if v is None else round(v, 1)
                                                                            for v in values]}


def _text(i: int) -> bytes:
    words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 12))
    return f"message {i}: {words}".encode()


async def _fill(conns: list[Conn], chat_id: int, n: int, window: int) -> list[int]:
    """Send n messages into the chat, alternating senders, `window` in flight per connection."""
    next_i = 0
    seqs: list[int] = []
    run = uuid.uuid4().hex[:8]

    async def worker(conn: Conn) -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            ref = await conn.send_message(chat_id, f"w{run}-{i}", _text(i))
            seqs.append(ref.seq)

    await asyncio.gather(*(worker(c) for c in conns for _ in range(window)))
    return seqs


async def _setup(url: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ws_url = url.replace("http", "ws", 1) + "/ws"
    async with aiohttp.ClientSession() as http:
        prefix = f"web{uuid.uuid4().hex[:6]}_"
        alice, bob, carol = await signup_many(http, url, 3, prefix)
        chat = await open_direct(http, url, alice, bob)
        other = await open_direct(http, url, alice, carol)
        conns = [Conn(0, alice), Conn(1, bob)]
        for c in conns:
            await c.open(http, ws_url)
        try:
            t1 = time.perf_counter()
            await _fill(conns, chat, n, 32)
            fill_s = time.perf_counter() - t1
            await _fill(conns[:1], other, 3, 1)
        finally:
            for c in conns:
                await c.close()
        page = await rest(http, url, "message.history", {"chat_id": chat, "limit": 1}, alice.token)
        last_seq = int(page["messages"][-1]["seq"])
    return {"user": alice, "peer": bob, "chat_id": chat, "other_chat_id": other, "last_seq": last_seq,
            "fill_s": fill_s, "setup_s": time.perf_counter() - t0}


async def _measure(url: str, s: dict[str, Any], opens: int) -> dict[str, Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        raise BrowserMissing("Playwright is not installed: pip install -e '.[test]' (the `test` extra)") from exc
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise BrowserMissing("Chromium is not installed: apt-get install -y chromium")
    chat, other, last_seq = s["chat_id"], s["other_chat_id"], s["last_seq"]
    timeout_ms = 60_000
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            cdp = await ctx.new_cdp_session(page)
            await cdp.send("Performance.enable")

            async def heap_mb() -> float:
                await cdp.send("HeapProfiler.collectGarbage")
                metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
                used = next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize")
                return round(used / 1e6, 2)

            async def ready() -> None:
                await page.wait_for_selector('#conn[data-state="connected"]', timeout=timeout_ms)
                await page.wait_for_selector(f'.chat-item[data-chat-id="{chat}"]', timeout=timeout_ms)

            async def open_chat(chat_id: int, seq: int) -> float | None:
                return await page.evaluate(JS_OPEN, {"chatId": chat_id, "seq": seq, "timeoutMs": timeout_ms})

            async def reload(keep_cache: bool) -> None:
                await page.evaluate("history.replaceState(null, '', location.pathname)")
                if not keep_cache:
                    await page.evaluate(JS_DROP_TIMELINE_CACHE)
                await page.reload()
                await ready()

            await page.goto(url)
            form = page.locator("#login-form")
            await form.locator("[name=handle]").fill(s["user"].handle)
            await form.locator("[name=password]").fill(PASSWORD)
            await form.locator("[name=device_name]").fill("bench web")
            await form.locator("button[type=submit]").click()
            await ready()
            other_last = await page.evaluate(f"window.dari.chats.get({other}).last_seq")
            cold: list[float | None] = []
            cached: list[float | None] = []
            warm: list[float | None] = []
            for _ in range(opens):
                await reload(keep_cache=False)
                cold.append(await open_chat(chat, last_seq))
                await page.wait_for_timeout(700)  # let the timeline cache be written (500 ms debounce)
                await reload(keep_cache=True)
                cached.append(await open_chat(chat, last_seq))
                await page.wait_for_timeout(300)
                await open_chat(other, other_last)
                warm.append(await open_chat(chat, last_seq))
            await page.wait_for_timeout(500)
            dom_before = await page.evaluate(JS_DOM, chat)
            heap_before = await heap_mb()
            up = await page.evaluate(JS_SCROLL, {"up": True, "step": SCROLL_STEP_PX, "timeoutMs": 600_000,
                                                 "lastSeq": last_seq})
            first_seq = await page.evaluate(
                "Number(document.querySelector('#msg-list li.msg[data-seq]')?.dataset.seq ?? -1)")
            dom_top = await page.evaluate(JS_DOM, chat)
            heap_top = await heap_mb()
            down = await page.evaluate(JS_SCROLL, {"up": False, "step": SCROLL_STEP_PX, "timeoutMs": 600_000,
                                                   "lastSeq": last_seq})
            await page.wait_for_timeout(300)
            dom_after = await page.evaluate(JS_DOM, chat)
            heap_after = await heap_mb()
        finally:
            await browser.close()
    for r in (up, down):
        for k in ("ms", "fps", "max_frame_ms", "long_task_ms", "long_task_max_ms"):
            r[k] = round(r[k], 1)
    return {
        "open_cold_ms": _summary(cold), "open_cold_cached_ms": _summary(cached), "open_warm_ms": _summary(warm),
        "last_visible": all(v is not None for v in cold + cached + warm),
        "scroll_up": {**up, "reached_beginning": up["ok"], "first_rendered_seq": first_seq},
        "scroll_down": {**down, "reached_last": down["ok"]},
        "dom": {"before": dom_before, "at_beginning": dom_top, "after": dom_after,
                "max_rows_during_scroll": max(up["max_rows"], down["max_rows"])},
        "heap_mb": {"before": heap_before, "at_beginning": heap_top, "after": heap_after},
        "page_errors": errors,
    }


async def run_web(messages: int, opens: int, server_url: str | None = None) -> dict[str, Any]:
    server = None
    if server_url is None:
        server = LocalServer()
        await asyncio.to_thread(server.start)
        url = server.url
    else:
        url = server_url.rstrip("/")
    load_before = os.getloadavg()
    try:
        s = await _setup(url, messages)
        figures = await _measure(url, s, opens)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    return {
        "suite": "web", "messages": messages, "last_seq": s["last_seq"], "opens": opens,
        "setup_s": round(s["setup_s"], 2), "fill_messages_per_s": round(messages / s["fill_s"], 1),
        "max_rendered": chat_js_const("MAX_RENDERED"),
        "max_cached": chat_js_const("MAX_CACHED"), "scroll_step_px": SCROLL_STEP_PX, **figures,
        "load_avg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "server": server_url or "local",
    }
