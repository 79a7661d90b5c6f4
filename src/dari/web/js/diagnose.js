// The page's own `dari diagnose` (src/dari/client/diagnose.py), limited to what a browser can test:
// whether it is online at all, a plain HTTP GET of /healthz (status and timing: a 5xx is the
// server's trouble, not a block), the WebSocket handshake and a ping over it, the long-poll
// endpoint, and a WebSocket to each relay the server vouches for. DNS, TCP and TLS are not
// visible to a page (and CSP keeps it to its own origin over HTTP), so the classes it can give are
// fewer: server-down, tcp-reset (refused or reset at once), ip-blackhole (no answer in time),
// http-filter (HTTP answers but the WebSocket upgrade or /lp is refused), dpi-reset (a socket that
// opens and is then cut or never answers), plus "offline" (this device has no network), which is
// local and never reported.
//
// The result has the measurement format of docs/protocol.md ("diagnosis format", version 1) and is
// queued as reach.report samples (the SDK's ReportQueue.add_diagnosis), kept in localStorage and
// sent over whichever route next carries the session, so operators see it on /admin.
//
// Bounded: one diagnosis at a time, each probe with a timeout, relays capped, and while the
// trouble lasts diagnoses are spaced by a back-off from 10 s to 2 min.

import { LongPollSocket } from "./longpoll.js";

const store = globalThis.localStorage;
const PROBE_MS = Number(store?.getItem("dari.diag_probe_ms")) || 5000;
const SETTLE_MS = 2000; // a drop that reconnects within this is not worth a diagnosis
const BACKOFF_MIN_MS = Number(store?.getItem("dari.diag_backoff_ms")) || 10000;
const BACKOFF_MAX_MS = 120000;
const MAX_RELAYS = 3;
const QUEUE_KEY = "dari.reach_queue";
const REPORTER_KEY = "dari.reporter";
const MAX_QUEUED = 300;
const BATCH = 100;
const SERVER_TROUBLE = new Set(["unavailable", "internal"]);

const now = () => performance.now();

function stage(name, ok, cls, t0, evidence = {}) {
  return { name, ok, cls: ok ? "ok" : cls, elapsed_ms: Math.round((now() - t0) * 10) / 10, evidence };
}

function describe(err) {
  return String(err?.name === "TimeoutError" ? "timeout" : err?.message || err || "error").slice(0, 200);
}

// GET /healthz. A network error that comes at once is a refusal or a reset (a stopped server, a
// reset injected on the path); one that takes the whole timeout is a blackhole.
export async function probeHealth(base, timeoutMs = PROBE_MS) {
  const t0 = now();
  let resp;
  let body = "";
  try {
    resp = await fetch(`${base}/healthz`, { cache: "no-store", signal: AbortSignal.timeout(timeoutMs) });
    body = (await resp.text()).slice(0, 2048);
  } catch (err) {
    const slow = now() - t0 >= timeoutMs * 0.9 || err?.name === "TimeoutError";
    return stage("http", false, slow ? "ip-blackhole" : "tcp-reset", t0,
      { error: slow ? "timeout" : "refused or reset", detail: describe(err) });
  }
  if (resp.status >= 500) return stage("http", false, "server-down", t0, { status: resp.status });
  let ours = false;
  try { ours = resp.status === 200 && "version" in JSON.parse(body); } catch { /* not ours */ }
  if (!ours) return stage("http", false, "http-filter", t0, { status: resp.status, body: body.slice(0, 120) });
  return stage("http", true, "ok", t0, { status: resp.status });
}

// Open a socket (WebSocket or LongPollSocket) and ask session.ping. Opening is not enough: a
// middlebox may accept and then kill the connection once dari's frames appear.
export function probeSocket(make, timeoutMs = PROBE_MS) {
  return new Promise((resolve) => {
    const t0 = now();
    let sock = null;
    let opened = false;
    let timer = null;
    const finish = (ok, cls, evidence) => {
      clearTimeout(timer);
      if (sock) {
        sock.onopen = sock.onmessage = sock.onclose = null;
        try { sock.close(); } catch { /* gone */ }
      }
      resolve(stage("app", ok, cls, t0, { opened, ...evidence }));
    };
    try {
      sock = make();
    } catch (err) {
      finish(false, "not-opened", { error: describe(err) });
      return;
    }
    timer = setTimeout(() => finish(false, opened ? "dpi-reset" : "no-answer",
      { error: opened ? "no answer in time" : "did not open in time" }), timeoutMs);
    sock.onopen = () => {
      opened = true;
      sock.send(JSON.stringify({ id: 1, method: "session.ping", params: {} }));
    };
    sock.onmessage = (ev) => {
      let reply = null;
      try { reply = JSON.parse(ev.data); } catch { /* not ours */ }
      if (!reply || reply.id !== 1) return;
      if (reply.result) finish(true, "ok", {});
      else if (SERVER_TROUBLE.has(reply.error?.code)) finish(false, "server-down", { error: reply.error.code });
      else finish(true, "ok", {});   // answered with an error: dari is there and talking
    };
    sock.onclose = (ev) => finish(false, opened ? "dpi-reset" : "not-opened",
      { error: opened ? "closed after opening" : "closed before opening", code: ev?.code ?? 0 });
    sock.onerror = () => {};
  });
}

