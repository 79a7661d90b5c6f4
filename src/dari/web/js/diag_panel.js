// The connection diagnosis in the page (#conn-diag): what is wrong (offline, the server in trouble,
// WebSocket blocked, the direct route blocked, nothing reachable), why (the class diagnose.js gave,
// explained), and what the page is doing about it (the route in use, the next retry), with the
// per-route findings under "Details". Shown while the session is not on its preferred route.

import { Diagnoser } from "./diagnose.js";
import { t } from "./i18n.js";
import { $, el } from "./ui.js";

const SETTLE_MS = 2000; // a drop that is over within this is not worth a panel
const EXPLAINED = new Set(["tcp-reset", "ip-blackhole", "http-filter", "dpi-reset", "server-down"]);

// Which situation a diagnosis describes: the key of its headline and the class that explains it.
export function situation(d) {
  if (!d) return null;
  if (d.verdict === "offline") return { key: "diag.offline", cls: null };
  if (d.verdict === "server-down") return { key: "diag.server_down", cls: "server-down" };
  const works = new Set(d.working_routes);
  const ws = d.routes.find((r) => r.route === "websocket");
  if (works.has("websocket")) return { key: "diag.ok", cls: null };
  if (works.has("long-poll")) return { key: "diag.ws_blocked", cls: ws?.cls ?? d.verdict };
  if (works.size) return { key: "diag.direct_blocked", cls: ws?.cls ?? d.verdict };
  return { key: "diag.unreachable", cls: d.verdict };
}

function routeName(route) {
  if (route === "websocket" || route === "long-poll") return t(`conn.route_${route}`);
  return t("conn.route_relay", { id: route.replace(/^relay-ws:/, "") });
}

export class DiagPanel {
  constructor(session, root = $("#conn-diag")) {
    this.session = session;
    this.root = root;
    this.diagnoser = new Diagnoser(session);
    this._ticker = null;
    this._downSince = null;
    this.head = el("p.diag-head", { role: "status" }); // the countdown below is not announced
    this.why = el("p.diag-why");
    this.doing = el("p.diag-doing");
    this.list = el("ul.diag-routes");
    this.summary = el("summary");
    this.again = el("button.diag-again", { type: "button", onclick: () => this.diagnoser.run() });
    // Dismissed until the situation changes (another verdict, state or route).
    this._dismissed = null;
    this.close = el("button.diag-close", { type: "button", text: "×", onclick: () => {
      this._dismissed = this._situationKey();
      this.render();
    } });
    root.replaceChildren(this.close, this.head, this.why, this.doing, el("details.diag-more", {}, this.summary, this.list),
      this.again);
    this.diagnoser.addEventListener("change", () => this.render());
    session.addEventListener("state", () => this.render());
  }

  _situationKey() {
    const s = this.session;
    return `${this.diagnoser.current?.verdict ?? ""}|${s.state}|${s.route ?? ""}|${s.relayId ?? ""}`;
  }

  // Hidden when the session is on its preferred route and nothing is left to explain.
  _visible() {
    const s = this.session;
    if (s.state === "logged-out") return false;
    if (this._dismissed !== null) {
      if (this._dismissed === this._situationKey()) return false;
      this._dismissed = null;
    }
    if (s.state === "connected") {
      this._downSince = null;
      return s.route !== "websocket" && !!this.diagnoser.current;
    }
    if (this.diagnoser.current) return true;
    this._downSince ??= Date.now();
    const left = this._downSince + SETTLE_MS - Date.now();
    if (left <= 0) return true;
    clearTimeout(this._reveal);
    this._reveal = setTimeout(() => this.render(), left + 50);
    return false;
  }

  render() {
    const show = this._visible();
    this.root.hidden = !show;
    if (!show) {
      clearInterval(this._ticker);
      this._ticker = null;
      return;
    }
    // The countdown and the language follow without another event.
    if (!this._ticker) this._ticker = setInterval(() => this.render(), 1000);
    const d = this.diagnoser.current;
    const sit = situation(d);
    // "Nothing works" while connected is stale (a new diagnosis is coming): say it is checking.
    const stale = this.session.state === "connected" && sit?.key === "diag.unreachable";
    const checking = stale || (this.diagnoser.running && (!sit || sit.key === "diag.ok"));
    this.root.dataset.verdict = d ? d.verdict : "";
    this.root.dataset.running = String(this.diagnoser.running);
    this.head.textContent = checking || !sit ? t("diag.checking") : t(sit.key, { status: this._status(d) });
    this.why.hidden = checking || !sit?.cls;
    if (!this.why.hidden) {
      const why = EXPLAINED.has(sit.cls) ? t(`diag.cls.${sit.cls}`) : sit.cls;
      this.why.textContent = t("diag.why", { why, cls: sit.cls });
    }
    this.doing.textContent = this._doing();
    this.summary.textContent = t("diag.details");
    this.again.textContent = t("diag.again");
    this.close.setAttribute("aria-label", t("diag.dismiss"));
    this.close.title = t("diag.dismiss");
    this.again.disabled = this.diagnoser.running;
    this.list.replaceChildren(...(d?.routes || []).map((r) => el("li", { dataset: { route: r.route, ok: String(r.ok) } },
      r.ok ? t("diag.route_ok", { route: routeName(r.route) })
        : t("diag.route_fail", { route: routeName(r.route), cls: r.cls, stage: r.stages.find((x) => !x.ok)?.name ?? "" }))));
  }

  _status(d) {
    const http = d?.routes.flatMap((r) => r.stages).find((s) => s.name === "http" && s.evidence.status);
    return http ? `HTTP ${http.evidence.status}` : t("diag.server_error");
  }

  _doing() {
    const s = this.session;
    if (s.state === "offline") return t("diag.doing_wait_network");
    if (s.state === "connected") return t("diag.doing_route", { route: t(`conn.route_${s.route}`, { id: s.relayId ?? "" }) });
    const left = Math.ceil((s.nextRetryAt - Date.now()) / 1000);
    return left > 0 ? t("diag.doing_retry", { n: left }) : t("diag.doing_retry_now");
  }
}
