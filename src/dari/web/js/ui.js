// Small DOM helpers shared by the views. No innerHTML with user data anywhere: text goes through
// textContent, so a message can never inject markup.

import { apply, has, language, t } from "./i18n.js";

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function $$(sel, root = document) {
  return [...root.querySelectorAll(sel)];
}

// el("div.row.active", {attrs}, children...)
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clone(id) {
  const tpl = document.getElementById(id);
  const frag = tpl.content.cloneNode(true);
  apply(frag);
  return frag;
}

const PALETTE = ["#f2a65a", "#6cb1e1", "#88c77f", "#d98ac9", "#e98b8b", "#9d8de6", "#5fc1b5", "#c9a86a"];

export function avatar(name, id, size = "") {
  const letters = (name || "?").trim();
  const initial = letters ? [...letters][0].toUpperCase() : "?";
  const a = el(`span.avatar${size ? "." + size : ""}`, { "aria-hidden": "true", text: initial });
  a.style.background = PALETTE[Math.abs(Number(id) || 0) % PALETTE.length];
  return a;
}

export function toast(text, { kind = "info", action = null, timeout = 4000 } = {}) {
  const box = $("#toasts");
  const node = el(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, el("span", { text }));
  if (action) {
    node.append(el("button.link", { type: "button", text: action.label, onclick: () => { action.run(); node.remove(); } }));
  }
  node.append(el("button.icon.close", { type: "button", "aria-label": t("common.close"), text: "×",
    onclick: () => node.remove() }));
  box.append(node);
  if (timeout) setTimeout(() => node.remove(), timeout);
  return node;
}

// The text shown for a server error, all in the page's language: a headline for its code, then the
// reason (from `details.reason` and its arguments) or the field to fix. The server's English message
// shows only on an English page, or for a code this page does not know.
export function errorText(err) {
  if (!err) return "";
  const code = err.code || "internal";
  const msg = err.message || "";
  if (!has(`error.${code}`)) return msg || t("error.internal");
  const head = t(`error.${code}`);
  const details = err.details || {};
  if (details.reason && has(`error.reason.${details.reason}`)) {
    return `${head}: ${t(`error.reason.${details.reason}`, details)}`;
  }
  if (language() === "en") return msg ? `${head}: ${msg}` : head;
  if (details.field) {
    const field = has(`error.field.${details.field}`) ? t(`error.field.${details.field}`) : details.field;
    return `${head}: ${t("error.check_field", { field })}`;
  }
  return head;
}

let openDialog = null;
let generation = 0;

// A modal dialog built from a <template>; returns {node, close}. Esc closes (native <dialog>).
export function dialog(templateId, { onClose } = {}) {
  const dlg = $("#dialog");
  if (openDialog) openDialog.finish();
  const gen = ++generation;
  dlg.replaceChildren(clone(templateId));
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    if (openDialog === handle) openDialog = null;
    onClose?.();
  };
  const close = () => {
    if (done) return;
    if (dlg.open) dlg.close();
    finish();
    if (gen === generation) dlg.replaceChildren();
  };
  const handle = { node: dlg, close, finish };
  // The native close event (Esc) arrives asynchronously: ignore it if another dialog took over.
  dlg.addEventListener("close", function onNativeClose() {
    if (gen !== generation) { dlg.removeEventListener("close", onNativeClose); return; }
    if (dlg.open) return;
    dlg.removeEventListener("close", onNativeClose);
    close();
  });
  for (const b of $$("[data-close]", dlg)) b.addEventListener("click", close);
  openDialog = handle;
  if (!dlg.open) dlg.showModal();
  const first = dlg.querySelector("[autofocus], input, select, textarea, button:not([data-close])");
  first?.focus();
  return handle;
}

export function confirmDialog(message, { ok = t("common.ok"), danger = false } = {}) {
  return new Promise((resolve) => {
    let answered = false;
    const d = dialog("tpl-confirm", { onClose: () => { if (!answered) resolve(false); } });
    $(".confirm-text", d.node).textContent = message;
    const okBtn = $(".confirm-ok", d.node);
    okBtn.textContent = ok;
    if (danger) okBtn.classList.add("danger");
    okBtn.addEventListener("click", () => { answered = true; resolve(true); d.close(); });
    okBtn.focus();
  });
}

export function setBusy(button, busy) {
  if (!button) return;
  button.disabled = busy;
  button.classList.toggle("busy", busy);
}