// What a failed socket probe means, given how the plain HTTP GET fared on the same origin.
function socketClass(app, http) {
  if (app.ok || app.cls === "server-down" || app.cls === "dpi-reset") return app.cls;
  if (http && http.ok) return "http-filter"; // HTTP answers, the upgrade or /lp does not
  if (http) return http.cls;
  return app.cls === "no-answer" ? "ip-blackhole" : "tcp-reset"; // a relay: no HTTP stage to compare
}

function routeResult(route, kind, url, stages) {
  const failed = stages.find((s) => !s.ok);
  return { route, kind, url, ok: !failed, cls: failed ? failed.cls : "ok", stages, throughput_kbps: null };
}

// One diagnosis of every route the page has. `session` gives the URLs and the vouched relays.
export async function diagnose(session, { timeoutMs = PROBE_MS } = {}) {
  const started = Date.now();
  const online = globalThis.navigator?.onLine !== false;
  const d = { version: 1, client: "web", started_at: started / 1000, finished_at: 0, region: "ZZ", asn: "",
    online, routes: [], features: {}, verdict: "ok", working_routes: [] };
  if (!online) {
    d.verdict = "offline";
    d.finished_at = Date.now() / 1000;
    return d;
  }
  const http = await probeHealth(session.httpBase, timeoutMs);
  const origin = [["websocket", "ws", session.url, () => new WebSocket(session.url)],
    ["long-poll", "longpoll", session.httpBase, () => new LongPollSocket(session.httpBase)]];
  const relays = session.relays.wsRoutes().slice(0, MAX_RELAYS)
    .map((r) => [`relay-ws:${r.id}`, "ws", r.url, () => new WebSocket(r.url), r.id]);
  const probes = [
    ...origin.map(async ([name, kind, url, make]) => {
      if (!http.ok) return routeResult(name, kind, url, [http]); // as the CLI: stop at the failed stage
      const app = await probeSocket(make, timeoutMs);
      app.cls = app.ok ? "ok" : socketClass(app, http);
      return routeResult(name, kind, url, [http, app]);
    }),
    ...relays.map(async ([name, kind, url, make, id]) => {
      const app = await probeSocket(make, timeoutMs);
      app.cls = app.ok ? "ok" : socketClass(app, null);
      return { ...routeResult(name, kind, url, [app]), relay: id };
    }),
  ];
  d.routes = await Promise.all(probes);
  d.working_routes = d.routes.filter((r) => r.ok).map((r) => r.route);
  d.verdict = verdict(d);
  d.finished_at = Date.now() / 1000;
  return d;
}

// The headline, as diagnose.py's _verdict: server trouble seen anywhere wins (it is not a block);
// otherwise the preferred failing route's class.
export function verdict(d) {
  if (!d.online) return "offline";
  if (d.routes.some((r) => r.cls === "server-down")) return "server-down";
  const failing = d.routes.filter((r) => r.cls !== "ok");
  return failing.length ? failing[0].cls : "ok";
}

// -- reports ---------------------------------------------------------------------------------
// reach.report samples, one per route, as ReportQueue.add_diagnosis makes them.
export function samplesOf(d) {
  if (!d.online) return []; // nothing about the path to the server was measured
  return d.routes.map((r) => {
    const failed = r.stages.find((s) => !s.ok);
    const evidence = { client: "web" };
    for (const [k, v] of Object.entries(failed?.evidence || {}).slice(0, 8)) evidence[k] = String(v).slice(0, 200);
    return { at: Math.round(d.started_at * 1000), route: r.route, ok: r.ok, stage: failed ? failed.name : "",
      class: r.ok ? "ok" : r.cls, elapsed_ms: Math.round(r.stages.reduce((a, s) => a + s.elapsed_ms, 0)), evidence };
  });
}

export class ReportQueue {
  constructor(storage = store) {
    this.storage = storage;
    this.reporter = storage.getItem(REPORTER_KEY);
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(this.reporter || "")) {
      // A random id per browser: lets the server count distinct reporters, names nobody.
      const bytes = crypto.getRandomValues(new Uint8Array(12));
      this.reporter = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, "");
      storage.setItem(REPORTER_KEY, this.reporter);
    }
  }

  all() {
    try {
      const q = JSON.parse(this.storage.getItem(QUEUE_KEY) || "[]");
      return Array.isArray(q) ? q : [];
    } catch {
      return [];
    }
  }

  add(samples) {
    if (!samples.length) return;
    this.storage.setItem(QUEUE_KEY, JSON.stringify([...this.all(), ...samples].slice(-MAX_QUEUED)));
  }

  // Send what is queued with `call("reach.report", params)`; keeps what could not be sent.
  async flush(call) {
    let sent = 0;
    for (;;) {
      const batch = this.all().slice(0, BATCH);
      if (!batch.length) return sent;
      try {
        await call("reach.report", { reporter: this.reporter, region: "ZZ", samples: batch });
      } catch (err) {
        if (err?.code !== "invalid_params") throw err;
        console.warn("dropping reach samples the server refused", err.message);
      }
      this.storage.setItem(QUEUE_KEY, JSON.stringify(this.all().slice(batch.length)));
      sent += batch.length;
    }
  }
}

