// Meeting people (issue 13): your friend invite (a link ORIGIN/#/add/CODE and its QR code), an open
// chat's join link (#/join/CODE) and QR code in its info, the directory of listed open chats, and
// the bar above a 1:1 chat with someone who is not your friend (Add / Block), as in KakaoTalk.

import { t } from "./i18n.js";
import { $, avatar, confirmDialog, dialog, el, errorText, setBusy, toast } from "./ui.js";

const ROUTE = /^#\/(add|join)\/([A-Za-z0-9_-]{6,32})$/;
const PAGE = 20;

export function pageLink(kind, code) {
  return `${location.origin}/#/${kind}/${code}`;
}

function qrImage(kind, code, alt) {
  return el("img.invite-qr", { src: `/qr/${kind}/${encodeURIComponent(code)}.svg`, width: 200, height: 200, alt });
}

function linkBox(kind, code, label) {
  const link = pageLink(kind, code);
  const input = el("input.invite-link", { readonly: true, value: link, "aria-label": label, spellcheck: "false" });
  input.addEventListener("focus", () => input.select());
  return el("div.row-form", {}, input,
    el("button.secondary.small.copy-link", { type: "button", text: t("invite.copy"), onclick: async () => {
      try { await navigator.clipboard.writeText(link); toast(t("invite.copied")); }
      catch { input.select(); }
    } }));
}

