// dari web client: boot, sign-in, the chat list, friends, settings, live events, notifications.

import { Boards } from "./boards.js";
import { Calls } from "./calls.js";
import { ChatView } from "./chat.js";
import { Devices, phoneRegion } from "./devices.js";
import { Invites } from "./invites.js";
import { GuestBoards, parseLink } from "./guest_boards.js";
import { DiagPanel } from "./diag_panel.js";
import { E2ee } from "./e2ee.js";
import { E2eeApp } from "./e2ee_app.js";
import { LANGUAGES, apply, detectLanguage, formatShort, language, setLanguage, t } from "./i18n.js";
import { Media, hitText, previewText } from "./media.js";
import { LINK_PREFIX } from "./relays.js";
import { DariError, Session } from "./session.js";
import { Stickers } from "./stickers.js";
import { Stories } from "./stories.js";
import { shownName } from "./systemline.js";
import { $, $$, avatar, confirmDialog, dialog, el, errorText, setBusy, toast } from "./ui.js";
import { VoiceRecorder } from "./voice.js";

const CACHE_KEY = "dari.cache";

class App {
  constructor() {
    this.session = new Session();
    this.chats = new Map(); // chat_id -> summary (chat.list)
    this.friends = [];
    this.presence = new Map();
    this.pending = new Map(); // client_id -> outbox item (this user's)
    this.drafts = new Map();
    this.quoteCache = new Map();
    this.serverInfo = null;
    this.tab = "chats";
    this.loaded = false;
    this.chat = null;
    this._readInFlight = new Map();
    this._readAgain = new Set();
  }

