// The browser's session: the JavaScript mirror of dari.client (src/dari/client/client.py).
//
//  - one connection carrying JSON frames: a WebSocket to /ws, or HTTP long-poll (longpoll.js) when
//    WebSockets fail to open (proxies that break them, blocks on the upgrade), or a WebSocket to a
//    relay the server vouches for (relays.js) when both fail; request {id, method, params}, response
//    {id, result} | {id, error: {code, message}}, event {event, payload, cursor};
//  - reconnect with jittered back-off, and resume by cursor so that no event is missed or seen twice;
//  - calls made while reconnecting wait for the connection (or fail with code "unavailable");
//  - an outbox (IndexedDB, see outbox.js) drained one message at a time, in order, exactly once.

import { LongPollSocket } from "./longpoll.js";
import { Outbox, newClientId } from "./outbox.js";
import { RelayBook } from "./relays.js";

// Routes in order of preference: "websocket" and "long-poll" to the page's origin, then a WebSocket
// to each relay (see _routes). The session moves down when one fails to open and comes back up
// when a probe of a better one succeeds (resume by cursor: nothing lost, nothing doubled).
const ORIGIN_ROUTES = ["websocket", "long-poll"];
// How often to look for a better route; tests shorten it through localStorage.
const UPGRADE_EVERY_MS = Number(globalThis.localStorage?.getItem("dari.upgrade_ms")) || 30000;
// How often to fetch relay.list while connected (also at the first session of each page load).
const RELAYS_EVERY_MS = Number(globalThis.localStorage?.getItem("dari.relays_ms")) || 3600000;

// Errors after which a queued message will never be accepted: keep it as failed, do not retry.
const PERMANENT = new Set(["forbidden", "blocked", "limit_exceeded", "invalid_params", "not_found", "conflict"]);
const PRE_AUTH = new Set(["server.info", "account.signup", "account.login", "session.open", "device.link_start",
  "device.link_poll"]);

export class DariError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details || {};
  }
}

