// Interface text comes from i18n/<lang>.json; markup carries only keys:
//   data-i18n="key"              -> textContent
//   data-i18n-placeholder="key"  -> placeholder
//   data-i18n-aria-label="key"   -> aria-label
//   data-i18n-title="key"        -> title
//   data-i18n-alt="key"          -> alt

export const LANGUAGES = [
  { code: "ko", name: "한국어" },
  { code: "en", name: "English" },
  { code: "zh-CN", name: "简体中文" },
  { code: "ja", name: "日本語" },
];

let strings = {};
let fallback = {};
let current = "en";

export function detectLanguage(stored = localStorage.getItem("dari.lang")) {
  if (stored && LANGUAGES.some((l) => l.code === stored)) return stored;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const t = tag.toLowerCase();
    if (t.startsWith("ko")) return "ko";
    if (t.startsWith("ja")) return "ja";
    if (t.startsWith("zh")) return "zh-CN";
    if (t.startsWith("en")) return "en";
  }
  return "en";
}

async function load(code) {
  const res = await fetch(`/static/i18n/${code}.json`, { cache: "no-cache" });
  if (!res.ok) throw new Error(`no translation ${code}`);
  return res.json();
}

export async function setLanguage(code, root = document) {
  if (!Object.keys(fallback).length) fallback = await load("en");
  strings = code === "en" ? fallback : await load(code);
  current = code;
  document.documentElement.lang = code;
  apply(root);
}

export function language() {
  return current;
}

export function has(key) {
  return key in strings || key in fallback;
}

// t("key", {name: "x"}) -> translated string with {name} replaced.
export function t(key, vars) {
  let s = strings[key] ?? fallback[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

export function apply(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
}

// Building an Intl.DateTimeFormat costs far more than formatting with one (it was a fifth of the
// time spent rendering a window of messages): keep one per locale and style.
const formatters = new Map();
function formatter(kind, opts) {
  const key = `${current}|${kind}`;
  let f = formatters.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(current, opts);
    formatters.set(key, f);
  }
  return f;
}

export function formatTime(ms) {
  return formatter("time", { hour: "numeric", minute: "2-digit" }).format(new Date(ms));
}

export function formatDay(ms) {
  return formatter("day", { dateStyle: "full" }).format(new Date(ms));
}

export function formatShort(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return formatTime(ms);
  const opts = d.getFullYear() === now.getFullYear() ? { month: "short", day: "numeric" } : { dateStyle: "short" };
  return new Intl.DateTimeFormat(current, opts).format(d);
}