  // -- boot -------------------------------------------------------------------------------
  async boot() {
    await setLanguage(detectLanguage());
    this.fillLanguageSelects();
    this.bindStatic();
    this.media = new Media(this);
    this.e2ee = new E2eeApp(this); // before any call: it decrypts what E2EE chats bring
    this.stickers = new Stickers(this);
    this.chat = new ChatView(this);
    this.stories = new Stories(this);
    this.boards = new Boards(this);
    this.devices = new Devices(this);
    this.invites = new Invites(this);
    this.invites.bind();
    this.guest = new GuestBoards(this);
    this.media.bindComposer();
    this.voice = new VoiceRecorder(this);
    this.voice.bind();
    this.calls = new Calls(this);
    this.calls.bind();
    this.stickers.bind();
    this.bindSession();
    this.diag = new DiagPanel(this.session); // why the connection fails, and what the page does about it
    const cached = this.readCache();
    if (this.session.token && cached?.user) {
      // Show the last known state at once (also offline); the session refreshes it.
      this.session.user = cached.user;
      await this.session.outbox.open();
      await this.loadPending();
      this.showApp();
      this.applyCache(cached);
    } else if (!this.session.token) {
      if (this.guest.wants()) this.guest.show(); // a link to a public board: readable without an account
      else this.showAuth();
    }
    await this.session.start();
    this.fetchServerInfo();
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.chat.chatId !== null) this.markRead(this.chat.chatId);
    });
    window.addEventListener("hashchange", () => this.routeFromHash());
    setInterval(() => this.renderChatList(), 60000);
  }

  async fetchServerInfo() {
    try {
      this.serverInfo = await this.session.call("server.info", {}, { wait: 30000 });
    } catch { /* retried on the next connection */ }
  }

  bindSession() {
    const s = this.session;
    s.addEventListener("state", (ev) => this.renderConn(ev.detail));
    s.addEventListener("opened", async (ev) => {
      this.writeCacheUser(ev.detail.user);
      if (ev.detail.first || !this.loaded) await this.loadAll();
      else this.chat.resumeCurrent();
      this.calls.resume();
      if (!this.serverInfo) this.fetchServerInfo();
    });
    s.addEventListener("resync", () => { this.loaded = false; });
    s.addEventListener("relays", () => { if (this.tab === "settings") this.renderRelays(); });
    s.addEventListener("logged-out", (ev) => this.onLoggedOut(ev.detail.reason));
    s.addEventListener("event", (ev) => this.onEvent(ev.detail.name, ev.detail.payload));
    s.addEventListener("outbox.queued", (ev) => { this.pending.set(ev.detail.client_id, ev.detail); this.onPendingChanged(ev.detail.chat_id); });
    s.addEventListener("outbox.failed", (ev) => {
      this.pending.set(ev.detail.client_id, ev.detail);
      this.onPendingChanged(ev.detail.chat_id);
      if (ev.detail.chat_id === this.chat.chatId) $("#compose-error").textContent = errorText(ev.detail.error);
    });
    s.addEventListener("outbox.removed", (ev) => {
      const item = this.pending.get(ev.detail.client_id);
      this.pending.delete(ev.detail.client_id);
      if (item) this.onPendingChanged(item.chat_id);
    });
    s.addEventListener("outbox.sent", (ev) => {
      const { item, message } = ev.detail;
      this.pending.delete(item.client_id);
      this.onMessageNew(message);
    });
  }

  async loadPending() {
    this.pending.clear();
    for (const item of await this.session.queued()) this.pending.set(item.client_id, item);
  }

  pendingFor(chatId) {
    return [...this.pending.values()].filter((p) => p.chat_id === chatId).sort((a, b) => a.order - b.order);
  }

  onPendingChanged(chatId) {
    if (chatId === this.chat.chatId) this.chat.renderWindow({ bottom: this.chat.isAtBottom() });
    this.renderChatList();
  }

  async loadAll() {
    try {
      const [chats, friends] = await Promise.all([
        this.session.call("chat.list"),
        this.session.call("friend.list"),
      ]);
      this.loaded = true;
      this.setChats(chats);
      this.friends = friends;
      this.showApp();
      await this.loadPending();
      this.renderFriends();
      this.renderMe();
      // Rebuild cached timelines: the resume covers the gap, but after a resync they may be stale.
      for (const tl of this.chat.timelines.values()) if (tl.chatId !== this.chat.chatId) tl.atLatest = false;
      if (this.chat.chatId !== null) await this.chat.reloadCurrent();
      else this.routeFromHash();
      this.session.flush();
    } catch (err) {
      if (err.code !== "unavailable" && err.code !== "unauthenticated") toast(errorText(err), { kind: "error" });
    }
  }

  // -- screens ----------------------------------------------------------------------------
  showAuth() {
    document.body.dataset.screen = "auth";
    $("#boot").hidden = true;
    $("#app").hidden = true;
    $("#guest").hidden = true;
    $("#auth").hidden = false;
    const dev = this.defaultDeviceName();
    for (const f of $$("#auth form")) if (!f.device_name.value) f.device_name.value = dev;
    this.switchAuth("login");
  }

  showApp() {
    if (document.body.dataset.screen === "app") return;
    document.body.dataset.screen = "app";
    $("#boot").hidden = true;
    $("#auth").hidden = true;
    $("#guest").hidden = true;
    $("#app").hidden = false;
    this.setTab(this.tab);
    this.renderMe();
  }

  defaultDeviceName() {
    const ua = navigator.userAgent;
    const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom/.test(ua) ? "Chrome"
      : /Safari\//.test(ua) ? "Safari" : "Browser";
    const os = /Windows/.test(ua) ? "Windows" : /Mac OS/.test(ua) ? "macOS" : /Android/.test(ua) ? "Android"
      : /Linux/.test(ua) ? "Linux" : /iPhone|iPad/.test(ua) ? "iOS" : "";
    return t("auth.device_default", { browser, os }).trim();
  }

  onLoggedOut(reason) {
    this.loaded = false;
    this.chats.clear();
    this.friends = [];
    this.pending.clear();
    this.chat.close();
    this.chat.timelines.clear();
    this.chat.details.clear();
    localStorage.removeItem(CACHE_KEY);
    history.replaceState(null, "", "/");
    this.showAuthScreen(reason);
  }

  showAuthScreen(reason) {
    document.body.dataset.screen = "";
    this.showAuth();
    if (reason && reason !== "logged out") $("#auth-error").textContent = t("auth.logged_out_reason", { reason });
    // A fresh connection for the next sign-in.
    this.session._closing = false;
    this.session.reconnects = 0;
    this.session.start();
  }

  switchAuth(mode) {
    for (const m of ["login", "signup", "link"]) {
      $(`#tab-${m}`).setAttribute("aria-selected", String(mode === m));
      $(`#${m}-form`).hidden = mode !== m;
    }
    $("#auth-error").textContent = "";
    if (mode !== "link") this.stopLinkPoll();
    const form = $(`#${mode}-form`);
    (mode === "link" ? form.device_name : form.handle).focus();
  }

  // -- linking this browser from a logged-in device ------------------------------------------
  async onLinkSubmit(ev) {
    ev.preventDefault();
    const form = ev.target;
    const btn = form.querySelector("button[type=submit]");
    $("#auth-error").textContent = "";
    setBusy(btn, true);
    try {
      const res = await this.session.call("device.link_start", { device_name: form.device_name.value.trim(), device_kind: "browser" });
      $("#link-qr").src = res.qr;
      $("#link-code").textContent = res.code;
      $("#link-status").textContent = t("auth.link_waiting");
      $("#link-show").hidden = false;
      this.pollLink(res.secret, res.expires_at);
    } catch (err) {
      $("#auth-error").textContent = errorText(err);
    } finally {
      setBusy(btn, false);
    }
  }

  pollLink(secret, expiresAt) {
    this.stopLinkPoll();
    const tick = async () => {
      try {
        const res = await this.session.call("device.link_poll", { secret });
        if (res.status === "approved") {
          $("#link-show").hidden = true;
          E2ee.expectLink(); // the approving device sends the keys of the encrypted chats
          await this.session.adoptLinked(res);
          return;
        }
        if (res.status === "expired" || Date.now() > expiresAt) {
          $("#link-status").textContent = t("auth.link_expired");
          return;
        }
      } catch (err) {
        $("#link-status").textContent = errorText(err);
      }
      this._linkTimer = setTimeout(tick, 1500);
    };
    this._linkTimer = setTimeout(tick, 1000);
  }

  stopLinkPoll() {
    clearTimeout(this._linkTimer);
    this._linkTimer = null;
  }

  // -- static bindings --------------------------------------------------------------------
  bindStatic() {
    // auth
    const order = ["login", "signup", "link"];
    for (const mode of order) {
      const tab = $(`#tab-${mode}`);
      tab.addEventListener("click", () => this.switchAuth(mode));
      tab.addEventListener("keydown", (ev) => {
        if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
          const step = ev.key === "ArrowRight" ? 1 : order.length - 1;
          const next = $(`#tab-${order[(order.indexOf(mode) + step) % order.length]}`);
          next.focus();
          next.click();
        }
      });
    }
    $("#link-form").addEventListener("submit", (ev) => this.onLinkSubmit(ev));
    $("#login-form").addEventListener("submit", (ev) => this.onAuthSubmit(ev, "login"));
    $("#signup-form").addEventListener("submit", (ev) => this.onAuthSubmit(ev, "signup"));
    for (const sel of $$(".lang-select")) {
      sel.addEventListener("change", () => this.switchLanguage(sel.value));
    }
    // tabs
    for (const b of $$(".rail-btn")) b.addEventListener("click", () => this.setTab(b.dataset.tab));
    // friends
    $("#btn-add-friend").addEventListener("click", () => this.openAddFriend());
    $("#btn-contacts").addEventListener("click", () => this.openContacts());
    $("#friend-filter").addEventListener("input", () => this.renderFriends());
    // chats
    $("#btn-new-chat").addEventListener("click", () => this.openNewChat());
    $("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.runSearch(); });
    $("#search-input").addEventListener("input", () => {
      clearTimeout(this._searchTimer);
      this._searchTimer = setTimeout(() => this.runSearch(), 300);
    });
    $("#search-input").addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.target.value = ""; this.runSearch(); }
    });
    $("#chat-list").addEventListener("click", (ev) => {
      const row = ev.target.closest("[data-chat-id]");
      if (row) this.openChat(Number(row.dataset.chatId));
    });
    // settings
    $("#profile-form").addEventListener("submit", (ev) => this.saveProfile(ev));
    $("#password-form").addEventListener("submit", (ev) => this.changePassword(ev));
    $("#presence-select").addEventListener("change", (ev) => this.setPrivacy(ev.target.value));
    $("#btn-notify").addEventListener("click", () => this.toggleNotifications());
    $("#btn-logout").addEventListener("click", async () => {
      if (await confirmDialog(t("settings.logout_confirm"), { ok: t("settings.logout") })) this.session.logout();
    });
    // keyboard: Esc leaves a chat on narrow screens
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !$("#dialog").open && document.body.classList.contains("in-chat")
        && document.activeElement !== $("#composer")) {
        this.closeChat();
      }
    });
  }

  fillLanguageSelects() {
    for (const sel of $$(".lang-select")) {
      sel.replaceChildren(...LANGUAGES.map((l) => el("option", { value: l.code, text: l.name })));
      sel.value = language();
    }
  }

  async switchLanguage(code) {
    localStorage.setItem("dari.lang", code);
    await setLanguage(code);
    for (const sel of $$(".lang-select")) sel.value = code;
    this.renderConn(this.session.state);
    this.renderChatList();
    this.renderFriends();
    this.renderNotifyButton();
    if (this.chat.chatId !== null) { this.chat.renderHeader(); this.chat.renderWindow(); }
    if (this.tab === "stories") this.stories.show();
    if (this.tab === "boards") this.boards.showPublic();
    for (const f of $$("#auth form")) f.device_name.value = this.defaultDeviceName();
  }

  async onAuthSubmit(ev, mode) {
    ev.preventDefault();
    const form = ev.target;
    const btn = form.querySelector("button[type=submit]");
    const errBox = $("#auth-error");
    errBox.textContent = "";
    const params = Object.fromEntries(new FormData(form).entries());
    params.handle = (params.handle || "").trim().toLowerCase();
    params.device_kind = "browser";
    setBusy(btn, true);
    try {
      if (mode === "signup") await this.session.signup(params);
      else await this.session.login(params);
      form.reset();
    } catch (err) {
      errBox.textContent = errorText(err);
    } finally {
      setBusy(btn, false);
    }
  }

  setTab(tab) {
    this.tab = tab;
    $("#app").dataset.tab = tab;
    for (const b of $$(".rail-btn")) {
      const on = b.dataset.tab === tab;
      b.classList.toggle("active", on);
      if (on) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
    }
    if (tab === "settings") this.loadSettings();
    if (tab === "stories") this.stories.show();
    if (tab === "boards") this.boards.showPublic();
    if (tab === "friends") this.refreshFriends();
  }

  // -- connection state -------------------------------------------------------------------
  renderConn(state) {
    // Which route carries the session is part of the state a person sees (a note in the status bar).
    const route = state === "connected" ? this.session.route : null;
    const label = route ? `${t(`conn.${state}`)} · ${t(`conn.route_${route}`, { id: this.session.relayId ?? "" })}`
      : t(`conn.${state}`);
    const shown = state === "connecting" ? "reconnecting" : state;
    for (const node of $$(".conn, .conn-inline")) {
      node.dataset.state = shown;
      const l = node.querySelector(".conn-label");
      if (l) l.textContent = label;
    }
    $("#conn").setAttribute("aria-label", `${t("conn.title")}: ${label}`);
    const banner = $("#conn-banner");
    if (state === "connected" || state === "logged-out") {
      banner.hidden = true;
    } else {
      banner.hidden = false;
      banner.dataset.state = shown;
      banner.textContent = t(shown === "offline" ? "conn.banner_offline" : "conn.banner_reconnecting");
    }
  }

  // -- events -----------------------------------------------------------------------------
  onEvent(name, p) {
    switch (name) {
      case "message.new": this.onMessageNew(p); break;
      case "message.edited": this.chat.onUpdate(p.chat_id, p.seq, editChange(p, this.chat.timelines.get(p.chat_id)?.msgs.get(p.seq))); this.patchPreview(p); break;
      case "message.unsent": this.chat.onUpdate(p.chat_id, p.seq, { unsent: true, text: "", reactions: {} }); this.patchPreview({ ...p, unsent: true }); break;
      case "message.reaction": this.chat.onUpdate(p.chat_id, p.seq, { reactions: p.reactions }); break;
      case "chat.read": this.onRead(p); break;
      case "chat.members": this.onMembers(p); break;
      case "chat.renamed": {
        const c = this.chats.get(p.chat_id);
        if (c) { c.title = p.title; this.renderChatList(); }
        const d = this.chat.details.get(p.chat_id);
        if (d) d.title = p.title;
        if (p.chat_id === this.chat.chatId) this.chat.renderHeader();
        break;
      }
      case "chat.muted": {
        const c = this.chats.get(p.chat_id);
        if (c) { c.muted = p.muted; this.renderChatList(); }
        if (p.chat_id === this.chat.chatId) this.chat.renderHeader();
        break;
      }
      case "friend.added": this.refreshFriends(); break;
      case "friend.blocked": case "friend.unblocked": this.invites.onEvent(name, p); break;
      case "friend.added_you":
        toast(t("friends.added_you", { name: p.user.display_name }), {
          action: this.friends.some((f) => f.user.user_id === p.user.user_id) ? null
            : { label: t("friends.add_back"), run: () => this.addFriend(p.user.handle).catch((e) => toast(errorText(e), { kind: "error" })) },
        });
        this.refreshFriends();
        break;
      case "profile.updated":
        if (p.user_id === this.session.user?.user_id) {
          Object.assign(this.session.user, p);
          this.renderMe();
        } else {
          const f = this.friends.find((x) => x.user.user_id === p.user_id);
          if (f) { Object.assign(f.user, p); this.renderFriends(); }
        }
        break;
      case "typing": this.chat.onTyping(p); break;
      case "story.liked": case "story.commented": this.stories.onEvent(name, p); break;
      case "board.post": case "board.commented": case "board.rights": this.boards.onEvent(name, p); break;
      case "presence": {
        const prev = this.presence.get(p.user_id) || {};
        this.presence.set(p.user_id, { ...prev, ...p, last_seen_at: p.online ? prev.last_seen_at : Date.now() });
        if (this.chat.chatId !== null) this.chat.renderHeader();
        break;
      }
      case "call.ringing": case "call.accepted": case "call.answered_elsewhere": case "call.signal":
      case "call.left": case "call.missed": case "call.declined": case "call.ended":
        this.calls.onEvent(name, p);
        break;
      case "device.revoked": case "device.added": case "device.renamed": case "device.presence":
        this.devices.onEvent(name, p);
        break;
      default:
        break;
    }
  }

  onMessageNew(msg) {
    const me = this.session.user?.user_id;
    if (msg.client_id && msg.sender_id === me && this.pending.has(msg.client_id)) {
      this.pending.delete(msg.client_id);
    }
    this.chat.clearTypingOf(msg.chat_id, msg.sender_id);
    const c = this.chats.get(msg.chat_id);
    if (!c) {
      this.scheduleChatListReload();
    } else if (msg.seq >= c.last_seq) {
      c.last_seq = msg.seq;
      c.last_message = msg;
      c.last_activity = Math.max(c.last_activity, msg.created_at);
      if (msg.sender_id === me && msg.kind !== "system") c.read_seq = Math.max(c.read_seq, msg.seq);
      c.unread = Math.max(0, c.last_seq - c.read_seq);
    }
    this.chat.onMessage(msg);
    this.renderChatList();
    if (msg.chat_id === this.chat.chatId && this.chat.isAtBottom()) this.markRead(msg.chat_id);
    if (msg.sender_id !== me && msg.kind !== "system") this.notify(msg, c);
  }

  patchPreview(p) {
    const c = this.chats.get(p.chat_id);
    if (c?.last_message && c.last_message.seq === p.seq) {
      Object.assign(c.last_message, p.unsent ? { unsent: true, text: "" } : { text: p.text });
      this.renderChatList();
    }
  }

  onRead(p) {
    const me = this.session.user?.user_id;
    if (p.user_id === me) {
      const c = this.chats.get(p.chat_id);
      if (c) {
        c.read_seq = Math.max(c.read_seq, p.seq);
        c.unread = Math.max(0, c.last_seq - c.read_seq);
        this.renderChatList();
      }
    }
    this.chat.onRead(p);
  }

  onMembers(p) {
    const me = this.session.user?.user_id;
    if (p.left?.includes(me)) {
      this.chats.delete(p.chat_id);
      this.chat.timelines.delete(p.chat_id);
      if (this.chat.chatId === p.chat_id) this.closeChat();
      this.renderChatList();
    } else {
      this.scheduleChatListReload();
    }
    this.chat.onMembers(p);
  }

  scheduleChatListReload() {
    clearTimeout(this._listTimer);
    this._listTimer = setTimeout(async () => {
      try {
        this.setChats(await this.session.call("chat.list"));
      } catch { /* next event or reconnect retries */ }
    }, 150);
  }

  // -- read state -------------------------------------------------------------------------
  // Move my read pointer to the end of the chat. One call in flight per chat; messages that
  // arrive meanwhile are covered by one follow-up call, not one call each.
  async markRead(chatId) {
    if (document.visibilityState !== "visible" || !this.session.live) return;
    if (this._readInFlight.has(chatId)) {
      this._readAgain.add(chatId);
      return;
    }
    const c = this.chats.get(chatId);
    const tl = this.chat.timelines.get(chatId);
    if (!c) return;
    const target = Math.max(c.last_seq, tl?.atLatest ? tl.last() ?? 0 : 0);
    if (c.read_seq >= target) return;
    this._readInFlight.set(chatId, target);
    try {
      const res = await this.session.call("chat.read", { chat_id: chatId, seq: target }, { wait: 0 });
      const now = this.chats.get(chatId);
      if (now) {
        now.read_seq = Math.max(now.read_seq, res.read_seq);
        now.unread = Math.max(0, now.last_seq - now.read_seq);
        this.renderChatList();
      }
    } catch { /* retried on the next open / message / visibility change */ } finally {
      this._readInFlight.delete(chatId);
    }
    if (this._readAgain.delete(chatId) && chatId === this.chat.chatId && this.chat.isAtBottom()) {
      this.markRead(chatId);
    }
  }

  // -- chat list --------------------------------------------------------------------------
  setChats(list) {
    this.chats = new Map(list.map((c) => [c.chat_id, c]));
    this.renderChatList();
    this.writeCache();
    if (this.chat.chatId !== null && !this.chats.has(this.chat.chatId) && this.loaded) this.closeChat();
    else if (this.chat.chatId !== null) this.chat.renderHeader();
  }

  sortedChats() {
    return [...this.chats.values()].sort((a, b) => b.last_activity - a.last_activity || b.chat_id - a.chat_id);
  }

  renderChatList() {
    if (this._listRaf) return;
    this._listRaf = requestAnimationFrame(() => {
      this._listRaf = null;
      this.renderChatListNow();
    });
  }

  renderChatListNow() {
    const ul = $("#chat-list");
    if (!ul) return;
    const rows = [];
    let total = 0;
    for (const c of this.sortedChats()) {
      if (!c.muted) total += c.unread;
      const pending = this.pendingFor(c.chat_id);
      const last = c.last_message;
      let preview = "";
      if (pending.length) preview = `🕓 ${pending[pending.length - 1].text}`;
      else if (last) preview = previewText(last);
      const active = c.chat_id === this.chat.chatId;
      const li = el(`li.chat-row${active ? ".active" : ""}`, {});
      const btn = el("button.chat-item", {
        type: "button", dataset: { chatId: c.chat_id }, "aria-current": active ? "true" : null,
        "aria-label": `${c.title}${c.unread ? `, ${t("chats.unread_aria", { n: c.unread })}` : ""}`,
      });
      btn.append(avatar(c.title, c.peer_id ?? c.chat_id, c.kind === "direct" ? "" : "group"));
      const mid = el("span.chat-mid");
      const top = el("span.chat-top", {}, el("span.chat-name", { text: shownName(c.title) }));
      if (c.kind !== "direct") top.append(el("span.chat-count", { text: String(c.member_count) }));
      if (c.kind === "open") top.append(el("span.tag", { text: t("chats.open_badge") }));
      if (c.muted) top.append(el("span.muted-icon", { title: t("chats.muted"), "aria-label": t("chats.muted"), text: "🔕" }));
      mid.append(top, el("span.chat-preview", { text: preview }));
      const right = el("span.chat-right");
      right.append(el("time.chat-time", { text: c.last_activity ? formatShort(c.last_activity) : "" }));
      if (c.unread > 0) {
        right.append(el(`span.badge${c.muted ? ".quiet" : ""}`, { text: c.unread > 999 ? "999+" : String(c.unread) }));
      }
      btn.append(mid, right);
      li.append(btn);
      rows.push(li);
    }
    ul.replaceChildren(...rows);
    $("#chats-empty").hidden = rows.length > 0;
    const badge = $("#total-unread");
    badge.hidden = total === 0;
    badge.textContent = total > 999 ? "999+" : String(total);
    document.title = total ? `(${total}) dari` : "dari";
  }

  routeFromHash() {
    if (this.invites.route(location.hash)) return;
    const link = parseLink(location.hash);
    if (document.body.dataset.screen !== "app") {
      if (link && !this.session.token) this.guest.show();
      return;
    }
    if (link) {
      this.boards.openLink(link.boardId, link.postId);
      history.replaceState(null, "", location.pathname);
      return;
    }
    const m = /^#chat=(\d+)(?:&seq=(\d+))?$/.exec(location.hash);
    if (m) {
      const id = Number(m[1]);
      if (this.chats.has(id) && id !== this.chat.chatId) this.openChat(id, { jumpTo: m[2] ? Number(m[2]) : null });
    } else if (this.chat.chatId !== null && !location.hash) {
      this.closeChat(false);
    }
  }

  async openChat(chatId, { jumpTo = null } = {}) {
    if (this.chat.chatId !== null && this.chat.chatId !== chatId) this.chat.close();
    const want = `#chat=${chatId}`;
    if (location.hash !== want) history.pushState(null, "", want);
    document.body.classList.add("in-chat");
    $("#chat-empty").hidden = true;
    $("#chat").hidden = false;
    this.setTab(this.tab === "friends" ? "friends" : "chats");
    await this.chat.open(chatId, { jumpTo });
    this.invites.renderStrangerBar();
    this.renderChatList();
  }

  closeChat(updateHistory = true) {
    this.chat.close();
    document.body.classList.remove("in-chat");
    $("#chat").hidden = true;
    $("#chat-empty").hidden = false;
    if (updateHistory && location.hash) history.pushState(null, "", location.pathname);
    this.renderChatList();
    $(".chat-row.active button")?.focus();
  }

  // -- search -----------------------------------------------------------------------------
  async runSearch() {
    const q = $("#search-input").value.trim();
    const box = $("#search-results");
    if (!q) {
      box.hidden = true;
      $("#chat-list").hidden = false;
      return;
    }
    try {
      // The server searches plaintext chats; this device's index covers the E2EE ones it decrypted.
      const [remote, local] = await Promise.all([this.session.call("message.search", { query: q, limit: 50 }),
        this.e2ee.search(q)]);
      const hits = [...remote, ...local].sort((a, b) => b.created_at - a.created_at).slice(0, 50);
      if ($("#search-input").value.trim() !== q) return;
      box.replaceChildren(el("h3.small-head", { text: t("search.results", { n: hits.length }) }));
      const ul = el("ul.plain-list");
      for (const h of hits) {
        ul.append(el("li", {}, el("button.hit", { type: "button", onclick: () => this.openChat(h.chat_id, { jumpTo: h.seq }) },
          el("span.hit-head", {}, el("strong", { text: h.chat_title }), el("time.muted.small", { text: formatShort(h.created_at) })),
          el("span.hit-text", { text: hitText(h) }))));
      }
      if (!hits.length) ul.append(el("li.muted.pad", { text: t("search.none") }));
      box.append(ul);
      box.hidden = false;
      $("#chat-list").hidden = true;
    } catch (err) {
      box.replaceChildren(el("p.form-error", { role: "alert", text: errorText(err) }));
      box.hidden = false;
    }
  }

  // -- friends ----------------------------------------------------------------------------
  async refreshFriends() {
    if (!this.session.user || !this.loaded) return;
    try {
      this.friends = await this.session.call("friend.list");
      this.renderFriends();
      if (this.chat.chatId !== null) this.invites.renderStrangerBar();
    } catch { /* shown from cache */ }
  }

  renderMe() {
    const me = this.session.user;
    if (!me) return;
    $("#my-handle").textContent = `@${me.handle}`;
    const pf = $("#profile-form");
    if (document.activeElement?.form !== pf) {
      pf.display_name.value = me.display_name;
      pf.status_message.value = me.status_message || "";
    }
    $("#presence-select").value = me.presence_visibility || "everyone";
    this.renderFriends();
  }

  renderFriends() {
    const body = $("#friends-body");
    if (!body) return;
    const me = this.session.user;
    const q = $("#friend-filter").value.trim().toLowerCase();
    const match = (f) => !q || f.user.display_name.toLowerCase().includes(q) || f.user.handle.includes(q);
    const parts = [];
    if (me && !q) {
      parts.push(el("button.friend-row.me", { type: "button", onclick: () => this.setTab("settings") },
        avatar(me.display_name, me.user_id, "big"),
        el("span.friend-mid", {}, el("span.friend-name", { text: me.display_name }),
          el("span.friend-status", { text: me.status_message || `@${me.handle}` }))));
    }
    const visible = this.friends.filter((f) => !f.hidden && match(f));
    const favs = visible.filter((f) => f.favourite);
    const hidden = this.friends.filter((f) => f.hidden && match(f));
    const section = (titleKey, list) => {
      if (!list.length) return;
      parts.push(el("h3.small-head", { text: `${t(titleKey)} ${list.length}` }));
      const ul = el("ul.plain-list");
      for (const f of list) ul.append(el("li", {}, this.friendRow(f)));
      parts.push(ul);
    };
    section("friends.favourites", favs);
    section("friends.all", visible);
    if (hidden.length) section("friends.hidden", hidden);
    if (!this.friends.length) parts.push(el("p.empty-note", { text: t("friends.empty") }));
    body.replaceChildren(...parts);
  }

  friendRow(f) {
    return el("button.friend-row", { type: "button", onclick: () => this.openProfile(f.user) },
      avatar(f.user.display_name, f.user.user_id),
      el("span.friend-mid", {}, el("span.friend-name", { text: f.user.display_name }),
        el("span.friend-status", { text: f.user.status_message || "" })),
      f.favourite ? el("span.star", { "aria-label": t("friends.favourite"), text: "★" }) : null);
  }

  async addFriend(handle) {
    const friend = await this.session.call("friend.add", { handle });
    if (!this.friends.some((f) => f.user.user_id === friend.user.user_id)) this.friends.push(friend);
    this.renderFriends();
    return friend;
  }

  openAddFriend() {
    const d = dialog("tpl-add-friend");
    const form = $("#add-friend-form", d.node);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btn = form.querySelector("button[type=submit]");
      const errBox = $(".form-error", form);
      errBox.textContent = "";
      setBusy(btn, true);
      try {
        const friend = await this.addFriend(form.handle.value.trim());
        d.close();
        toast(t("friends.added", { name: friend.user.display_name }));
        this.openProfile(friend.user);
      } catch (err) {
        errBox.textContent = errorText(err);
      } finally {
        setBusy(btn, false);
      }
    });
  }

  openContacts() {
    const d = dialog("tpl-contacts");
    const form = d.node.querySelector("form");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const errBox = $(".form-error", form);
      const out = $(".contact-results", form);
      errBox.textContent = "";
      try {
        const phones = form.phones.value.split(/[\n,;]+/).map((s) => s.trim()).filter((s) => s.length >= 3);
        if (!phones.length) throw new DariError("invalid_params", t("friends.contacts_none_given"));
        // Numbers like 010-1234-5678 need their country: the server reads them with libphonenumber.
        const users = await this.session.call("friend.find_by_phones", { phones, region: phoneRegion() });
        out.replaceChildren(...users.map((u) => el("li.row-between", {},
          el("span", {}, avatar(u.display_name, u.user_id, "tiny"), " ", u.display_name, el("span.muted.small", { text: ` @${u.handle}` })),
          el("button.secondary.small", { type: "button", text: t("friends.add_button"), onclick: async (e) => {
            try { await this.addFriend(u.handle); e.target.disabled = true; } catch (err) { errBox.textContent = errorText(err); }
          } }))));
        if (!users.length) out.replaceChildren(el("li.muted", { text: t("friends.contacts_none") }));
      } catch (err) {
        errBox.textContent = errorText(err);
      }
    });
  }

  openProfile(user) {
    const d = dialog("tpl-profile");
    const n = d.node;
    const render = () => {
      const f = this.friends.find((x) => x.user.user_id === user.user_id);
      $(".profile-avatar", n).replaceChildren(avatar(user.display_name, user.user_id, "huge"));
      $(".profile-name", n).textContent = user.display_name;
      $(".profile-handle", n).textContent = `@${user.handle}`;
      $(".profile-status", n).textContent = user.status_message || "";
      $(".act-add", n).hidden = !!f;
      for (const cls of [".act-fav", ".act-hide", ".act-remove"]) $(cls, n).hidden = !f;
      if (f) {
        $(".act-fav", n).textContent = t(f.favourite ? "friends.unfavourite" : "friends.favourite");
        $(".act-hide", n).textContent = t(f.hidden ? "friends.unhide" : "friends.hide");
      }
      return f;
    };
    render();
    this.session.call("presence.get", { user_ids: [user.user_id] }).then(([p]) => {
      if (!p) return;
      $(".profile-presence", n).textContent = p.online ? t("presence.online")
        : p.last_seen_at ? t("presence.last_seen", { time: this.relativeTime(p.last_seen_at) }) : "";
    }).catch(() => {});
    const errBox = $(".form-error", n);
    const guard = (fn) => async () => {
      errBox.textContent = "";
      try { await fn(); } catch (err) { errBox.textContent = errorText(err); }
    };
    $(".act-chat", n).addEventListener("click", guard(async () => {
      const chat = await this.session.call("chat.open_direct", { user_id: user.user_id, e2ee: true });
      d.close();
      if (!this.chats.has(chat.chat_id)) this.setChats(await this.session.call("chat.list"));
      this.setTab("chats");
      await this.openChat(chat.chat_id);
    }));
    $(".act-add", n).addEventListener("click", guard(async () => { await this.addFriend(user.handle); render(); }));
    $(".act-stories", n).addEventListener("click", () => { d.close(); this.setTab("stories"); this.stories.openProfile(user); });
    $(".act-fav", n).addEventListener("click", guard(async () => {
      const f = render();
      const upd = await this.session.call("friend.update", { user_id: user.user_id, favourite: !f.favourite });
      Object.assign(f, upd);
      this.renderFriends();
      render();
    }));
    $(".act-hide", n).addEventListener("click", guard(async () => {
      const f = render();
      const upd = await this.session.call("friend.update", { user_id: user.user_id, hidden: !f.hidden });
      Object.assign(f, upd);
      this.renderFriends();
      render();
    }));
    $(".act-remove", n).addEventListener("click", guard(async () => {
      await this.session.call("friend.remove", { user_id: user.user_id });
      this.friends = this.friends.filter((x) => x.user.user_id !== user.user_id);
      this.renderFriends();
      render();
    }));
    $(".act-block", n).addEventListener("click", guard(async () => {
      if (!(await confirmDialog(t("friends.block_confirm", { name: user.display_name }), { ok: t("friends.block"), danger: true }))) return;
      await this.session.call("friend.block", { user_id: user.user_id });
      toast(t("friends.blocked_done", { name: user.display_name }));
      this.refreshFriends();
    }));
  }

  // -- new chat / chat info ---------------------------------------------------------------
  friendPicker(container, exclude = new Set()) {
    const list = this.friends.filter((f) => !exclude.has(f.user.user_id));
    container.replaceChildren(...list.map((f) => el("label.pick", {},
      el("input", { type: "checkbox", value: f.user.user_id }),
      avatar(f.user.display_name, f.user.user_id, "tiny"), el("span", { text: f.user.display_name }))));
    if (!list.length) container.append(el("p.muted.small", { text: t("chats.no_friends_to_pick") }));
  }

  openNewChat(mode = "group") {
    const d = dialog("tpl-new-chat");
    const n = d.node;
    const show = (m) => {
      for (const b of $$("[data-mode]", n)) b.setAttribute("aria-selected", String(b.dataset.mode === m));
      for (const f of $$("form[data-form]", n)) f.hidden = f.dataset.form !== m;
      $(`form[data-form=${m}] input`, n)?.focus();
    };
    for (const b of $$("[data-mode]", n)) b.addEventListener("click", () => show(b.dataset.mode));
    this.friendPicker($(".pick-list", n));
    show(mode);
    const submit = (form, fn) => form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btn = form.querySelector("button[type=submit]");
      const errBox = $(".form-error", form);
      errBox.textContent = "";
      setBusy(btn, true);
      try {
        const chat = await fn(form);
        d.close();
        this.setChats(await this.session.call("chat.list"));
        this.setTab("chats");
        await this.openChat(chat.chat_id);
      } catch (err) {
        errBox.textContent = errorText(err);
      } finally {
        setBusy(btn, false);
      }
    });
    submit($("form[data-form=group]", n), (form) => this.session.call("chat.create_group", {
      title: form.title.value.trim(), e2ee: true,
      member_ids: $$("input[type=checkbox]:checked", form).map((c) => Number(c.value)),
    }));
    submit($("form[data-form=join]", n), (form) => this.session.call("chat.join_open", {
      link_code: form.link_code.value.trim(), nickname: form.nickname.value.trim(),
    }));
    submit($("form[data-form=open]", n), (form) => this.session.call("chat.create_open", {
      title: form.title.value.trim(), nickname: form.nickname.value.trim(), ...this.invites.listingParams(form),
    }));
  }

  async openChatInfo(chatId) {
    let detail;
    try {
      detail = await this.session.call("chat.get", { chat_id: chatId });
    } catch (err) {
      toast(errorText(err), { kind: "error" });
      return;
    }
    const me = this.session.user.user_id;
    const d = dialog("tpl-chat-info");
    const n = d.node;
    const errBox = $(".form-error", n);
    const summary = this.chats.get(chatId);
    $(".info-title", n).textContent = detail.title;
    if (detail.link_code) {
      $(".info-code", n).hidden = false;
      $(".info-code code", n).textContent = detail.link_code;
    }
    this.invites.decorateChatInfo(n, detail, errBox);
    const isOwner = detail.owner_id === me;
    if (detail.kind === "group" || (detail.kind === "open" && isOwner)) {
      const rf = $(".rename-form", n);
      rf.hidden = false;
      rf.title.value = detail.title;
      rf.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try { await this.session.call("chat.rename", { chat_id: chatId, title: rf.title.value.trim() }); d.close(); }
        catch (err) { errBox.textContent = errorText(err); }
      });
    }
    $(".member-count", n).textContent = String(detail.members.length);
    $(".member-list", n).replaceChildren(...detail.members.map((mb) => el("li.row-between", {},
      el("span.member", {}, avatar(mb.display_name, mb.user_id, "tiny"), el("span", { text: mb.display_name }),
        mb.role === "owner" ? el("span.tag", { text: t("chats.owner") }) : null,
        mb.user_id === me ? el("span.muted.small", { text: ` (${t("chats.you")})` }) : null),
      isOwner && mb.user_id !== me && detail.kind !== "direct" ? el("button.link.small", { type: "button", text: t("chats.remove"),
        onclick: async () => {
          try { await this.session.call("chat.remove_member", { chat_id: chatId, user_id: mb.user_id }); d.close(); }
          catch (err) { errBox.textContent = errorText(err); }
        } }) : null)));
    if (detail.kind === "group") {
      const box = $(".invite-box", n);
      box.hidden = false;
      this.friendPicker($(".pick-list", box), new Set(detail.members.map((m) => m.user_id)));
      $(".invite-btn", box).addEventListener("click", async () => {
        const ids = $$("input[type=checkbox]:checked", box).map((c) => Number(c.value));
        if (!ids.length) return;
        try { await this.session.call("chat.invite", { chat_id: chatId, user_ids: ids }); d.close(); }
        catch (err) { errBox.textContent = errorText(err); }
      });
    }
    const boardBtn = $(".board-btn", n);
    boardBtn.hidden = detail.kind === "direct";
    boardBtn.addEventListener("click", () => { d.close(); this.boards.openChatBoard(chatId, detail.title); });
    const muteBtn = $(".mute-btn", n);
    const muted = summary?.muted ?? detail.muted;
    muteBtn.textContent = t(muted ? "chats.unmute" : "chats.mute");
    muteBtn.addEventListener("click", async () => {
      try {
        await this.session.call("chat.mute", { chat_id: chatId, muted: !muted });
        if (summary) summary.muted = !muted;
        this.renderChatList();
        this.chat.renderHeader();
        d.close();
      } catch (err) { errBox.textContent = errorText(err); }
    });
    $(".leave-btn", n).addEventListener("click", async () => {
      if (!(await confirmDialog(t("chats.leave_confirm", { title: detail.title }), { ok: t("chats.leave"), danger: true }))) return;
      try {
        await this.session.call("chat.leave", { chat_id: chatId });
        this.chats.delete(chatId);
        this.closeChat();
        this.renderChatList();
      } catch (err) { toast(errorText(err), { kind: "error" }); }
    });
  }

  // -- settings ---------------------------------------------------------------------------
  loadSettings() {
    this.renderMe();
    this.renderNotifyButton();
    this.loadDevices();
    this.loadBlocked();
    this.renderRelays();
  }

  // The relays this server vouches for (verified descriptors from relay.list, see relays.js), each
  // with its invite link and QR code, to pass on to someone whose connection to the server is blocked.
  renderRelays() {
    const ul = $("#relay-list");
    const items = this.session.relays.verified;
    if (!items.length) {
      ul.replaceChildren(el("li.muted.small", { text: t("settings.relays_none") }));
      return;
    }
    ul.replaceChildren(...items.map(({ d, blob }) => {
      const link = `${LINK_PREFIX}${blob}`;
      const until = new Date(d.expires * 1000).toLocaleDateString(language());
      return el("li.relay-item", { dataset: { relay: d.id } },
        el("div.row-between", {},
          el("span", {}, el("strong", { text: d.id }),
            el("span.muted.small", { text: ` · ${t(`settings.relay_kind_${d.kind || "stream"}`)} · ${t("settings.relay_until", { date: until })}` })),
          el("button.link.small", { type: "button", text: t("settings.relay_copy"), onclick: async () => {
            try { await navigator.clipboard.writeText(link); toast(t("settings.relay_copied")); }
            catch { toast(link); }
          } })),
        el("img.relay-qr", { src: `/relay/qr.svg?d=${encodeURIComponent(blob)}`, width: 256, height: 256,
          alt: t("settings.relay_qr_alt", { id: d.id }) }),
        el("input.relay-link", { type: "text", readOnly: true, value: link, "aria-label": t("settings.relay_link"),
          onfocus: (ev) => ev.target.select() }));
    }));
  }

  loadDevices() {
    return this.devices.load();
  }

  async loadBlocked() {
    const ul = $("#blocked-list");
    try {
      const users = await this.session.call("friend.blocked");
      ul.replaceChildren(...users.map((u) => el("li.row-between", {},
        el("span", {}, avatar(u.display_name, u.user_id, "tiny"), " ", u.display_name),
        el("button.link.small", { type: "button", text: t("settings.unblock"), onclick: async () => {
          try { await this.session.call("friend.unblock", { user_id: u.user_id }); this.loadBlocked(); }
          catch (err) { toast(errorText(err), { kind: "error" }); }
        } }))));
      if (!users.length) ul.replaceChildren(el("li.muted.small", { text: t("settings.none_blocked") }));
    } catch (err) {
      ul.replaceChildren(el("li.form-error", { text: errorText(err) }));
    }
  }

  async saveProfile(ev) {
    ev.preventDefault();
    const form = ev.target;
    const errBox = $(".form-error", form);
    errBox.textContent = "";
    try {
      const me = await this.session.call("account.update_profile", {
        display_name: form.display_name.value.trim(), status_message: form.status_message.value,
      });
      Object.assign(this.session.user, me);
      this.writeCacheUser(this.session.user);
      this.renderMe();
      toast(t("settings.saved"));
    } catch (err) {
      errBox.textContent = errorText(err);
    }
  }

  async changePassword(ev) {
    ev.preventDefault();
    const form = ev.target;
    const errBox = $(".form-error", form);
    errBox.textContent = "";
    try {
      await this.session.call("account.change_password", {
        old_password: form.old_password.value, new_password: form.new_password.value,
      });
      form.reset();
      toast(t("settings.password_changed"));
    } catch (err) {
      errBox.textContent = errorText(err);
    }
  }

  async setPrivacy(value) {
    try {
      const me = await this.session.call("account.set_privacy", { presence_visibility: value });
      Object.assign(this.session.user, me);
      toast(t("settings.saved"));
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  // -- notifications ----------------------------------------------------------------------
  notificationsOn() {
    return "Notification" in window && Notification.permission === "granted"
      && localStorage.getItem("dari.notify") !== "off";
  }

  renderNotifyButton() {
    const b = $("#btn-notify");
    if (!("Notification" in window)) { b.textContent = t("settings.notify_unsupported"); b.disabled = true; return; }
    if (Notification.permission === "denied") { b.textContent = t("settings.notify_denied"); b.disabled = true; return; }
    b.textContent = t(this.notificationsOn() ? "settings.notify_off" : "settings.notify_on");
  }

  async toggleNotifications() {
    if (this.notificationsOn()) {
      localStorage.setItem("dari.notify", "off");
    } else {
      localStorage.removeItem("dari.notify");
      if (Notification.permission !== "granted") await Notification.requestPermission();
    }
    this.renderNotifyButton();
  }

  notify(msg, chat) {
    if (!document.hidden || !this.notificationsOn() || chat?.muted) return;
    try {
      const title = chat && chat.kind !== "direct" ? `${msg.sender_name} · ${chat.title}` : msg.sender_name;
      const n = new Notification(title, { body: previewText(msg).slice(0, 200), tag: `dari-chat-${msg.chat_id}` });
      n.onclick = () => { window.focus(); this.setTab("chats"); this.openChat(msg.chat_id); n.close(); };
    } catch (err) {
      console.warn("notification failed", err);
    }
  }

  // -- offline cache (chat list, user, recent timelines) ----------------------------------
  readCache() {
    try {
      return JSON.parse(localStorage.getItem(CACHE_KEY) || "null");
    } catch {
      return null;
    }
  }

  writeCacheUser(user) {
    const c = this.readCache() || {};
    if (c.user && c.user.user_id !== user.user_id) {
      localStorage.removeItem(CACHE_KEY);
      this.writeCacheUser(user);
      return;
    }
    c.user = user;
    this.saveCache(c);
  }

  writeCache() {
    const c = this.readCache() || {};
    c.user = this.session.user;
    c.chats = this.sortedChats().slice(0, 200);
    this.saveCache(c);
  }

  cacheTimeline(tl) {
    if (!tl.atLatest) return;
    clearTimeout(this._tlTimer);
    this._tlTimer = setTimeout(() => {
      const c = this.readCache() || {};
      c.timelines = c.timelines || {};
      c.timelines[tl.chatId] = { msgs: tl.seqs.slice(-40).map((s) => tl.msgs.get(s)), hasOlder: tl.seqs.length > 40 || tl.hasOlder, at: Date.now() };
      const keys = Object.keys(c.timelines).sort((a, b) => c.timelines[b].at - c.timelines[a].at);
      for (const k of keys.slice(20)) delete c.timelines[k];
      this.saveCache(c);
    }, 500);
  }

  restoreTimeline(tl) {
    const c = this.readCache();
    const saved = c?.timelines?.[tl.chatId];
    if (!saved) return false;
    tl.reset();
    saved.msgs.forEach((m) => tl.put(m));
    tl.hasOlder = saved.hasOlder;
    tl.atLatest = false; // stale until the connection returns
    tl.fromCache = true;
    return true;
  }

  saveCache(c) {
    try {
      localStorage.setItem(CACHE_KEY, JSON.stringify(c));
    } catch { /* quota: the cache is only a convenience */ }
  }

  applyCache(c) {
    if (c.chats) {
      this.chats = new Map(c.chats.map((x) => [x.chat_id, x]));
      this.renderChatList();
    }
    this.renderMe();
    this.routeFromHash();
  }

  relativeTime(ms) {
    const diff = Math.max(0, Date.now() - ms);
    const rtf = new Intl.RelativeTimeFormat(language(), { numeric: "auto" });
    if (diff < 60000) return rtf.format(0, "minute");
    if (diff < 3600000) return rtf.format(-Math.round(diff / 60000), "minute");
    if (diff < 86400000) return rtf.format(-Math.round(diff / 3600000), "hour");
    return rtf.format(-Math.round(diff / 86400000), "day");
  }
}

// What a message.edited event changes; in an E2EE chat it was decrypted (e2ee_app.js) or failed.
function editChange(p, old) {
  const change = { text: p.text, edited_at: p.edited_at };
  if (!p.e2ee) return change;
  Object.assign(change, { e2ee: p.e2ee, e2ee_error: p.e2ee_error || null });
  if (p.e2ee_error) change.kind = "encrypted";
  else if (p.attachment) Object.assign(change, { kind: p.kind, attachment: p.attachment });
  else if (old?.kind === "encrypted") change.kind = "text";
  return change;
}

const app = new App();
window.dari = app; // for debugging from the console and for tests
// The app shell works offline and the page can be installed (sw.js, manifest.webmanifest).
navigator.serviceWorker?.register("/sw.js", { scope: "/" }).catch((err) => console.info("no service worker:", err.message));
app.boot().catch((err) => {
  console.error(err);
  document.body.dataset.screen = "error";
  $("#boot").textContent = String(err);
});
apply();