export class Session extends EventTarget {
  constructor({ url, storage = globalThis.localStorage } = {}) {
    super();
    const loc = globalThis.location;
    this.url = url || `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
    this.httpBase = this.url.replace(/^ws/, "http").replace(/\/ws$/, "");
    this.routeIndex = 0;
    this.route = null; // the route carrying the session now: "websocket" | "long-poll" | "relay"
    this.relayId = null; // with route "relay": which one
    this.relays = new RelayBook(storage);
    this._relaysAt = 0;
    this.storage = storage;
    this.token = storage.getItem("dari.token") || null;
    this.user = null;
    this.deviceId = null;
    this.cursor = null;
    this.state = "offline"; // connected | connecting | reconnecting | offline | logged-out
    this.live = false;
    this.outbox = new Outbox();
    this.reconnects = 0;
    this._ws = null;
    this._ids = 1;
    this._pending = new Map();
    this._waiters = [];
    this._authed = false;
    this._delay = 300;
    this._timer = null;
    this.nextRetryAt = 0; // when the next connection attempt starts (the page shows it while reconnecting)
    this._closing = false;
    this._flushing = false;
    // Set by the app for E2EE (e2ee_app.js): decode call results and events, encrypt outbox sends.
    this.decodeResult = null;
    this.decodeEvent = null;
    this.encodeSend = null;
    this.onE2eeRequired = null;
    this._lastOrder = 0;
    this._lastFrameAt = 0;
    this._heartbeat = null;
    this._onOnline = () => { if (!this._ws) this._connectNow(); else this._setState(this.state); };
    this._onOffline = () => { this._setState("offline"); if (this._ws) this._ws.close(); };
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
  }

  // -- events to the app ------------------------------------------------------------------
  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _setState(state) {
    if (state !== "logged-out" && globalThis.navigator && navigator.onLine === false) state = "offline";
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state);
  }

  // -- connection -------------------------------------------------------------------------
  async start() {
    await this.outbox.open();
    await this.relays.check(); // kept descriptors are re-verified before any is used
    this._closing = false;
    this._connectNow();
    if (!this._heartbeat) this._heartbeat = setInterval(() => this._probe(), 15000);
    if (!this._upgrader) this._upgrader = setInterval(() => this._tryBetterRoute(), UPGRADE_EVERY_MS);
    if (!this._relayTimer) this._relayTimer = setInterval(() => this.refreshRelays(), RELAYS_EVERY_MS);
    // A page started offline stays "offline" (no change, so no event): say so once all the same.
    this._emit("state", this.state);
  }

  // Every route in order: the origin's two, then one per address of each usable "https" relay.
  _routes() {
    return [{ kind: "websocket", url: this.url }, { kind: "long-poll", url: this.httpBase },
      ...this.relays.wsRoutes()];
  }

  // Fetch relay.list over the current session and keep what verifies (relays.js). A relay that
  // was revoked while carrying the session is left at once.
  async refreshRelays() {
    const ws = this._ws;
    if (!this._authed || !ws || ws.readyState !== WebSocket.OPEN) return;
    const current = ws._routeKey;
    try {
      const listing = await this._callOn(ws, "relay.list", {});
      this._relaysAt = Date.now();
      await this.relays.apply(listing, { fromOrigin: ws._route !== "relay" });
    } catch (err) {
      console.warn("relay.list failed", err);
      return;
    }
    const routes = this._routes();
    const i = routes.findIndex((r) => `${r.kind} ${r.url}` === current);
    if (i >= 0) {
      this.routeIndex = i;
    } else if (ws === this._ws) {
      this.routeIndex = 0;
      this._abandon(ws); // its relay was withdrawn: start again from the origin
    }
    this._emit("relays", this.relays.verified);
  }

  // On a fallback route, see whether a better one answers again (the WebSocket, then, from a relay,
  // long-poll); if one does, move the session there.
  async _tryBetterRoute() {
    if (this.routeIndex === 0 || this._upgrading || !this._ws || this._ws.readyState !== WebSocket.OPEN) return;
    this._upgrading = true;
    try {
      for (let i = 0; i < Math.min(this.routeIndex, ORIGIN_ROUTES.length); i++) {
        if (!(await this._probeRoute(ORIGIN_ROUTES[i]))) continue;
        if (this.routeIndex <= i || !this._ws) return;
        this.routeIndex = i;
        this._abandon(this._ws); // reconnects on the better route and resumes by cursor
        return;
      }
    } finally {
      this._upgrading = false;
    }
  }

  // Move up now if a better route answers (diagnose.js found the WebSocket working again).
  upgradeNow() {
    return this._tryBetterRoute();
  }

  // Does this origin route carry a request now? Opening is not enough (a middlebox may accept and
  // then kill the socket): it must answer a ping.
  _probeRoute(kind) {
    return new Promise((resolve) => {
      let probe;
      try {
        probe = kind === "websocket" ? new WebSocket(this.url) : new LongPollSocket(this.httpBase);
      } catch {
        resolve(false);
        return;
      }
      const done = (ok) => {
        clearTimeout(timer);
        probe.onopen = probe.onmessage = probe.onclose = null;
        try { probe.close(); } catch { /* gone */ }
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), 5000);
      probe.onopen = () => probe.send(JSON.stringify({ id: 1, method: "session.ping", params: {} }));
      probe.onmessage = (ev) => {
        let reply = null;
        try { reply = JSON.parse(ev.data); } catch { /* not ours */ }
        if (reply && reply.id === 1 && reply.result) done(true);
      };
      probe.onclose = () => done(false);
      probe.onerror = () => {};
    });
  }

  // A connection that silently died (a dropped NAT mapping, a middlebox eating packets) is only
  // noticed by sending: after 25 s of silence, ask something small; no answer in 10 s means dead.
  async _probe() {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || Date.now() - this._lastFrameAt < 25000) return;
    try {
      await this._callOn(ws, "server.info", {}, 10000);
    } catch (err) {
      if (err.code === "unavailable" && ws === this._ws) this._abandon(ws);
    }
  }

  _connectNow() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._closing || this._ws) return;
    this._setState(this.reconnects ? "reconnecting" : "connecting");
    let ws;
    const routes = this._routes();
    if (this.routeIndex >= routes.length) this.routeIndex = 0;
    const route = routes[this.routeIndex];
    try {
      ws = route.kind === "long-poll" ? new LongPollSocket(this.httpBase) : new WebSocket(route.url);
    } catch (err) {
      this._nextRoute();
      this._scheduleReconnect();
      return;
    }
    ws._route = route.kind;
    ws._relay = route.id || null;
    ws._routeKey = `${route.kind} ${route.url}`;
    this._ws = ws;
    // A blackholed connection never opens nor fails: give up on it and try again.
    const timer = setTimeout(() => { if (ws.readyState === WebSocket.CONNECTING) this._abandon(ws); }, 8000);
    ws.onopen = () => { clearTimeout(timer); this._lastFrameAt = Date.now(); this._opened(ws); };
    ws.onmessage = (ev) => this._frame(ws, ev.data);
    ws.onclose = (ev) => this._closed(ws, ev);
    ws.onerror = () => {};
  }

  async _opened(ws) {
    if (ws !== this._ws) return;
    if (!this.token) {
      this._ready(ws);
      return;
    }
    try {
      await this._openSession(ws);
    } catch (err) {
      if (err.code === "unauthenticated") {
        this._loggedOut(err.message);
        return;
      }
      ws.close();
    }
  }

  async _openSession(ws) {
    let info;
    try {
      info = await this._callOn(ws, "session.open", { token: this.token, cursor: this.cursor ?? undefined });
    } catch (err) {
      if (err.code !== "resync_needed") throw err;
      // Away longer than the server keeps events: start from now, and the app reloads everything.
      info = await this._callOn(ws, "session.open", { token: this.token });
      this.cursor = info.cursor;
      this._emit("resync", {});
    }
    const first = this.user === null;
    this.user = info.user;
    this.deviceId = info.device_id;
    if (this.cursor === null) this.cursor = info.cursor;
    this._ready(ws);
    this._emit("opened", { first, user: info.user });
    this.flush();
    if (first || Date.now() - this._relaysAt > RELAYS_EVERY_MS) this.refreshRelays();
  }

  _nextRoute() {
    this.routeIndex = (this.routeIndex + 1) % this._routes().length;
  }

  _ready(ws) {
    if (ws !== this._ws) return;
    ws._wasOpen = true; // it carried a session: a route that works, not one that opens and dies
    this.route = ws._route || "websocket";
    this.relayId = ws._relay || null;
    this._authed = !!this.token;
    this._delay = 300;
    this._setState("connected");
    const waiters = this._waiters;
    this._waiters = [];
    waiters.forEach((w) => w.resolve());
  }

  _abandon(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(); } catch { /* already closing */ }
    this._closed(ws, null);
  }

  _closed(ws, ev) {
    if (ws !== this._ws) return;
    this._ws = null;
    this.route = null;
    this.relayId = null;
    // A route that never carried a session (refused upgrade, blackholed, a socket killed right
    // after opening, a broken proxy): try the next one.
    if (!ws._wasOpen) this._nextRoute();
    this._authed = false;
    this.live = false;
    for (const [, p] of this._pending) p.reject(new DariError("unavailable", "connection lost; retry"));
    this._pending.clear();
    if (ev && ev.code === 4001) {
      this._loggedOut("this device was logged out");
      return;
    }
    if (this._closing) {
      this._setState("offline");
      return;
    }
    this.reconnects += 1;
    this._setState("reconnecting");
    this._emit("disconnected", {});
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closing || this._timer) return;
    const delay = this._delay * (0.5 + Math.random());
    this._delay = Math.min(this._delay * 2, 5000);
    this.nextRetryAt = Date.now() + delay;
    this._timer = setTimeout(() => { this._timer = null; this._connectNow(); }, delay);
  }

  _loggedOut(reason) {
    if (this._loggingOut) reason = "logged out";
    this.token = null;
    this.storage.removeItem("dari.token");
    this._closing = true;
    this._setState("logged-out");
    const ws = this._ws;
    this._ws = null;
    this._authed = false;
    this.live = false;
    for (const [, p] of this._pending) p.reject(new DariError("unauthenticated", reason));
    this._pending.clear();
    if (ws) ws.close();
    this._emit("logged-out", { reason });
  }

  _frame(ws, data) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("ignoring an undecodable frame");
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if ("event" in frame) {
      if (frame.cursor !== undefined && frame.cursor !== null) {
        if (this.cursor !== null && frame.cursor <= this.cursor) return; // replay overlapping live
        this.cursor = frame.cursor;
      }
      if (frame.event === "session.live") {
        this.live = true;
      } else if (frame.event === "session.revoked") {
        this._loggedOut(frame.payload?.reason || "logged out");
        return;
      }
      this._emitEvent({ name: frame.event, payload: frame.payload, cursor: frame.cursor });
      return;
    }
    const pending = this._pending.get(frame.id);
    if (!pending) {
      if (frame.error) console.warn("server error", frame.error);
      return;
    }
    this._pending.delete(frame.id);
    if (frame.error) pending.reject(new DariError(frame.error.code, frame.error.message, frame.error.details));
    else pending.resolve(frame.result);
  }

  // Events go out in the order they came; with a decoder (E2EE: decrypting messages) each waits for
  // the ones before it.
  _emitEvent(detail) {
    if (!this.decodeEvent) {
      this._emit("event", detail);
      return;
    }
    this._events = (this._events || Promise.resolve())
      .then(() => this.decodeEvent(detail).catch((err) => { console.warn("event not decoded", err); return detail; }))
      .then((d) => this._emit("event", d));
  }

  // -- calls ------------------------------------------------------------------------------
  _callOn(ws, method, params, timeout = 30000) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new DariError("unavailable", "not connected"));
    }
    const id = this._ids++;
    const clean = {};
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null) clean[k] = v;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new DariError("unavailable", "the server did not answer in time"));
      }, timeout);
      this._pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      ws.send(JSON.stringify({ id, method, params: clean }));
    });
  }

  _waitConnected(timeout) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN && (this._authed || !this.token)) {
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w = { resolve: () => { clearTimeout(timer); resolve(); }, reject };
      const timer = setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        reject(new DariError("unavailable", "no connection to the server"));
      }, timeout);
      this._waiters.push(w);
    });
  }

  // Call a method over the connection as it is now, logged in or not, without waiting for one
  // (reach.report from diagnose.js: sent by whatever route carries the session).
  callNow(method, params = {}, timeout = 15000) {
    return this._callOn(this._ws, method, params, timeout);
  }

  // Call a method; waits for the connection (up to `wait` ms) while reconnecting.
  async call(method, params = {}, { wait = 10000 } = {}) {
    if (!this._ws && !this._timer && !this._closing) this._connectNow();
    await this._waitConnected(wait);
    if (!PRE_AUTH.has(method) && !this._authed) throw new DariError("unauthenticated", "log in first");
    const res = await this._callOn(this._ws, method, params);
    return this.decodeResult ? this.decodeResult(method, params, res) : res;
  }

  // -- accounts ---------------------------------------------------------------------------
  async signup(params) {
    const res = await this.call("account.signup", params);
    await this._adopt(res);
    return res;
  }

  async login(params) {
    const res = await this.call("account.login", params);
    await this._adopt(res);
    return res;
  }

  // A device approved from another one (device.link_poll answered "approved").
  async adoptLinked(res) {
    await this._adopt(res);
  }

  async _adopt(res) {
    this.token = res.token;
    this.storage.setItem("dari.token", res.token);
    this.user = null;
    this.cursor = null;
    this._closing = false;
    if (this._ws && this._ws.readyState === WebSocket.OPEN) await this._openSession(this._ws);
    else this._connectNow();
  }

  async logout() {
    this._loggingOut = true;
    try {
      if (this._authed) await this._callOn(this._ws, "device.logout", {}, 5000);
    } catch (err) {
      if (err.code !== "unauthenticated") console.warn("logout call failed", err);
    }
    if (this.token) this._loggedOut("logged out");
    this._loggingOut = false;
  }

  close() {
    this._closing = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close();
  }

  // -- outbox -----------------------------------------------------------------------------
  async queued() {
    if (!this.user) return [];
    return this.outbox.all(this.user.user_id);
  }

  // Queue a message: stored in IndexedDB first, then sent when a connection exists.
  async send(chatId, text, { replyTo = null, mentions = [] } = {}) {
    const order = Math.max(Date.now(), this._lastOrder + 1);
    this._lastOrder = order;
    const item = {
      client_id: newClientId(), user_id: this.user.user_id, chat_id: chatId, text, reply_to: replyTo,
      mentions, order, created_at: Date.now(), state: "pending", error: null,
    };
    await this.outbox.add(item);
    this._emit("outbox.queued", item);
    this.flush();
    return item;
  }

  async retry(clientId) {
    const items = await this.queued();
    const item = items.find((it) => it.client_id === clientId);
    if (!item) return;
    item.state = "pending";
    item.error = null;
    await this.outbox.put(item);
    this._emit("outbox.queued", item);
    this.flush();
  }

  async discard(clientId) {
    await this.outbox.remove(clientId);
    this._emit("outbox.removed", { client_id: clientId });
  }

  async flush() {
    if (this._flushing) {
      this._flushAgain = true;
      return;
    }
    this._flushing = true;
    try {
      do {
        this._flushAgain = false;
        const items = await this.queued();
        for (const it of items) this._lastOrder = Math.max(this._lastOrder, it.order);
        for (const item of items) {
          if (item.state === "failed") continue;
          if (!(await this._deliver(item))) return; // offline or failing: keep order, retry later
        }
      } while (this._flushAgain);
    } finally {
      this._flushing = false;
    }
  }

  async _deliver(item) {
    if (!this._authed || !this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
    let msg;
    try {
      let params = { chat_id: item.chat_id, client_id: item.client_id, text: item.text,
        reply_to: item.reply_to ?? undefined, mentions: item.mentions || [] };
      // E2EE chats: the text is encrypted now, with the chat's members and keys of the moment of sending.
      if (this.encodeSend) params = await this.encodeSend(item, params);
      msg = await this._callOn(this._ws, "message.send", params);
      if (this.decodeResult) msg = await this.decodeResult("message.send", params, msg);
    } catch (err) {
      if (err.details?.reason === "e2ee_required" && this.onE2eeRequired && !item.e2ee_retried) {
        // The chat became end-to-end encrypted after this was queued: encrypt it and send again.
        item.e2ee_retried = true;
        this.onE2eeRequired(item.chat_id);
        setTimeout(() => this.flush(), 0);
        return false;
      }
      if (PERMANENT.has(err.code)) {
        item.state = "failed";
        item.error = { code: err.code, message: err.message, details: err.details };
        await this.outbox.put(item);
        this._emit("outbox.failed", item);
        return true;
      }
      if (err.code !== "unavailable") setTimeout(() => this.flush(), 1000);
      return false;
    }
    await this.outbox.remove(item.client_id);
    this._emit("outbox.sent", { item, message: msg });
    return true;
  }
}
