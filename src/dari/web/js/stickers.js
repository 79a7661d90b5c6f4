// The sticker picker: recent stickers and installed packs (the server's default pack is installed
// when none is), a pack manager, sending `message.send_sticker`, and sticker messages drawn large
// without a bubble. Animated WebP/APNG play by themselves in an <img>.

import { t } from "./i18n.js";
import { newClientId } from "./outbox.js";
import { $, el, errorText, toast } from "./ui.js";

export class Stickers {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.packs = null; // installed packs with stickers
    this.recent = [];
    this.tab = "recent";
    this.panel = $("#sticker-panel");
  }

  bind() {
    $("#btn-sticker").addEventListener("click", () => (this.panel.hidden ? this.open() : this.close()));
    this.panel.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.stopPropagation(); this.close(); $("#btn-sticker").focus(); }
    });
    document.addEventListener("mousedown", (ev) => {
      if (!this.panel.hidden && !this.panel.contains(ev.target) && !ev.target.closest("#btn-sticker")) this.close();
    });
    this.session.addEventListener("event", (ev) => {
      if (ev.detail.name === "sticker.packs_changed") this.packs = null;
    });
  }

  async load() {
    let packs = await this.session.call("sticker.installed");
    if (!packs.length) {
      // Nothing installed (all removed, or a fresh account on a server without defaults): install the default.
      const all = await this.session.call("sticker.packs");
      const def = all.find((p) => p.is_default) || all[0];
      if (def) {
        await this.session.call("sticker.install", { pack_id: def.pack_id });
        packs = await this.session.call("sticker.installed");
      }
    }
    this.packs = packs;
    this.recent = this.withLocal(await this.session.call("sticker.recent", { limit: 24 }));
    if (this.tab === "recent" && !this.recent.length && packs.length) this.tab = packs[0].pack_id;
  }

  async open() {
    this.panel.hidden = false;
    $("#btn-sticker").setAttribute("aria-expanded", "true");
    this.panel.replaceChildren(el("p.muted.small.pad", { text: t("chat.loading") }));
    try {
      if (!this.packs) await this.load();
      else this.recent = this.withLocal(await this.session.call("sticker.recent", { limit: 24 }));
      this.render();
    } catch (err) {
      this.panel.replaceChildren(el("p.form-error.pad", { text: errorText(err) }));
    }
  }

  close() {
    if (this.panel.hidden) return;
    this.panel.hidden = true;
    $("#btn-sticker").setAttribute("aria-expanded", "false");
    this.panel.replaceChildren();
    this.app.media.scheduleSweep();
  }

  render() {
    const media = this.app.media;
    const tabs = el("div.sticker-tabs", { role: "tablist", "aria-label": t("stickers.packs") });
    const tabBtn = (id, label, content) => el("button.sticker-tab", {
      type: "button", role: "tab", "aria-selected": String(this.tab === id), title: label, "aria-label": label,
      onclick: () => { this.tab = id; this.render(); },
    }, content);
    tabs.append(tabBtn("recent", t("stickers.recent"), "🕓"));
    for (const p of this.packs) {
      const cover = p.cover_id || p.stickers?.[0]?.blob_id;
      tabs.append(tabBtn(p.pack_id, p.title, cover ? media.img(cover, { alt: "", cls: "sticker-cover" }) : p.title.slice(0, 2)));
    }
    tabs.append(tabBtn("manage", t("stickers.manage"), "＋"));
    const body = el("div.sticker-body");
    if (this.tab === "manage") {
      body.append(el("p.muted.small.pad", { text: t("chat.loading") }));
      this.renderManage(body);
    } else {
      const list = this.tab === "recent" ? this.recent : this.packs.find((p) => p.pack_id === this.tab)?.stickers || [];
      if (!list.length) body.append(el("p.muted.small.pad", { text: t(this.tab === "recent" ? "stickers.no_recent" : "stickers.empty") }));
      const grid = el("div.sticker-grid", { role: "listbox", "aria-label": t("stickers.title") });
      for (const s of list) {
        // The pack's name for a sticker ("Thumbs up") says what it shows; the emoji is the fallback.
        const label = [s.emoji, s.name].filter(Boolean).join(" ");
        grid.append(el("button.sticker-pick", { type: "button", role: "option", title: label,
          "aria-label": `${t("stickers.send")} ${label}`.trim(), dataset: { stickerId: s.sticker_id },
          onclick: () => this.send(s) }, media.img(s.blob_id, { alt: label })));
      }
      body.append(grid);
    }
    this.panel.replaceChildren(tabs, body);
    this.panel.querySelector("[aria-selected=true]")?.focus();
  }

  async renderManage(body) {
    try {
      const all = await this.session.call("sticker.packs");
      body.replaceChildren(el("h3.small-head", { text: t("stickers.manage") }),
        el("ul.plain-list.pack-list", {}, all.map((p) => el("li.row-between", {},
          el("span.pack-name", {}, p.cover_id ? this.app.media.img(p.cover_id, { alt: "", cls: "sticker-cover" }) : null,
            el("span", {}, el("strong", { text: p.title }), el("span.muted.small", { text: ` ${p.author || ""}` }))),
          el(`button.small.${p.installed ? "secondary" : "primary"}`, { type: "button",
            text: t(p.installed ? "stickers.remove" : "stickers.install"),
            onclick: async () => {
              try {
                await this.session.call(p.installed ? "sticker.remove" : "sticker.install", { pack_id: p.pack_id });
                this.packs = null;
                await this.load();
                this.tab = "manage";
                this.render();
              } catch (err) { toast(errorText(err), { kind: "error" }); }
            } })))));
    } catch (err) {
      body.replaceChildren(el("p.form-error.pad", { text: errorText(err) }));
    }
  }

  async send(sticker) {
    const chat = this.app.chat;
    const chatId = chat.chatId;
    if (chatId === null) return;
    const replyTo = chat.reply;
    this.close();
    chat.cancelContext();
    chat.composer.focus();
    try {
      const e2ee = this.app.e2ee.isE2ee(chatId);
      const msg = e2ee
        ? await this.app.e2ee.sendSticker(chatId, newClientId(), sticker, replyTo)
        : await this.session.call("message.send_sticker", {
          chat_id: chatId, client_id: newClientId(), sticker_id: sticker.sticker_id, reply_to: replyTo ?? undefined,
        }, { wait: 60000 });
      if (e2ee) this.rememberLocal(sticker);
      this.recent = [sticker, ...this.recent.filter((s) => s.sticker_id !== sticker.sticker_id)].slice(0, 24);
      this.app.onMessageNew(msg);
    } catch (err) {
      $("#compose-error").textContent = errorText(err);
    }
  }

  // Stickers sent into E2EE chats: the server cannot see which, so this browser remembers them
  // and puts them before the server's own recents.
  localKey() { return `dari.stickers.recent.${this.session.user?.user_id}`; }

  withLocal(serverRecent) {
    let local = [];
    try { local = JSON.parse(localStorage.getItem(this.localKey()) || "[]"); } catch { /* none kept */ }
    const seen = new Set();
    return [...local, ...serverRecent].filter((s) => !seen.has(s.sticker_id) && seen.add(s.sticker_id)).slice(0, 24);
  }

  rememberLocal(sticker) {
    const list = this.withLocal([sticker]);
    localStorage.setItem(this.localKey(), JSON.stringify([sticker, ...list.filter((s) => s.sticker_id !== sticker.sticker_id)].slice(0, 24)));
  }

  // A sticker message's picture: large, no bubble.
  renderMessage(msg) {
    const a = msg.attachment || {};
    const size = 150;
    const s = Math.min(1, size / Math.max(a.width || size, a.height || size));
    return this.app.media.img(a.blob_id, { alt: [a.emoji, a.name].filter(Boolean).join(" ") || t("media.sticker"), cls: "sticker-img",
      width: Math.round((a.width || size) * s), height: Math.round((a.height || size) * s) });
  }
}
