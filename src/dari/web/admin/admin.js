// Operator dashboard: polls admin.reach every few seconds and draws incidents, the region × route
// table and success-ratio charts with incident spans. Talks to the same REST API as every client.
const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "dari.admin.token";
let timer = null;

async function call(method, params = {}) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(`/api/v1/${method}`, { method: "POST", headers, body: JSON.stringify(params) });
  const body = await resp.json();
  if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code });
  return body.result;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmtTime = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";

function renderIncidents(incidents) {
  const list = $("#incidents");
  list.replaceChildren();
  if (!incidents.length) {
    list.append(el("li", { class: "none" }, "No incidents: every region reaches dari."));
    return;
  }
  for (const inc of [...incidents].reverse()) {
    const routes = Object.entries(inc.routes).map(([r, c]) => `${r}: ${c}`).join(", ");
    const li = el("li", { class: inc.open ? "open" : "closed", "data-region": inc.region, "data-class": inc.class },
      el("div", {}, el("span", { class: "cls" }, `${inc.open ? "OPEN" : "closed"} · ${inc.class}`),
         ` · region ${inc.region}${inc.asn ? ` (${inc.asn})` : ""} · since ${fmtTime(inc.since)}`),
      el("div", {}, inc.summary),
      el("div", { class: "meta" }, `blocked: ${routes} · still working: ${inc.fallbacks.join(", ") || "none"}`
        + ` · ${inc.reporters} reporters` + (inc.closed_at ? ` · closed ${fmtTime(inc.closed_at)}` : "")));
    list.append(li);
  }
}

function renderTable(table) {
  const regions = Object.keys(table).sort();
  const routes = [...new Set(regions.flatMap((r) => Object.keys(table[r])))].sort();
  const t = $("#table");
  t.replaceChildren(el("tr", {}, el("th", { scope: "col" }, "region"),
    ...routes.map((r) => el("th", { scope: "col" }, r))));
  for (const region of regions) {
    const row = el("tr", {}, el("th", { scope: "row" }, region));
    for (const route of routes) {
      const cell = table[region][route];
      if (!cell) { row.append(el("td", {}, "–")); continue; }
      const pct = Math.round(cell.ratio * 100);
      const cls = pct >= 80 ? "ok" : pct >= 40 ? "warn" : "bad";
      const top = Object.entries(cell.classes).sort((a, b) => b[1] - a[1])[0];
      row.append(el("td", { class: `cell ${cls}`, "data-route": route, "data-region": region },
        `${pct}%`, el("small", {}, `${cell.ok + cell.fail} samples${top ? ` · ${top[0]}` : ""}`)));
    }
    t.append(row);
  }
}

function renderControl(control) {
  const list = $("#control");
  list.replaceChildren(...Object.entries(control).map(([route, c]) =>
    el("li", { class: c.ok ? "ok" : "bad" }, `${c.ok ? "●" : "✕"} ${route}${c.ok ? "" : `: ${c.detail}`}`)));
}

function chart(key, points, spans, from, to) {
  const W = 320, H = 90, pad = 18;
  const x = (t) => pad + ((t - from) / Math.max(1, to - from)) * (W - 2 * pad);
  const y = (v) => H - pad - v * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `success ratio of ${key}`);
  const add = (tag, attrs) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    svg.append(n);
    return n;
  };
  for (const s of spans) {
    add("rect", { class: "span", x: x(Math.max(s.since, from)), y: pad / 2,
      width: Math.max(2, x(s.closed_at || to) - x(Math.max(s.since, from))), height: H - pad * 1.5 });
  }
  add("line", { class: "axis", x1: pad, x2: W - pad, y1: y(0), y2: y(0) });
  add("line", { class: "axis", x1: pad, x2: W - pad, y1: y(1), y2: y(1) });
  add("text", { x: 0, y: y(1) + 3 }).textContent = "1";
  add("text", { x: 0, y: y(0) + 3 }).textContent = "0";
  if (points.length > 1) {
    add("polyline", { class: "line", points: points.map(([t, v]) => `${x(t)},${y(v)}`).join(" ") });
  }
  for (const [t, v, n] of points) {
    const dot = add("circle", { class: v < 0.5 ? "dot low" : "dot", cx: x(t), cy: y(v), r: 3 });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${fmtTime(t)}: ${Math.round(v * 100)}% of ${n}`;
    dot.append(title);
  }
  const clock = (ms) => new Date(ms).toISOString().slice(11, 16);
  add("text", { x: pad, y: H - 2 }).textContent = clock(from);
  add("text", { x: W - pad - 24, y: H - 2 }).textContent = clock(to);
  return el("figure", {}, el("figcaption", {}, key), svg);
}

function renderCharts(data) {
  const box = $("#charts");
  box.replaceChildren();
  for (const [key, points] of Object.entries(data.series).sort()) {
    const [region, route] = key.split("/");
    const spans = data.incidents.filter((i) => i.region === region && (route in i.routes));
    box.append(chart(key, points, spans, data.from, data.to));
  }
}

async function refresh() {
  try {
    const data = await call("admin.reach", { minutes: Number($("#window").value), buckets: 60 });
    renderIncidents(data.incidents);
    renderTable(data.table);
    renderControl(data.control);
    renderCharts(data);
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("#status").textContent = data.incidents.some((i) => i.open) ? "blocking detected" : "all clear";
  } catch (err) {
    if (err.code === "unauthenticated" || err.code === "forbidden") return showLogin(err.message);
    $("#status").textContent = `cannot reach the server: ${err.message}`;
  }
}

function showLogin(message = "") {
  clearInterval(timer);
  $("#board").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
}

function showBoard() {
  $("#login").hidden = true;
  $("#board").hidden = false;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 3000);
}

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  try {
    const res = await call("account.login", { handle: form.get("handle"), password: form.get("password"),
      device_name: "operator dashboard" });
    sessionStorage.setItem(TOKEN_KEY, res.token);
    showBoard();
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
});
$("#logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(); });
$("#window").addEventListener("change", refresh);
if (sessionStorage.getItem(TOKEN_KEY)) showBoard(); else showLogin();