// -- when to diagnose ------------------------------------------------------------------------
// Watches the session: a connection that stays down past SETTLE_MS, or one that comes up on a
// fallback route, is diagnosed; emits "change" with the latest diagnosis (null when all is well).
export class Diagnoser extends EventTarget {
  constructor(session, { storage = store } = {}) {
    super();
    this.session = session;
    this.queue = new ReportQueue(storage);
    this.current = null;
    this.running = false;
    this._timer = null;
    this._backoff = BACKOFF_MIN_MS;
    this._notBefore = 0;
    this._lastEnd = 0;
    this._explainedRoute = null; // the fallback route the current diagnosis explains
    this._troubled = false;
    session.addEventListener("state", () => this._onState());
  }

  _emit() {
    this.dispatchEvent(new CustomEvent("change", { detail: this.current }));
  }

  _onState() {
    const s = this.session;
    if (s.state === "logged-out") return;
    if (s.state === "offline") {
      clearTimeout(this._timer);
      this._timer = null;
      this.current = { version: 1, client: "web", online: false, verdict: "offline", routes: [], working_routes: [],
        started_at: Date.now() / 1000, finished_at: Date.now() / 1000 };
      this._emit();
      return;
    }
    if (s.state === "connected") {
      clearTimeout(this._timer);
      this._timer = null;
      if (this._troubled) this.queue.add([{ at: Date.now(), route: this._routeLabel(), ok: true, stage: "",
        class: "ok", elapsed_ms: 0, evidence: { client: "web", after: "reconnect" } }]);
      this._troubled = false;
      this.flush();
      if (s.route === "websocket") {
        this._backoff = BACKOFF_MIN_MS;
        this._notBefore = 0;
        this._explainedRoute = null;
        if (this.current) { this.current = null; this._emit(); }
      } else if (this._explainedRoute !== this._routeLabel()) {
        // Explain once why this fallback is in use: soon, whatever the back-off has grown to while
        // nothing worked (what the page showed then is stale now), but never more than every 10 s.
        this._schedule(0, this._lastEnd + BACKOFF_MIN_MS);
      } else {
        this._emit();
      }
      return;
    }
    this._troubled = true;
    if (this.current?.verdict === "offline") this.current = null; // back online: find out afresh
    this._schedule(SETTLE_MS);
    this._emit(); // the panel's "doing" line follows the session
  }

  _routeLabel() {
    const s = this.session;
    return s.route === "relay" ? `relay-ws:${s.relayId}` : s.route;
  }

  _schedule(delay, notBefore = this._notBefore) {
    if (this._timer || this.running) return;
    const wait = Math.max(delay, notBefore - Date.now());
    this._timer = setTimeout(() => { this._timer = null; this.run(); }, wait);
  }

  // One diagnosis now (unless one is running); queues its samples and tries to send them.
  async run() {
    if (this.running) return this.current;
    this.running = true;
    this._emit();
    let d;
    try {
      d = await diagnose(this.session);
    } catch (err) {
      console.warn("diagnosis failed", err);
      return this.current;
    } finally {
      this.running = false;
      this._lastEnd = Date.now();
      this._notBefore = this._lastEnd + this._backoff;
      this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
    }
    const s = this.session;
    if (s.state === "connected" && s.route === "websocket" && d.verdict !== "ok") {
      // Connected on the preferred route while probing: the trouble is over, nothing to show.
      this.queue.add(samplesOf(d));
      this.flush();
      return this.current;
    }
    this.current = d;
    if (s.state === "connected") this._explainedRoute = this._routeLabel();
    // On a fallback while the WebSocket works again (the server came back on long-poll first):
    // move now rather than at the session's next periodic look.
    if (s.state === "connected" && s.route !== "websocket" && d.working_routes.includes("websocket")) s.upgradeNow();
    if (d.verdict !== "ok") this.queue.add(samplesOf(d));
    this._emit();
    this.flush();
    if (s.state !== "connected" && s.state !== "offline") this._schedule(0); // waits out the back-off
    return d;
  }

  async flush() {
    const s = this.session;
    if (s.state !== "connected" || this._flushing) return;
    this._flushing = true;
    try {
      await this.queue.flush((method, params) => s.callNow(method, params));
    } catch (err) {
      console.info("reach reports kept for later:", err.message);
    } finally {
      this._flushing = false;
    }
  }
}
