// The conversation view: timeline cache per chat, windowed rendering (only messages near the
// viewport are in the DOM), history paging both ways, KakaoTalk unread counters, replies,
// reactions, edit, unsend, typing, mentions, and pending/failed messages from the outbox.

import { formatDay, formatTime, t } from "./i18n.js";
import { MEDIA_KINDS, hitText, previewText } from "./media.js";
import { shownName, systemText } from "./systemline.js";
import { $, avatar, confirmDialog, dialog, el, errorText, toast } from "./ui.js";

const PAGE = 50;
const MAX_RENDERED = 160; // upper bound of message rows in the DOM
const MAX_CACHED = 500; // upper bound of messages kept in memory per chat (scrolling refetches the rest)
const EDGE_PX = 400; // how close to an edge before paging
const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];

class Timeline {
  constructor(chatId) {
    this.chatId = chatId;
    this.msgs = new Map(); // seq -> message
    this.seqs = []; // sorted seqs of one contiguous segment
    this.hasOlder = true; // older messages exist before seqs[0]
    this.atLatest = false; // the segment reaches the chat's last message
    this.loading = false;
  }

  first() { return this.seqs.length ? this.seqs[0] : null; }
  last() { return this.seqs.length ? this.seqs[this.seqs.length - 1] : null; }

  put(msg) {
    const had = this.msgs.has(msg.seq);
    this.msgs.set(msg.seq, { ...(this.msgs.get(msg.seq) || {}), ...msg });
    if (!had) {
      let i = this.seqs.length;
      while (i > 0 && this.seqs[i - 1] > msg.seq) i--;
      this.seqs.splice(i, 0, msg.seq);
    }
  }

  // Keep at most MAX_CACHED messages around the rendered window [lo, hi]: drop from whichever end has
  // more to spare, so that memory does not grow with the number of messages scrolled through.
  trim(lo, hi) {
    const n = this.seqs.length;
    if (n <= MAX_CACHED) return;
    const iLo = Math.max(0, this.seqs.indexOf(lo));
    let iHi = this.seqs.indexOf(hi);
    if (iHi < iLo) iHi = n - 1;
    let a = 0;
    let b = n; // keep seqs[a, b)
    while (b - a > MAX_CACHED) {
      if (iLo - a > b - 1 - iHi) a++;
      else if (b - 1 > iHi) b--;
      else break;
    }
    for (let i = 0; i < a; i++) this.msgs.delete(this.seqs[i]);
    for (let i = b; i < n; i++) this.msgs.delete(this.seqs[i]);
    if (a > 0) this.hasOlder = true;
    if (b < n) this.atLatest = false; // live messages are fetched again when scrolling down
    this.seqs = this.seqs.slice(a, b);
  }

  reset() {
    this.msgs.clear();
    this.seqs = [];
    this.hasOlder = true;
    this.atLatest = false;
  }
}