function splitTags(text) {
  return [...new Set(text.split(/[\s,#]+/).filter(Boolean))];
}

export class Invites {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.blocked = null; // Set of user ids I blocked, loaded when a 1:1 chat with a stranger opens
  }

  bind() {
    $("#btn-my-invite").addEventListener("click", () => this.openMyInvite());
    $("#btn-directory").addEventListener("click", () => this.openDirectory());
  }

  // An invite or join link opened in the page. True when the hash was one (handled here, or once
  // logged in: the hash stays through log-in and sign-up, and loadAll routes again).
  route(hash) {
    const m = ROUTE.exec(hash);
    if (!m) return false;
    if (!this.app.loaded) return true;
    history.replaceState(null, "", location.pathname);
    if (m[1] === "add") this.openAddByInvite(m[2]);
    else this.openJoin(m[2]);
    return true;
  }

  // -- my invite --------------------------------------------------------------------------------
  async openMyInvite(rotate = false) {
    const d = dialog("tpl-invites");
    const body = $(".invites-dlg", d.node);
    const err = el("p.form-error", { role: "alert" });
    const act = (key, fn, cls = "secondary") => el(`button.${cls}`, { type: "button", text: t(key), onclick: async (ev) => {
      const btn = ev.currentTarget;
      err.textContent = "";
      setBusy(btn, true);
      try { await fn(); } catch (e) { err.textContent = errorText(e); } finally { setBusy(btn, false); }
    } });
    const close = el("button.primary", { type: "button", text: t("common.close"), onclick: () => d.close() });
    const render = (inv) => {
      const head = [el("h2", { text: t("invite.title") })];
      if (!inv) {
        body.replaceChildren(...head, el("p.muted.invite-off", { text: t("invite.off") }), err,
          el("div.dlg-actions", {}, act("invite.rotate", async () => render(await this.session.call("friend.invite_rotate"))), close));
        return;
      }
      body.replaceChildren(...head, el("p.muted.small", { text: t("invite.hint") }),
        qrImage("add", inv.code, t("invite.qr_alt")), linkBox("add", inv.code, t("invite.link")), err,
        el("div.dlg-actions", {},
          act("invite.rotate", async () => {
            if (await confirmDialog(t("invite.rotate_confirm"), { ok: t("invite.rotate") })) this.openMyInvite(true);
          }),
          act("invite.revoke", async () => { await this.session.call("friend.invite_revoke"); render(null); }, "danger"),
          close));
    };
    try { render(await this.session.call(rotate ? "friend.invite_rotate" : "friend.invite")); }
    catch (e) { body.replaceChildren(el("p.form-error", { role: "alert", text: errorText(e) }), close); }
  }

  // -- someone's invite, opened from a link -------------------------------------------------------
  async openAddByInvite(code) {
    const d = dialog("tpl-invites");
    const body = $(".invites-dlg", d.node);
    const close = el("button.secondary", { type: "button", text: t("common.close"), onclick: () => d.close() });
    let pre;
    try { pre = await this.session.call("friend.invite_preview", { code }); }
    catch (e) {
      body.replaceChildren(el("h2", { text: t("invite.add_title") }),
        el("p.form-error.invite-error", { role: "alert", text: errorText(e) }), el("div.dlg-actions", {}, close));
      return;
    }
    const u = pre.user;
    const err = el("p.form-error", { role: "alert" });
    const add = el("button.primary.invite-add", { type: "button", text: t("friends.add_button"), onclick: async () => {
      err.textContent = "";
      setBusy(add, true);
      try {
        await this.session.call("friend.add_by_invite", { code });
        d.close();
        toast(t("invite.added", { name: u.display_name }));
        await this.app.refreshFriends();
        this.app.setTab("friends");
      } catch (e) { err.textContent = errorText(e); } finally { setBusy(add, false); }
    } });
    const note = pre.is_self ? t("invite.self") : pre.is_friend ? t("invite.already") : "";
    body.replaceChildren(el("h2", { text: t("invite.add_title") }),
      el("div.profile-top.invite-profile", {}, avatar(u.display_name, u.user_id, "big"),
        el("h3.profile-name", { text: u.display_name }), el("p.muted.profile-handle", { text: `@${u.handle}` }),
        u.status_message ? el("p.profile-status", { text: u.status_message }) : null),
      note ? el("p.muted.invite-note", { text: note }) : null, err,
      el("div.dlg-actions", {}, close, pre.is_self || pre.is_friend ? null : add));
  }

  // -- open chats: join by link, the directory, the link in the chat's info ------------------------
  async openJoin(linkCode, card = null) {
    const d = dialog("tpl-invites");
    const body = $(".invites-dlg", d.node);
    const close = el("button.secondary", { type: "button", text: t("common.cancel"), onclick: () => d.close() });
    try { card = card || await this.session.call("chat.open_preview", { link_code: linkCode }); }
    catch (e) {
      body.replaceChildren(el("h2", { text: t("open.join_title") }),
        el("p.form-error.invite-error", { role: "alert", text: errorText(e) }), el("div.dlg-actions", {}, close));
      return;
    }
    const head = [el("h2", { text: t("open.join_title") }), el("h3.join-title", { text: card.title }),
      el("p.muted.small.join-count", { text: t("open.members", { count: card.member_count, limit: card.member_limit }) }),
      card.description ? el("p.join-desc", { text: card.description }) : null,
      card.tags.length ? el("p.dir-tags", {}, ...card.tags.map((tag) => el("span.tag", { text: `#${tag}` }))) : null];
    if (card.chat_id) {
      body.replaceChildren(...head, el("p.muted", { text: t("open.already_member") }), el("div.dlg-actions", {}, close,
        el("button.primary", { type: "button", text: t("open.open_chat"), onclick: () => { d.close(); this.app.openChat(card.chat_id); } })));
      return;
    }
    const form = el("form.stack.join-form", { novalidate: true },
      el("label.field", {}, el("span", { text: t("chats.nickname") }), el("input", { name: "nickname", maxlength: 64, required: true })),
      el("p.muted.small", { text: t("chats.nickname_hint") }), el("p.form-error", { role: "alert" }),
      el("div.dlg-actions", {}, close, el("button.primary", { type: "submit", text: t("chats.join") })));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btn = $("button[type=submit]", form);
      const nickname = form.nickname.value.trim();
      if (!nickname) { form.nickname.focus(); return; }
      setBusy(btn, true);
      try {
        const chat = await this.session.call("chat.join_open", { link_code: card.link_code, nickname });
        d.close();
        this.app.setChats(await this.session.call("chat.list"));
        this.app.setTab("chats");
        await this.app.openChat(chat.chat_id);
      } catch (e) { $(".form-error", form).textContent = errorText(e); } finally { setBusy(btn, false); }
    });
    body.replaceChildren(...head, form);
    form.nickname.focus();
  }

  openDirectory() {
    const d = dialog("tpl-invites");
    const body = $(".invites-dlg", d.node);
    const input = el("input", { id: "dir-query", type: "search", maxlength: 100, placeholder: t("directory.search"),
      "aria-label": t("directory.search") });
    const list = el("ul.plain-list.dir-list");
    const status = el("p.muted.small.dir-status", { role: "status" });
    const more = el("button.secondary.small.dir-more", { type: "button", text: t("directory.more"), hidden: true });
    let query = "";
    let offset = 0;
    let gen = 0;
    const load = async (reset) => {
      const my = ++gen;
      if (reset) { offset = 0; list.replaceChildren(); }
      status.textContent = "";
      try {
        const page = await this.session.call("chat.directory", { query, offset, limit: PAGE });
        if (my !== gen) return;
        list.append(...page.chats.map((c) => this.directoryRow(c, d)));
        offset = page.next_offset ?? offset;
        more.hidden = page.next_offset == null;
        if (!list.children.length) status.textContent = t("directory.empty");
      } catch (e) { if (my === gen) status.textContent = errorText(e); }
    };
    const form = el("form.row-form.dir-form", { role: "search" }, input,
      el("button.secondary", { type: "submit", text: t("directory.go") }));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); query = input.value.trim(); load(true); });
    more.addEventListener("click", () => load(false));
    body.replaceChildren(el("h2", { text: t("directory.title") }), form, status, list, more,
      el("div.dlg-actions", {}, el("button.primary", { type: "button", text: t("common.close"), onclick: () => d.close() })));
    input.focus();
    load(true);
  }

  directoryRow(c, d) {
    return el("li.dir-item", { dataset: { code: c.link_code } },
      el("div.row-between", {},
        el("span", {}, el("strong.dir-title", { text: c.title }),
          el("span.muted.small", { text: ` · ${t("open.members", { count: c.member_count, limit: c.member_limit })}` })),
        el("button.secondary.small.dir-join", { type: "button", text: t(c.chat_id ? "open.open_chat" : "chats.join"), onclick: () => {
          if (c.chat_id) { d.close(); this.app.openChat(c.chat_id); } else this.openJoin(c.link_code, c);
        } })),
      c.description ? el("p.small.dir-desc", { text: c.description }) : null,
      c.tags.length ? el("p.dir-tags", {}, ...c.tags.map((tag) => el("span.tag", { text: `#${tag}` }))) : null);
  }

  // Called by the chat info dialog: an open chat's join link and QR code, and (for its owner) the
  // directory listing.
  decorateChatInfo(n, detail, errBox) {
    if (detail.kind !== "open" || !detail.link_code) return;
    const box = el("div.open-link-box", {},
      el("h3.small-head", { text: t("open.link") }),
      qrImage("join", detail.link_code, t("open.qr_alt")), linkBox("join", detail.link_code, t("open.link")));
    if (detail.owner_id === this.session.user?.user_id) {
      const form = el("form.stack.listing-form", { novalidate: true },
        el("label.check", {}, el("input", { type: "checkbox", name: "listed", checked: detail.listed }), ` ${t("open.listed")}`),
        el("label.field", {}, el("span", { text: t("open.description") }),
          el("textarea", { name: "description", rows: 2, maxlength: 500 })),
        el("label.field", {}, el("span", { text: t("open.tags") }), el("input", { name: "tags", value: detail.tags.join(" ") })),
        el("button.secondary.small", { type: "submit", text: t("open.save_listing") }));
      form.description.value = detail.description;
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        errBox.textContent = "";
        try {
          await this.session.call("chat.open_settings", { chat_id: detail.chat_id, listed: form.listed.checked,
            description: form.description.value.trim(), tags: splitTags(form.tags.value) });
          toast(t("open.saved"));
        } catch (e) { errBox.textContent = errorText(e); }
      });
      box.append(form);
    }
    $(".info-code", n).after(box);
  }

  // The create-open-chat form's listing fields, as chat.create_open params.
  listingParams(form) {
    return { listed: form.listed.checked, description: form.description.value.trim(), tags: splitTags(form.tags.value) };
  }

  // -- the bar above a 1:1 chat with someone who is not your friend ---------------------------------
  async renderStrangerBar() {
    const bar = $("#stranger-bar");
    const summary = this.app.chats.get(this.app.chat.chatId);
    const peer = summary?.kind === "direct" ? summary.peer_id : null;
    if (!peer || this.app.friends.some((f) => f.user.user_id === peer)) { bar.hidden = true; return; }
    if (this.blocked === null) {
      try { this.blocked = new Set((await this.session.call("friend.blocked")).map((u) => u.user_id)); }
      catch { return; }
    }
    if (this.app.chat.chatId !== summary.chat_id) return;
    const name = summary.title;
    const err = (e) => toast(errorText(e), { kind: "error" });
    if (this.blocked.has(peer)) {
      bar.replaceChildren(el("span.stranger-text", { text: t("stranger.blocked", { name }) }),
        el("button.secondary.small.stranger-unblock", { type: "button", text: t("stranger.unblock"), onclick: async () => {
          try { await this.session.call("friend.unblock", { user_id: peer }); this.blocked.delete(peer); this.renderStrangerBar(); }
          catch (e) { err(e); }
        } }));
    } else {
      bar.replaceChildren(el("span.stranger-text", { text: t("stranger.text", { name }) }),
        el("button.primary.small.stranger-add", { type: "button", text: t("stranger.add"), onclick: async (ev) => {
          const btn = ev.currentTarget;
          setBusy(btn, true);
          try {
            const user = await this.session.call("user.get", { user_id: peer });
            await this.session.call("friend.add", { handle: user.handle });
            toast(t("invite.added", { name: user.display_name }));
            await this.app.refreshFriends();
          } catch (e) { err(e); setBusy(btn, false); }
        } }),
        el("button.danger.small.stranger-block", { type: "button", text: t("stranger.block"), onclick: async () => {
          if (!(await confirmDialog(t("stranger.block_confirm", { name }), { ok: t("stranger.block"), danger: true }))) return;
          try {
            await this.session.call("friend.block", { user_id: peer });
            this.blocked.add(peer);
            this.renderStrangerBar();
          } catch (e) { err(e); }
        } }));
    }
    bar.hidden = false;
  }

  onEvent(name, p) {
    if (name === "friend.blocked") this.blocked?.add(p.user_id);
    else if (name === "friend.unblocked") this.blocked?.delete(p.user_id);
    else return;
    if (this.app.chat.chatId !== null) this.renderStrangerBar();
  }
}