export class ChatView {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.timelines = new Map();
    this.details = new Map(); // chat_id -> chat.get result (members with read_seq)
    this.chatId = null;
    this.win = null; // {lo, hi}: seq range rendered
    this.reply = null; // seq being replied to
    this.editing = null; // seq being edited
    this.typing = new Map(); // chat_id -> Map(user_id -> {name, until})
    this.typingSentAt = 0;
    this.highlight = null;
    this.listEl = $("#msg-list");
    this.scroller = $("#messages");
    this.composer = $("#composer");
    this.bind();
  }

  me() { return this.session.user?.user_id; }

  timeline(chatId) {
    let tl = this.timelines.get(chatId);
    if (!tl) {
      tl = new Timeline(chatId);
      this.timelines.set(chatId, tl);
    }
    return tl;
  }

  // -- wiring -----------------------------------------------------------------------------
  bind() {
    this.composer.addEventListener("keydown", (ev) => {
      if (this.handleMentionKeys(ev)) return;
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      } else if (ev.key === "Escape") {
        if (this.reply !== null || this.editing !== null) {
          ev.preventDefault();
          this.cancelContext();
        }
      } else if (ev.key === "ArrowUp" && !this.composer.value && this.editing === null) {
        const mine = this.lastOwnMessage();
        if (mine) { ev.preventDefault(); this.startEdit(mine.seq); }
      }
    });
    this.composer.addEventListener("input", () => {
      this.autosize();
      this.sendTyping();
      this.updateMentionSuggest();
      $("#compose-error").textContent = "";
    });
    this.composer.addEventListener("blur", () => this.sendTyping(false));
    $("#btn-send").addEventListener("click", () => this.submit());
    $("#compose-cancel").addEventListener("click", () => this.cancelContext());
    $("#jump-latest").addEventListener("click", () => this.jumpToLatest());
    $("#btn-chat-info").addEventListener("click", () => this.app.openChatInfo(this.chatId));
    $("#chat-e2ee").addEventListener("click", () => this.app.e2ee.openSafety(this.chatId));
    $("#btn-chat-search").addEventListener("click", () => this.openChatSearch());
    $("#btn-back").addEventListener("click", () => this.app.closeChat());
    let ticking = false;
    this.scroller.addEventListener("scroll", () => {
      if (ticking) return;
      ticking = true;
      requestAnimationFrame(() => { ticking = false; this.onScroll(); });
    }, { passive: true });
    this.listEl.addEventListener("click", (ev) => this.onListClick(ev));
    setInterval(() => this.renderTyping(), 1000);
  }

  // -- opening a chat ---------------------------------------------------------------------
  async open(chatId, { jumpTo = null } = {}) {
    const switching = this.chatId !== chatId;
    if (switching) {
      this.sendTyping(false);
      this.cancelContext();
      this.composer.value = this.app.drafts.get(chatId) || "";
      this.autosize();
      $("#compose-error").textContent = "";
    }
    this.chatId = chatId;
    this.renderHeader();
    this.app.media.renderTray();
    const tl = this.timeline(chatId);
    if (jumpTo !== null) {
      await this.jumpTo(jumpTo);
    } else if (!tl.atLatest || !tl.seqs.length) {
      tl.reset();
      this.win = null;
      this.renderWindow({ bottom: true });
      await this.loadLatest(chatId);
    } else {
      this.win = null;
      this.renderWindow({ bottom: true });
    }
    this.loadDetail(chatId);
    this.app.markRead(chatId);
    if (window.matchMedia("(min-width: 721px)").matches) this.composer.focus({ preventScroll: true });
  }

  async loadDetail(chatId) {
    try {
      const d = await this.session.call("chat.get", { chat_id: chatId });
      this.details.set(chatId, d);
      if (d.e2ee) this.app.e2ee.markE2ee(chatId);
      if (chatId === this.chatId) {
        this.app.e2ee.watch(chatId);
        this.renderHeader();
        this.refreshCounters();
        this.loadPresence(d);
      }
    } catch (err) {
      if (err.code !== "unavailable") console.warn("chat.get failed", err);
    }
  }

  async loadPresence(d) {
    if (d.kind !== "direct") return;
    const peer = d.members.find((m) => m.user_id !== this.me());
    if (!peer) return;
    try {
      const [p] = await this.session.call("presence.get", { user_ids: [peer.user_id] });
      if (p) this.app.presence.set(p.user_id, p);
      this.renderHeader();
    } catch { /* presence is best effort */ }
  }

  async loadLatest(chatId) {
    const tl = this.timeline(chatId);
    // Show what this browser last saw at once (also offline), then ask the server.
    if (!tl.seqs.length && this.app.restoreTimeline(tl) && chatId === this.chatId) {
      this.win = null;
      this.renderWindow({ bottom: true });
    }
    tl.loading = true;
    try {
      const page = await this.session.call("message.history", { chat_id: chatId, limit: PAGE }, { wait: 60000 });
      tl.reset();
      page.messages.forEach((m) => tl.put(m));
      for (const m of tl.liveDuringLoad || []) if (!tl.msgs.has(m.seq)) tl.put(m);
      tl.hasOlder = page.has_more;
      tl.atLatest = true;
      tl.fromCache = false;
      this.app.cacheTimeline(tl);
    } catch (err) {
      if (err.code !== "unavailable") toast(errorText(err), { kind: "error" });
    } finally {
      tl.loading = false;
      tl.liveDuringLoad = [];
    }
    if (chatId === this.chatId) {
      this.win = null;
      this.renderWindow({ bottom: true });
    }
  }

  // After a reconnect: the open chat's first page may have been lost with the old connection
  // (its history call failed "unavailable"), and live messages are only added to a timeline that
  // reaches the latest one, so load it again; the resume by cursor covers the rest. A timeline the
  // server did fill (someone reading older history) is left where it is.
  resumeCurrent() {
    if (this.chatId === null) return;
    const tl = this.timeline(this.chatId);
    if (!tl.atLatest && !tl.loading && (!tl.seqs.length || tl.fromCache)) this.loadLatest(this.chatId);
  }

  async reloadCurrent() {
    if (this.chatId === null) return;
    const tl = this.timeline(this.chatId);
    tl.atLatest = false;
    await this.open(this.chatId);
  }

  close() {
    this.sendTyping(false);
    if (this.chatId !== null) this.app.drafts.set(this.chatId, this.composer.value);
    this.chatId = null;
    this.win = null;
  }

  // -- header -----------------------------------------------------------------------------
  renderHeader() {
    const chat = this.app.chats.get(this.chatId);
    const detail = this.details.get(this.chatId);
    const title = shownName(detail?.title || chat?.title || "");
    $("#chat-title").textContent = title;
    const sub = $("#chat-sub");
    const kind = detail?.kind || chat?.kind;
    let text = "";
    if (kind === "direct") {
      const peer = detail?.members.find((m) => m.user_id !== this.me());
      const p = peer ? this.app.presence.get(peer.user_id) : null;
      if (p?.online) text = t("presence.online");
      else if (p?.last_seen_at) text = t("presence.last_seen", { time: this.app.relativeTime(p.last_seen_at) });
    } else if (detail || chat) {
      text = t("chat.members_count", { n: detail ? detail.members.length : chat.member_count });
      if (kind === "open") text = `${t("chats.open_badge")} · ${text}`;
    }
    if (chat?.muted) text = `${text}${text ? " · " : ""}${t("chats.muted")}`;
    sub.textContent = text;
    const lock = $("#chat-e2ee");
    const e2ee = !!(detail?.e2ee ?? chat?.e2ee);
    lock.hidden = !(detail || chat);
    lock.dataset.e2ee = String(e2ee);
    lock.disabled = !e2ee || kind === "open";
    lock.textContent = e2ee ? `🔒 ${t("e2ee.on")}` : t("e2ee.off");
    lock.title = e2ee ? t("e2ee.safety_open") : t("e2ee.off_why");
    this.app.calls?.renderButtons(kind);
  }

  // -- rendering --------------------------------------------------------------------------
  // Render the window of messages [win.lo, win.hi]. Keeps the reading position stable unless
  // asked to stick to the bottom or to center a sequence number.
  renderWindow({ bottom = false, center = null } = {}) {
    if (this._raf) {
      cancelAnimationFrame(this._raf);
      bottom = bottom || !!this._renderOpts?.bottom;
      this._raf = null;
      this._renderOpts = null;
    }
    if (this.chatId === null) return;
    const tl = this.timeline(this.chatId);
    const sc = this.scroller;
    const wasAtBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
    const anchor = bottom || center !== null ? null : this.findAnchor();
    if (!this.win || !tl.seqs.length) {
      const hi = tl.last();
      const lo = tl.seqs[Math.max(0, tl.seqs.length - MAX_RENDERED / 2)] ?? null;
      this.win = { lo, hi };
    }
    const seqs = tl.seqs.filter((s) => s >= this.win.lo && s <= this.win.hi);
    const frag = document.createDocumentFragment();
    const showBeginning = !tl.hasOlder && seqs.length && seqs[0] === tl.first();
    if (showBeginning) frag.append(el("li.day-sep.beginning", {}, el("span", { text: t("chat.beginning") })));
    let prev = seqs.length ? tl.msgs.get(tl.seqs[tl.seqs.indexOf(seqs[0]) - 1]) : null;
    // "Alice's security code changed", placed where it happened among the messages.
    const notices = this.app.e2ee.keyNotices(this.chatId).filter((x) => !prev || x.at > prev.created_at);
    const noticeLine = (x) => el("li.msg.system.key-change", { dataset: { user: x.user_id } },
      el("span", { text: t("e2ee.code_changed", { name: shownName(x.name) }) }));
    for (const seq of seqs) {
      const msg = tl.msgs.get(seq);
      for (const x of notices.filter((n) => !n.done && n.at <= msg.created_at)) { x.done = true; frag.append(noticeLine(x)); }
      frag.append(...this.renderMessage(msg, prev));
      prev = msg;
    }
    if (!seqs.length || seqs[seqs.length - 1] === tl.last()) for (const x of notices.filter((n) => !n.done)) frag.append(noticeLine(x));
    const showPending = (tl.atLatest || tl.fromCache || !tl.seqs.length) && (seqs.length === 0 || seqs[seqs.length - 1] === tl.last());
    if (showPending) {
      for (const item of this.app.pendingFor(this.chatId)) frag.append(this.renderPending(item));
    }
    this.app.media.adoptPlayers(this.listEl, frag);
    this.listEl.replaceChildren(frag);
    $("#history-loader").hidden = !tl.loading;
    $("#jump-latest").hidden = tl.fromCache || tl.atLatest && (this.win.hi === tl.last() || tl.last() === null);
    if (center !== null) {
      const node = this.listEl.querySelector(`[data-seq="${center}"]`);
      if (node) {
        sc.scrollTop = node.offsetTop - sc.clientHeight / 2 + node.offsetHeight / 2;
        node.classList.add("flash");
        setTimeout(() => node.classList.remove("flash"), 2000);
      }
    } else if (bottom || (wasAtBottom && showPending && !anchor)) {
      sc.scrollTop = sc.scrollHeight;
    } else if (anchor) {
      const node = this.listEl.querySelector(`[data-seq="${anchor.seq}"]`);
      if (node) sc.scrollTop = node.offsetTop - anchor.offset;
    }
    this.app.media.scheduleSweep();
  }

  // Coalesce renders to one per frame: a burst of 500 messages costs a few renders, not 500.
  requestRender({ bottom = false } = {}) {
    this._renderOpts = { bottom: bottom || !!this._renderOpts?.bottom };
    if (this._raf) return;
    this._raf = requestAnimationFrame(() => {
      const opts = this._renderOpts;
      this._raf = null;
      this._renderOpts = null;
      this.renderWindow(opts);
    });
  }

  findAnchor() {
    const sc = this.scroller;
    const top = sc.scrollTop;
    for (const node of this.listEl.querySelectorAll("li.msg[data-seq]")) {
      if (node.offsetTop + node.offsetHeight > top) return { seq: node.dataset.seq, offset: node.offsetTop - top };
    }
    return null;
  }

  isAtBottom() {
    const sc = this.scroller;
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 60;
  }

  renderMessage(msg, prev) {
    const out = [];
    const me = this.me();
    const day = new Date(msg.created_at).toDateString();
    if (!prev || new Date(prev.created_at).toDateString() !== day) {
      out.push(el("li.day-sep", {}, el("span", { text: formatDay(msg.created_at) })));
    }
    if (msg.kind === "system") {
      out.push(el("li.msg.system", { dataset: { seq: msg.seq } }, el("span", { text: systemText(msg) })));
      return out;
    }
    const mine = msg.sender_id === me;
    const grouped = prev && prev.kind !== "system" && prev.sender_id === msg.sender_id
      && msg.created_at - prev.created_at < 60000 && new Date(prev.created_at).toDateString() === day;
    const li = el(`li.msg${mine ? ".mine" : ".theirs"}${grouped ? ".grouped" : ""}`, {
      dataset: { seq: msg.seq }, tabindex: "-1",
    });
    if (!mine) {
      li.append(grouped ? el("span.avatar-spacer") : avatar(msg.sender_name, msg.sender_id));
    }
    const body = el("div.msg-body");
    if (!mine && !grouped) body.append(el("div.sender", { text: shownName(msg.sender_name) }));
    const row = el("div.bubble-row");
    const sticker = msg.kind === "sticker" && !msg.unsent;
    const bubble = el(sticker ? "div.sticker-msg" : "div.bubble");
    if (msg.mentions?.includes(me) && !mine) bubble.classList.add("mentions-me");
    if (msg.unsent) {
      bubble.classList.add("unsent");
      bubble.append(el("span", { text: t("message.unsent") }));
    } else if (msg.kind === "encrypted") {
      bubble.classList.add("undecryptable");
      if (msg.reply_to) bubble.append(this.renderQuote(msg.reply_to));
      bubble.append(el("div.text.e2ee-failed", { dataset: { reason: msg.e2ee_error || "not_ready" },
        text: this.app.e2ee.failureText(msg.e2ee_error || "not_ready") }));
    } else if (sticker) {
      if (msg.reply_to) bubble.append(this.renderQuote(msg.reply_to));
      bubble.append(this.app.stickers.renderMessage(msg));
    } else {
      if (msg.reply_to) bubble.append(this.renderQuote(msg.reply_to));
      if (MEDIA_KINDS.has(msg.kind)) {
        bubble.classList.add(msg.kind === "image" ? "has-photo" : msg.kind === "video" ? "has-video" : "has-file");
        bubble.append(this.app.media.renderAttachment(msg));
      }
      if (msg.text || !MEDIA_KINDS.has(msg.kind)) bubble.append(el("div.text", { text: msg.text }));
      if (msg.edited_at) bubble.append(el("span.edited", { text: t("message.edited") }));
    }
    const meta = el("div.meta");
    const unread = this.unreadFor(msg.seq);
    meta.append(el("span.unread", { text: unread > 0 ? String(unread) : "", "data-unread": unread,
      "aria-label": unread > 0 ? t("message.unread_aria", { n: unread }) : null }));
    meta.append(el("time", { datetime: new Date(msg.created_at).toISOString(), text: formatTime(msg.created_at) }));
    row.append(bubble, meta);
    body.append(row);
    const reactions = Object.entries(msg.reactions || {}).filter(([, users]) => users.length);
    if (reactions.length) {
      const rx = el("div.reactions");
      for (const [emoji, users] of reactions) {
        rx.append(el(`button.reaction${users.includes(me) ? ".on" : ""}`, {
          type: "button", dataset: { act: "toggle-react", emoji },
          "aria-pressed": users.includes(me) ? "true" : "false",
          "aria-label": t("message.reaction_aria", { emoji, n: users.length }),
        }, `${emoji} ${users.length}`));
      }
      body.append(rx);
    }
    if (!msg.unsent) body.append(this.renderActions(msg, mine));
    li.append(body);
    out.push(li);
    return out;
  }

  renderQuote(seq) {
    const tl = this.timeline(this.chatId);
    const orig = tl.msgs.get(seq) || this.app.quoteCache.get(`${this.chatId}:${seq}`);
    const q = el("button.quote", { type: "button", dataset: { act: "jump", seq },
      "aria-label": t("message.jump_to_reply") });
    if (orig) {
      q.append(el("span.quote-name", { text: orig.sender_name }),
        el("span.quote-text", { text: previewText(orig) }));
    } else {
      q.append(el("span.quote-text", { text: t("message.original") }));
      this.fetchQuote(seq);
    }
    return q;
  }

  async fetchQuote(seq) {
    const key = `${this.chatId}:${seq}`;
    if (this.app.quoteCache.has(key) || this._quoteLoading?.has(key)) return;
    this._quoteLoading ??= new Set();
    this._quoteLoading.add(key);
    const chatId = this.chatId;
    try {
      const page = await this.session.call("message.history", { chat_id: chatId, before_seq: seq + 1, limit: 1 });
      const m = page.messages.find((x) => x.seq === seq);
      if (m) {
        this.app.quoteCache.set(key, m);
        if (chatId === this.chatId) this.renderWindow();
      }
    } catch { /* the quote stays generic */ } finally {
      this._quoteLoading.delete(key);
    }
  }

  renderActions(msg, mine) {
    const bar = el("div.msg-actions", { role: "toolbar", "aria-label": t("message.actions") });
    bar.append(el("button.act", { type: "button", dataset: { act: "reply" }, "aria-label": t("message.reply"),
      title: t("message.reply"), text: "↩" }));
    const reactBtn = el("button.act", { type: "button", dataset: { act: "react-menu" },
      "aria-label": t("message.react"), title: t("message.react"), "aria-haspopup": "true", text: "☺" });
    bar.append(reactBtn);
    if (mine) {
      if (msg.kind === "text" || MEDIA_KINDS.has(msg.kind)) {
        bar.append(el("button.act", { type: "button", dataset: { act: "edit" }, "aria-label": t("message.edit"),
          title: t("message.edit"), text: "✎" }));
      }
      const windowS = this.app.serverInfo?.unsend_window_s ?? 300;
      if (Date.now() - msg.created_at < windowS * 1000) {
        bar.append(el("button.act", { type: "button", dataset: { act: "unsend" }, "aria-label": t("message.unsend"),
          title: t("message.unsend"), text: "⌫" }));
      }
    }
    return bar;
  }

  renderPending(item) {
    const failed = item.state === "failed";
    const li = el(`li.msg.mine.pending${failed ? ".failed" : ""}`, { dataset: { clientId: item.client_id } });
    const body = el("div.msg-body");
    const row = el("div.bubble-row");
    const bubble = el("div.bubble");
    if (item.reply_to) bubble.append(this.renderQuote(item.reply_to));
    bubble.append(el("div.text", { text: item.text }));
    const meta = el("div.meta");
    if (failed) {
      meta.append(el("span.failed-mark", { text: "!", "aria-hidden": "true" }));
    } else {
      meta.append(el("span.pending-mark", { title: t("message.pending"), "aria-label": t("message.pending") }, "🕓"));
    }
    row.append(bubble, meta);
    body.append(row);
    if (failed) {
      body.append(el("div.failed-note", { role: "alert" },
        el("span", { text: `${t("message.failed")} — ${errorText(item.error)}` }),
        el("button.link", { type: "button", dataset: { act: "retry" }, text: t("message.retry") }),
        el("button.link", { type: "button", dataset: { act: "discard" }, text: t("message.discard") })));
    } else {
      body.append(el("div.pending-note", { text: t("message.pending") }));
    }
    li.append(body);
    return li;
  }

  unreadFor(seq) {
    const d = this.details.get(this.chatId);
    if (!d) {
      const m = this.timeline(this.chatId).msgs.get(seq);
      return m?.unread ?? 0;
    }
    let n = 0;
    for (const mb of d.members) if (mb.read_seq < seq) n++;
    return n;
  }

  refreshCounters() {
    for (const node of this.listEl.querySelectorAll("li.msg[data-seq] .unread")) {
      const seq = Number(node.closest("li").dataset.seq);
      const n = this.unreadFor(seq);
      node.textContent = n > 0 ? String(n) : "";
      node.dataset.unread = n;
      if (n > 0) node.setAttribute("aria-label", t("message.unread_aria", { n }));
      else node.removeAttribute("aria-label");
    }
  }

  // Replace one rendered message in place (edit, unsend, reaction): no scroll jump, no rebuild.
  patch(seq) {
    const tl = this.timeline(this.chatId);
    const node = this.listEl.querySelector(`li.msg[data-seq="${seq}"]`);
    if (!node) return;
    const idx = tl.seqs.indexOf(seq);
    const prev = idx > 0 ? tl.msgs.get(tl.seqs[idx - 1]) : null;
    const parts = this.renderMessage(tl.msgs.get(seq), prev);
    this.app.media.adoptPlayers(node, parts[parts.length - 1]);
    node.replaceWith(parts[parts.length - 1]);
    this.app.media.scheduleSweep();
  }

  // -- scrolling and paging ---------------------------------------------------------------
  onScroll() {
    if (this.chatId === null || !this.win) return;
    const sc = this.scroller;
    const tl = this.timeline(this.chatId);
    if (sc.scrollTop < EDGE_PX) this.pageUp(tl);
    else if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < EDGE_PX) this.pageDown(tl);
    if (this.isAtBottom() && tl.atLatest && this.win.hi === tl.last()) {
      $("#jump-latest").hidden = true;
      this.app.markRead(this.chatId);
    }
  }

  async pageUp(tl) {
    const idx = tl.seqs.indexOf(this.win.lo);
    if (idx > 0) {
      const lo = tl.seqs[Math.max(0, idx - PAGE)];
      let hi = this.win.hi;
      const count = tl.seqs.filter((s) => s >= lo && s <= hi).length;
      if (count > MAX_RENDERED) hi = tl.seqs[tl.seqs.indexOf(lo) + MAX_RENDERED - 1];
      this.win = { lo, hi };
      tl.trim(lo, hi);
      this.renderWindow();
      return;
    }
    if (!tl.hasOlder || tl.loading || tl.first() === null) return;
    tl.loading = true;
    $("#history-loader").hidden = false;
    const chatId = tl.chatId;
    try {
      const page = await this.session.call("message.history", { chat_id: chatId, before_seq: tl.first(), limit: PAGE });
      page.messages.forEach((m) => tl.put(m));
      tl.hasOlder = page.has_more;
    } catch (err) {
      if (err.code !== "unavailable") toast(errorText(err), { kind: "error" });
    } finally {
      tl.loading = false;
      $("#history-loader").hidden = true;
    }
    if (chatId === this.chatId && tl.seqs.indexOf(this.win.lo) > 0) this.pageUp(tl);
    else if (chatId === this.chatId) this.renderWindow();
  }

  async pageDown(tl) {
    const idx = tl.seqs.indexOf(this.win.hi);
    if (idx >= 0 && idx < tl.seqs.length - 1) {
      const hi = tl.seqs[Math.min(tl.seqs.length - 1, idx + PAGE)];
      let lo = this.win.lo;
      const count = tl.seqs.filter((s) => s >= lo && s <= hi).length;
      if (count > MAX_RENDERED) lo = tl.seqs[tl.seqs.indexOf(hi) - MAX_RENDERED + 1];
      this.win = { lo, hi };
      tl.trim(lo, hi);
      this.renderWindow();
      return;
    }
    if (tl.atLatest || tl.loading || tl.last() === null) return;
    tl.loading = true;
    const chatId = tl.chatId;
    try {
      // Sequence numbers are gap-free (G3): the page after `last` is "before last + PAGE + 1".
      const before = tl.last() + PAGE + 1;
      const page = await this.session.call("message.history", { chat_id: chatId, before_seq: before, limit: PAGE });
      page.messages.forEach((m) => tl.put(m));
      const chat = this.app.chats.get(chatId);
      if (!page.messages.length || (chat && tl.last() >= chat.last_seq)) tl.atLatest = true;
    } catch (err) {
      if (err.code !== "unavailable") toast(errorText(err), { kind: "error" });
    } finally {
      tl.loading = false;
    }
    if (chatId === this.chatId) this.pageDown(tl);
  }

  async jumpTo(seq) {
    const chatId = this.chatId;
    const tl = this.timeline(chatId);
    if (!tl.msgs.has(seq)) {
      tl.reset();
      tl.loading = true;
      try {
        const half = Math.floor(PAGE / 2);
        const page = await this.session.call("message.history", { chat_id: chatId, before_seq: seq + half + 1, limit: PAGE });
        page.messages.forEach((m) => tl.put(m));
        tl.hasOlder = page.has_more;
        const chat = this.app.chats.get(chatId);
        tl.atLatest = !!chat && tl.last() >= chat.last_seq;
      } catch (err) {
        toast(errorText(err), { kind: "error" });
      } finally {
        tl.loading = false;
      }
      if (chatId !== this.chatId) return;
    }
    const idx = tl.seqs.indexOf(seq);
    if (idx < 0) return;
    this.win = {
      lo: tl.seqs[Math.max(0, idx - PAGE)],
      hi: tl.seqs[Math.min(tl.seqs.length - 1, idx + PAGE)],
    };
    this.renderWindow({ center: seq });
  }

  async jumpToLatest() {
    const tl = this.timeline(this.chatId);
    if (!tl.atLatest) {
      await this.loadLatest(this.chatId);
    } else {
      this.win = null;
      this.renderWindow({ bottom: true });
    }
    this.app.markRead(this.chatId);
  }

  // -- live events ------------------------------------------------------------------------
  onMessage(msg) {
    // The server moves a sender's read pointer to their own text message without a chat.read event.
    const d = this.details.get(msg.chat_id);
    const sender = msg.kind !== "system" ? d?.members.find((m) => m.user_id === msg.sender_id) : null;
    if (sender) sender.read_seq = Math.max(sender.read_seq, msg.seq);
    const tl = this.timelines.get(msg.chat_id);
    if (!tl) return;
    if (tl.loading) {
      // The history page in flight may predate this message: keep it and merge it afterwards.
      (tl.liveDuringLoad ||= []).push(msg);
      return;
    }
    if (!tl.atLatest) return; // the segment does not reach the end: the jump button fetches it
    const chat = this.app.chats.get(msg.chat_id);
    if (tl.last() !== null && msg.seq > tl.last() + 1 && !tl.msgs.has(msg.seq - 1)) {
      // A gap (should not happen with resume); drop the cache so the next open reloads.
      tl.atLatest = false;
      if (msg.chat_id === this.chatId) this.loadLatest(msg.chat_id);
      return;
    }
    tl.put(msg);
    if (chat) this.app.cacheTimeline(tl);
    if (msg.chat_id !== this.chatId) {
      tl.trim(msg.seq, msg.seq);
      return;
    }
    const wasBottom = this.isAtBottom();
    const showing = this.win && (this.win.hi === msg.seq - 1 || this.win.hi === null || this.win.hi >= msg.seq - 1);
    if (showing) {
      // The same message can come twice (its event, then the send's answer): never move back.
      this.win.hi = this.win.hi === null ? msg.seq : Math.max(this.win.hi, msg.seq);
      const count = tl.seqs.filter((s) => s >= this.win.lo && s <= this.win.hi).length;
      if (count > MAX_RENDERED && wasBottom) this.win.lo = tl.seqs[tl.seqs.length - MAX_RENDERED];
      if (this.win.lo === null) this.win.lo = msg.seq;
    }
    if (this.win?.lo != null) tl.trim(this.win.lo, this.win.hi);
    const mine = msg.sender_id === this.me();
    this.requestRender({ bottom: wasBottom || mine });
    if (!wasBottom && !mine) $("#jump-latest").hidden = false;
    if (msg.kind === "system" && msg.chat_id === this.chatId) this.loadDetail(msg.chat_id);
  }

  onUpdate(chatId, seq, change) {
    const tl = this.timelines.get(chatId);
    const msg = tl?.msgs.get(seq);
    if (!msg) return;
    Object.assign(msg, change);
    if (chatId === this.chatId) this.patch(seq);
  }

  onRead(payload) {
    const d = this.details.get(payload.chat_id);
    if (d) {
      const mb = d.members.find((m) => m.user_id === payload.user_id);
      if (mb) mb.read_seq = Math.max(mb.read_seq, payload.seq);
    }
    if (payload.chat_id === this.chatId) this.refreshCounters();
  }

  onMembers(payload) {
    if (this.details.has(payload.chat_id)) {
      if (payload.left?.includes(this.me())) this.details.delete(payload.chat_id);
      else this.loadDetail(payload.chat_id);
    }
  }

  onTyping(payload) {
    if (payload.user_id === this.me()) return;
    let m = this.typing.get(payload.chat_id);
    if (!m) { m = new Map(); this.typing.set(payload.chat_id, m); }
    if (payload.typing) {
      const d = this.details.get(payload.chat_id);
      const name = d?.members.find((x) => x.user_id === payload.user_id)?.display_name || "";
      m.set(payload.user_id, { name, until: Date.now() + 6000 });
    } else {
      m.delete(payload.user_id);
    }
    if (payload.chat_id === this.chatId) this.renderTyping();
  }

  clearTypingOf(chatId, userId) {
    this.typing.get(chatId)?.delete(userId);
    if (chatId === this.chatId) this.renderTyping();
  }

  renderTyping() {
    const box = $("#typing");
    const m = this.typing.get(this.chatId);
    const now = Date.now();
    const names = m ? [...m.values()].filter((x) => x.until > now).map((x) => x.name) : [];
    const text = names.length === 0 ? "" : names.length === 1 ? t("chat.typing_one", { name: names[0] })
      : t("chat.typing_many", { n: names.length });
    if (box.textContent !== text) box.textContent = text;
  }

  sendTyping(on = true) {
    if (this.chatId === null || !this.session.live) return;
    const now = Date.now();
    if (on && (!this.composer.value || now - this.typingSentAt < 3000)) return;
    if (!on && !this.typingSentAt) return;
    this.typingSentAt = on ? now : 0;
    this.session.call("typing.set", { chat_id: this.chatId, typing: on }, { wait: 0 }).catch(() => {});
  }

  // -- composing --------------------------------------------------------------------------
  autosize() {
    const c = this.composer;
    c.style.height = "auto";
    c.style.height = `${Math.min(c.scrollHeight, 160)}px`;
  }

  async submit() {
    const text = this.composer.value;
    if (!text.trim() || this.chatId === null) return;
    const chatId = this.chatId;
    $("#compose-error").textContent = "";
    const refused = this.app.e2ee.refusal(chatId);
    if (refused) {
      $("#compose-error").textContent = refused; // the text stays in the composer
      return;
    }
    if (this.editing !== null) {
      const seq = this.editing;
      try {
        const msg = await this.session.call("message.edit", await this.app.e2ee.editParams(chatId, seq, text));
        this.onUpdate(chatId, seq, msg);
        this.composer.value = "";
        this.cancelContext();
      } catch (err) {
        $("#compose-error").textContent = errorText(err);
      }
      this.autosize();
      return;
    }
    const mentions = this.collectMentions(text);
    const replyTo = this.reply;
    this.composer.value = "";
    this.autosize();
    this.cancelContext();
    this.sendTyping(false);
    this.app.drafts.delete(chatId);
    await this.session.send(chatId, text, { replyTo, mentions });
  }

  collectMentions(text) {
    const d = this.details.get(this.chatId);
    if (!d || d.kind === "direct") return [];
    const ids = [];
    for (const mb of d.members) {
      if (mb.user_id !== this.me() && text.includes(`@${mb.display_name}`)) ids.push(mb.user_id);
    }
    return ids;
  }

  updateMentionSuggest() {
    const box = $("#mention-suggest");
    const d = this.details.get(this.chatId);
    const c = this.composer;
    const before = c.value.slice(0, c.selectionStart);
    const m = /(^|\s)@([^\s@]*)$/.exec(before);
    if (!m || !d || d.kind === "direct") { box.hidden = true; return; }
    const q = m[2].toLowerCase();
    const hits = d.members.filter((mb) => mb.user_id !== this.me() && mb.display_name.toLowerCase().includes(q))
      .slice(0, 6);
    if (!hits.length) { box.hidden = true; return; }
    box.replaceChildren(...hits.map((mb, i) => el(`div.suggest${i === 0 ? ".active" : ""}`, {
      role: "option", "aria-selected": i === 0 ? "true" : "false", dataset: { name: mb.display_name },
      onmousedown: (ev) => { ev.preventDefault(); this.insertMention(mb.display_name); },
    }, avatar(mb.display_name, mb.user_id, "tiny"), el("span", { text: mb.display_name }))));
    box.hidden = false;
  }

  handleMentionKeys(ev) {
    const box = $("#mention-suggest");
    if (box.hidden) return false;
    const items = [...box.children];
    const idx = items.findIndex((x) => x.classList.contains("active"));
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const next = (idx + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items.forEach((x, i) => { x.classList.toggle("active", i === next); x.setAttribute("aria-selected", String(i === next)); });
      return true;
    }
    if (ev.key === "Enter" || ev.key === "Tab") {
      ev.preventDefault();
      this.insertMention(items[Math.max(0, idx)].dataset.name);
      return true;
    }
    if (ev.key === "Escape") {
      ev.preventDefault();
      box.hidden = true;
      return true;
    }
    return false;
  }

  insertMention(name) {
    const c = this.composer;
    const before = c.value.slice(0, c.selectionStart).replace(/@([^\s@]*)$/, `@${name} `);
    const after = c.value.slice(c.selectionStart);
    c.value = before + after;
    c.selectionStart = c.selectionEnd = before.length;
    $("#mention-suggest").hidden = true;
    c.focus();
  }

  lastOwnMessage() {
    const tl = this.timeline(this.chatId);
    for (let i = tl.seqs.length - 1; i >= 0; i--) {
      const m = tl.msgs.get(tl.seqs[i]);
      if (m.sender_id === this.me() && m.kind === "text" && !m.unsent) return m;
    }
    return null;
  }

  setContext(text) {
    const box = $("#compose-context");
    box.hidden = !text;
    $(".compose-context-text", box).textContent = text || "";
  }

  startReply(seq) {
    const m = this.timeline(this.chatId).msgs.get(seq);
    if (!m) return;
    this.editing = null;
    this.reply = seq;
    this.setContext(t("chat.replying_to", { name: m.sender_name, text: previewText(m).slice(0, 80) }));
    this.composer.focus();
  }

  startEdit(seq) {
    const m = this.timeline(this.chatId).msgs.get(seq);
    if (!m) return;
    this.reply = null;
    this.editing = seq;
    this.setContext(t(m.kind === "text" ? "chat.editing" : "chat.editing_caption"));
    this.composer.value = m.text;
    this.autosize();
    this.composer.focus();
  }

  cancelContext() {
    if (this.editing !== null) this.composer.value = "";
    this.reply = null;
    this.editing = null;
    this.setContext(null);
    this.autosize();
  }

  // -- message actions --------------------------------------------------------------------
  async onListClick(ev) {
    const btn = ev.target.closest("[data-act]");
    if (!btn) return;
    const li = btn.closest("li");
    const act = btn.dataset.act;
    if (act === "retry") return this.session.retry(li.dataset.clientId);
    if (act === "discard") return this.session.discard(li.dataset.clientId);
    if (act === "jump") return this.jumpTo(Number(btn.dataset.seq));
    const seq = Number(li.dataset.seq);
    const chatId = this.chatId;
    if (act === "view-media" || act === "download-media") {
      const m = this.timeline(chatId).msgs.get(seq);
      if (!m?.attachment) return;
      if (act === "view-media") return this.app.media.openViewer(m.attachment, m.text);
      return this.app.media.download(m.attachment.blob_id, m.attachment.name);
    }
    try {
      if (act === "reply") this.startReply(seq);
      else if (act === "edit") this.startEdit(seq);
      else if (act === "unsend") {
        if (await confirmDialog(t("message.unsend_confirm"), { ok: t("message.unsend"), danger: true })) {
          await this.session.call("message.unsend", { chat_id: chatId, seq });
          this.onUpdate(chatId, seq, { unsent: true, text: "", reactions: {} });
        }
      } else if (act === "react-menu") this.openReactMenu(btn, seq);
      else if (act === "toggle-react" || act === "react") {
        const emoji = btn.dataset.emoji;
        const msg = this.timeline(chatId).msgs.get(seq);
        const on = !(msg.reactions?.[emoji] || []).includes(this.me());
        const reactions = await this.session.call("message.react", { chat_id: chatId, seq, emoji, on });
        this.onUpdate(chatId, seq, { reactions });
      }
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  openReactMenu(anchor, seq) {
    document.querySelector(".react-menu")?.remove();
    const menu = el("div.react-menu", { role: "menu", "aria-label": t("message.react") });
    for (const emoji of QUICK_REACTIONS) {
      menu.append(el("button", { type: "button", role: "menuitem", dataset: { act: "react", emoji }, text: emoji }));
    }
    const close = () => { menu.remove(); document.removeEventListener("keydown", onKey, true); };
    const onKey = (ev) => { if (ev.key === "Escape") { ev.stopPropagation(); close(); anchor.focus(); } };
    document.addEventListener("keydown", onKey, true);
    menu.addEventListener("click", () => setTimeout(close, 0));
    menu.addEventListener("focusout", (ev) => { if (!menu.contains(ev.relatedTarget)) close(); });
    anchor.closest(".msg-body").append(menu);
    menu.querySelector("button").focus();
    void seq;
  }

  openChatSearch() {
    const d = dialog("tpl-chat-search");
    const form = d.node.querySelector("form");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const q = form.q.value.trim();
      const out = $(".search-hits", form);
      const errBox = $(".form-error", form);
      errBox.textContent = "";
      if (!q) return;
      try {
        const chatId = this.chatId;
        const hits = this.app.e2ee.isE2ee(chatId) ? await this.app.e2ee.search(q, { chatId })
          : await this.session.call("message.search", { query: q, chat_id: chatId, limit: 50 });
        out.replaceChildren(...hits.map((h) => el("li", {}, el("button.hit", {
          type: "button", onclick: () => { d.close(); this.jumpTo(h.seq); },
        }, el("span.hit-text", { text: hitText(h) }), el("span.muted.small", { text: formatTime(h.created_at) })))));
        if (!hits.length) out.replaceChildren(el("li.muted", { text: t("search.none") }));
      } catch (err) {
        errBox.textContent = errorText(err);
      }
    });
  }
}
