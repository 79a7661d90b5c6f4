// E2EE in the page: the glue between the app and the protocol (e2ee.js). Messages of E2EE chats
// are decrypted where they enter (call results, events), so the chat view, the chat list, quotes
// and notifications only ever see plaintext messages; outgoing texts, edits, media and stickers
// are encrypted just before they leave. Also: undecryptable notices and their retry when a key
// arrives, safety numbers, security-code changes, local search.

import { E2ee } from "./e2ee.js";
import { decryptFile, encryptFile, safetyNumber } from "./e2ee_util.js";
import { t } from "./i18n.js";
import { MEDIA_KINDS } from "./media.js";
import { DariError } from "./session.js";
import { $, confirmDialog, dialog, el, errorText, toast } from "./ui.js";

const SENDS = new Set(["message.send", "message.edit", "message.send_media", "message.send_sticker"]);
const REENCODE = new Set(["image/jpeg", "image/png", "image/webp"]);
const THUMB = 320;

export class E2eeApp {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.core = new E2ee(app.session);
    this.pins = new Map(); // user_id -> pin {master_key, verified, changed_at} (for rendering)
    this.raw = new Map(); // "chat:seq" -> the attachment as encrypted (an edit of a caption carries it)
    const s = this.session;
    s.decodeResult = (method, params, res) => this.decodeResult(method, res);
    s.decodeEvent = (d) => this.decodeEvent(d);
    s.encodeSend = (item, params) => this.encodeSend(item, params);
    s.onE2eeRequired = (chatId) => this.markE2ee(chatId);
    s.addEventListener("opened", () => this.core.opened().then(() => this.loadPins()).catch(() => {}));
    s.addEventListener("logged-out", () => {
      this.pins.clear();
      this.raw.clear();
      $("#e2ee-banner").hidden = true;
      this.app.media.keys.clear();
      localStorage.removeItem(`dari.stickers.recent.${this.session.user?.user_id}`);
      this.core.wipe().catch((err) => console.warn("e2ee: local keys not removed", err));
    });
    this.core.addEventListener("roomkey", (ev) => this.retry(ev.detail));
    this.core.addEventListener("keychange", (ev) => this.onKeyChange(ev.detail));
    this.core.addEventListener("linking", () => toast(t("e2ee.linking")));
    this.core.addEventListener("linked", () => { toast(t("e2ee.linked")); this.session.flush(); });
    this.core.addEventListener("link_sent", (ev) => {
      toast(t("e2ee.link_sent", { name: this.deviceName(ev.detail.device_id) }));
      this.app.devices.renderRequests();
    });
    this.core.addEventListener("state", () => this.renderBanner());
    this.core.addEventListener("key_request", (ev) => this.askShare(ev.detail));
    for (const id of ["#btn-e2ee-reset", "#btn-e2ee-reset-settings"]) $(id).addEventListener("click", () => this.resetKeys());
  }

  deviceName(deviceId) {
    return this.app.devices.list?.find((d) => d.device_id === deviceId)?.name || `#${deviceId}`;
  }

  // -- waiting for the keys, key requests, reset ------------------------------------------
  // Why this device may not send into an E2EE chat now (never in plaintext instead), or null.
  refusal(chatId) {
    const s = this.core.state;
    if (!this.isE2ee(chatId) || (s !== "login" && s !== "reset")) return null;
    return t(s === "reset" ? "e2ee.own_reset" : "e2ee.waiting_keys");
  }

  renderBanner() {
    const banner = $("#e2ee-banner");
    const s = this.session.user ? this.core.state : "ready";
    banner.hidden = s === "ready";
    banner.dataset.state = s;
    $(".e2ee-banner-text", banner).textContent = t({ login: "e2ee.waiting_keys", reset: "e2ee.own_reset" }[s] || "e2ee.linking");
    if (s === "reset") toast(t("e2ee.own_reset"), { kind: "error" });
  }

  async resetKeys() {
    if (!(await confirmDialog(t("e2ee.reset_confirm"), { ok: t("e2ee.reset"), danger: true }))) return;
    try {
      await this.core.reset();
      toast(t("e2ee.reset_done"));
      this.session.flush();
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  // Another device of this user (a password login) asks for the keys: the user decides.
  askShare({ device_id: deviceId, device_name: name }) {
    this.app.devices.renderRequests();
    const d = dialog("tpl-confirm");
    d.node.dataset.keyRequest = String(deviceId);
    $(".confirm-text", d.node).textContent = t("e2ee.request_prompt", { name: name || `#${deviceId}` });
    const ok = $(".confirm-ok", d.node);
    ok.textContent = t("e2ee.share_keys");
    ok.addEventListener("click", () => { d.close(); this.share(deviceId); });
    const no = $("[data-close]", d.node);
    no.textContent = t("e2ee.not_me");
    no.addEventListener("click", () => this.decline(deviceId));
  }

  async share(deviceId) {
    try {
      await this.core.shareKeys(deviceId);
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
    this.app.devices.renderRequests();
  }

  async decline(deviceId) {
    await this.core.declineKeys(deviceId).catch((err) => console.warn("e2ee: request not declined", err));
    this.app.devices.renderRequests();
  }

  isE2ee(chatId) {
    return !!(this.app.chats.get(chatId)?.e2ee || this.app.chat.details.get(chatId)?.e2ee);
  }

  markE2ee(chatId) {
    const c = this.app.chats.get(chatId);
    if (c) c.e2ee = true;
    const d = this.app.chat.details.get(chatId);
    if (d) d.e2ee = true;
  }

  // The chat's detail (members, e2ee), from the view's cache or the server.
  async detail(chatId) {
    let d = this.app.chat.details.get(chatId);
    if (!d) {
      d = await this.session.call("chat.get", { chat_id: chatId });
      this.app.chat.details.set(chatId, d);
    }
    return d;
  }

  async encryptFor(chatId, content) {
    const d = await this.detail(chatId);
    return this.core.encrypt(chatId, d.members.map((m) => m.user_id), content);
  }

  // -- outgoing ---------------------------------------------------------------------------
  async encodeSend(item, params) {
    if (!this.isE2ee(item.chat_id)) {
      const d = this.app.chat.details.get(item.chat_id) || (this.app.chats.has(item.chat_id) ? null : await this.detail(item.chat_id));
      if (!d?.e2ee) return params;
    }
    this.checkLength(item.text);
    const e2ee = await this.encryptFor(item.chat_id, { type: "text", text: item.text, client_id: item.client_id });
    return { chat_id: item.chat_id, client_id: item.client_id, e2ee, reply_to: params.reply_to, mentions: params.mentions };
  }

  // The server cannot count the characters of an encrypted text: the page holds to the same limit
  // and says so the same way.
  checkLength(text) {
    const limit = this.app.serverInfo?.max_message_chars;
    const n = [...text].length;
    if (limit && n > limit) {
      throw new DariError("limit_exceeded", `message is ${n} characters; the limit is ${limit}`,
        { reason: "message_too_long", length: n, limit });
    }
  }

  // message.edit params: in an E2EE chat the new text goes encrypted (a caption's edit carries the
  // attachment, so that the message stays a photo wherever the edit replaces what was stored).
  async editParams(chatId, seq, text) {
    if (!this.isE2ee(chatId)) return { chat_id: chatId, seq, text };
    this.checkLength(text);
    const attachment = this.raw.get(`${chatId}:${seq}`);
    return { chat_id: chatId, seq, e2ee: await this.encryptFor(chatId, { type: "edit", text, attachment }) };
  }

  async sendSticker(chatId, clientId, sticker, replyTo) {
    const pack = sticker.pack_id ?? (this.app.stickers.packs || [])
      .find((p) => (p.stickers || []).some((x) => x.sticker_id === sticker.sticker_id))?.pack_id;
    const attachment = { sticker_id: sticker.sticker_id, pack_id: pack, emoji: sticker.emoji || "",
      name: sticker.name, blob_id: sticker.blob_id, width: sticker.width, height: sticker.height };
    const e2ee = await this.encryptFor(chatId, { type: "sticker", attachment });
    return this.session.call("message.send", { chat_id: chatId, client_id: clientId, e2ee, reply_to: replyTo ?? undefined },
      { wait: 60000 });
  }

  // A file for an E2EE chat: photos re-encoded through a canvas (no EXIF/GPS left), then
  // AES-256-GCM; returns the ciphertext to upload and the attachment to put in the message. A photo
  // also gets a thumbnail (at most THUMB px a side), encrypted with its own key, as the SDK does:
  // the server can no longer make one.
  async prepareFile(file, kind) {
    let thumb = null;
    let bytes = new Uint8Array(await file.arrayBuffer());
    let mime = file.type || "application/octet-stream";
    const att = { kind: kind || kindOf(mime), mime, name: (file.name || "file").slice(0, 255) };
    if (att.kind === "image") {
      const bmp = await createImageBitmap(new Blob([bytes], { type: mime })).catch(() => null);
      if (bmp) {
        att.width = bmp.width;
        att.height = bmp.height;
        if (REENCODE.has(mime)) {
          const canvas = new OffscreenCanvas(bmp.width, bmp.height);
          canvas.getContext("2d").drawImage(bmp, 0, 0);
          const out = await canvas.convertToBlob({ type: mime === "image/png" ? "image/png" : "image/jpeg", quality: 0.92 });
          bytes = new Uint8Array(await out.arrayBuffer());
          mime = att.mime = out.type;
          if (mime === "image/jpeg") att.name = att.name.replace(/\.(png|webp|jpe?g)$/i, "") + ".jpg";
        }
        const scale = Math.min(1, THUMB / Math.max(bmp.width, bmp.height));
        const tw = Math.max(1, Math.round(bmp.width * scale));
        const th = Math.max(1, Math.round(bmp.height * scale));
        const tc = new OffscreenCanvas(tw, th);
        tc.getContext("2d").drawImage(bmp, 0, 0, tw, th);
        const tenc = await encryptFile(new Uint8Array(await (await tc.convertToBlob({ type: "image/jpeg", quality: 0.8 })).arrayBuffer()));
        thumb = { meta: { key: tenc.key, iv: tenc.iv, sha256: tenc.sha256, width: tw, height: th },
          upload: new File([tenc.data], "encrypted", { type: "application/octet-stream" }) };
        bmp.close();
      }
    }
    if (att.kind === "video" || att.kind === "voice") Object.assign(att, await probeMedia(file, att.kind === "video"));
    const enc = await encryptFile(bytes);
    Object.assign(att, { key: enc.key, iv: enc.iv, sha256: enc.sha256, size: bytes.length });
    return { att, thumb, upload: new File([enc.data], "encrypted", { type: "application/octet-stream" }) };
  }

  async sendMedia(job) {
    const att = { ...job.prepared.att, blob_id: job.blob.blob_id };
    // The length read from the recording's bytes wins over the recorder's clock (as the server's would).
    if (job.durationMs && !att.duration_ms) att.duration_ms = Math.round(job.durationMs);
    if (job.thumbBlob) att.thumb = { ...job.prepared.thumb.meta, blob_id: job.thumbBlob.blob_id };
    const e2ee = await this.encryptFor(job.chatId, { type: "media", text: job.caption || "", attachment: att });
    return this.session.call("message.send", { chat_id: job.chatId, client_id: job.clientId, e2ee,
      reply_to: job.replyTo ?? undefined, attachments: [att.blob_id, att.thumb?.blob_id].filter(Boolean) },
    { wait: 60000 });
  }

  // -- incoming ---------------------------------------------------------------------------
  async decodeResult(method, res) {
    if (!res || typeof res !== "object") return res;
    if (method === "message.history" && res.messages?.some((m) => m.e2ee)) {
      res.messages = await Promise.all(res.messages.map((m) => this.decryptMsg(m)));
    } else if (SENDS.has(method) && res.e2ee) {
      return this.decryptMsg(res);
    } else if (method === "device.link_approve" && res.device_id) {
      await this.core.approved(res.device_id).catch((err) => console.warn("e2ee: approval not kept", err));
    } else if (method === "chat.list" && Array.isArray(res)) {
      for (const c of res) if (c.last_message?.e2ee) c.last_message = await this.decryptMsg(c.last_message);
    }
    return res;
  }

  async decodeEvent(d) {
    const p = d.payload;
    switch (d.name) {
      case "message.new":
        if (p?.e2ee) return { ...d, payload: await this.decryptMsg(p) };
        break;
      case "message.edited":
        if (p?.e2ee) {
          const sender = p.sender_id ?? this.app.chat.timelines.get(p.chat_id)?.msgs.get(p.seq)?.sender_id
            ?? await this.core.senderOf(p.e2ee).catch(() => null);
          return { ...d, payload: await this.decryptMsg({ ...p, sender_id: sender }) };
        }
        break;
      // todevice.pending is not replayed after a reconnect: look once the session is live.
      case "todevice.pending": case "session.live": this.core.pullToDevice(); break;
      case "chat.e2ee":
        if (p?.e2ee) {
          this.markE2ee(p.chat_id);
          if (p.chat_id === this.app.chat.chatId) this.app.chat.renderHeader();
        }
        break;
      case "keys.changed": {
        this.core.forget(p.user_id);
        // A member of the open chat: look now, so that a new security code is announced at once.
        const open = this.app.chat.details.get(this.app.chat.chatId);
        if (open?.e2ee && open.members.some((m) => m.user_id === p.user_id)) this.watch(open.chat_id);
        break;
      }
      case "message.unsent": this.core.local.unindex(p.chat_id, p.seq).catch(() => {}); break;
      case "keys.low": this.core.topUp(); break;
      case "chat.members":
        if (p?.left?.length || p?.removed?.length) this.core.rotate(p.chat_id).catch(() => {});
        break;
      default: break;
    }
    return d;
  }

  async decryptMsg(msg) {
    if (!msg?.e2ee || msg.unsent) return msg;
    let r;
    try {
      r = await this.core.decrypt(msg.chat_id, msg.sender_id, `${msg.chat_id}:${msg.seq}`, msg.e2ee);
    } catch (err) {
      console.warn("e2ee not ready", err);
      r = { ok: false, reason: "not_ready" };
    }
    if (!r.ok) return { ...msg, kind: "encrypted", text: "", attachment: null, e2ee_error: r.reason };
    const out = { ...msg, e2ee_error: null, ...this.fromContent(msg, r.content) };
    this.core.local.index(out).catch(() => {});
    return out;
  }

  fromContent(msg, c) {
    const text = typeof c.text === "string" ? c.text : "";
    const a = c.attachment && typeof c.attachment === "object" ? c.attachment : null;
    if (c.type === "sticker" && a) return { kind: "sticker", text: "", attachment: this.stickerAttachment(a) };
    if ((c.type === "media" || c.type === "edit") && a?.blob_id) {
      this.raw.set(`${msg.chat_id}:${msg.seq}`, a);
      return { kind: MEDIA_KINDS.has(a.kind) ? a.kind : "file", text, attachment: this.mediaAttachment(a) };
    }
    return { kind: "text", text };
  }

  mediaAttachment(a) {
    this.app.media.keys.set(a.blob_id, { key: a.key, iv: a.iv, mime: a.mime || "" });
    const t = a.thumb && typeof a.thumb === "object" && a.thumb.blob_id ? a.thumb : null;
    if (t) this.app.media.keys.set(t.blob_id, { key: t.key, iv: t.iv, mime: "image/jpeg" });
    return { blob_id: a.blob_id, name: a.name, size: a.size, width: a.width, height: a.height,
      duration_ms: a.duration_ms, type: a.mime, thumb_blob: t?.blob_id ?? null, e2ee: true };
  }

  stickerAttachment(a) {
    let s = a;
    if (!a.blob_id) {
      for (const p of this.app.stickers.packs || []) {
        const hit = (p.stickers || []).find((x) => x.sticker_id === a.sticker_id);
        if (hit) s = { ...hit, ...a, blob_id: hit.blob_id };
      }
    }
    return { sticker_id: s.sticker_id, pack_id: s.pack_id, emoji: s.emoji, name: s.name, blob_id: s.blob_id,
      width: s.width, height: s.height };
  }

  // A key arrived: decrypt again what waited for it, in the open timelines and the chat list.
  async retry({ session_id: sessionId }) {
    for (const tl of this.app.chat.timelines.values()) {
      let changed = false;
      for (const m of [...tl.msgs.values()]) {
        if (!m.e2ee_error || m.e2ee?.session_id !== sessionId) continue;
        tl.put(await this.decryptMsg({ ...m, kind: "encrypted" }));
        changed = true;
      }
      if (changed && tl.chatId === this.app.chat.chatId) this.app.chat.requestRender();
    }
    for (const c of this.app.chats.values()) {
      if (c.last_message?.e2ee_error && c.last_message.e2ee?.session_id === sessionId) {
        c.last_message = await this.decryptMsg(c.last_message);
        this.app.renderChatList();
      }
    }
  }

  // The words for an undecryptable message, with its reason.
  failureText(reason) {
    return `🔒 ${t("e2ee.undecryptable")} (${t(`e2ee.reason_${reason}`)})`;
  }

  // -- media ------------------------------------------------------------------------------
  async decryptBlob(blob, keys) {
    const plain = await decryptFile(new Uint8Array(await blob.arrayBuffer()), keys.key, keys.iv);
    return new Blob([plain], { type: keys.mime });
  }

  // -- security codes ---------------------------------------------------------------------
  async loadPins() {
    for (const d of this.app.chat.details.values()) for (const m of d.members) await this.refreshPin(m.user_id);
  }

  async refreshPin(userId) {
    if (!this.core.store || userId === this.session.user?.user_id) return null;
    const pin = await this.core.pin(userId);
    if (pin) this.pins.set(userId, pin);
    return pin;
  }

  async onKeyChange({ user_id: userId }) {
    await this.refreshPin(userId);
    const d = this.app.chat.details.get(this.app.chat.chatId);
    if (d?.members.some((m) => m.user_id === userId)) this.app.chat.requestRender();
  }

  // Lines "Alice's security code changed" for the open chat: [{at, name}].
  keyNotices(chatId) {
    const d = this.app.chat.details.get(chatId);
    if (!d?.e2ee) return [];
    const out = [];
    for (const m of d.members) {
      const pin = this.pins.get(m.user_id);
      if (pin?.changed_at) out.push({ at: pin.changed_at, name: m.display_name, user_id: m.user_id });
    }
    return out;
  }

  // Watch the members of an opened E2EE chat (keys.query pins their master keys).
  async watch(chatId) {
    const d = this.app.chat.details.get(chatId);
    if (!d?.e2ee) return;
    try {
      await this.core.start();
      await this.core.query(d.members.map((m) => m.user_id));
      let changed = false;
      for (const m of d.members) if ((await this.refreshPin(m.user_id))?.changed_at) changed = true;
      if (changed && chatId === this.app.chat.chatId) this.app.chat.requestRender();
    } catch (err) {
      console.warn("e2ee: members' keys not loaded", err);
    }
  }

  async openSafety(chatId) {
    const d = await this.detail(chatId);
    const me = this.session.user.user_id;
    const others = d.members.filter((m) => m.user_id !== me);
    const dlg = dialog("tpl-safety");
    const n = dlg.node;
    const pick = $(".safety-member", n);
    pick.replaceChildren(...others.map((m) => el("option", { value: m.user_id, text: m.display_name })));
    pick.hidden = others.length < 2;
    const show = async () => {
      const uid = Number(pick.value);
      const errBox = $(".form-error", n);
      errBox.textContent = "";
      $(".safety-digits", n).replaceChildren();
      try {
        await this.core.start();
        const users = await this.core.query([me, uid], { refresh: true });
        const theirs = users.get(uid)?.master_key;
        if (!theirs || !this.core.masterKey) throw new Error(t("e2ee.no_keys"));
        const sn = await safetyNumber({ user_id: me, master_key: this.core.masterKey }, { user_id: uid, master_key: theirs });
        $(".safety-digits", n).replaceChildren(...sn.groups.map((g) => el("span.safety-group", { text: g })));
        $(".safety-digits", n).dataset.digits = sn.digits;
        $(".safety-qr", n).src = `/qr/verify.svg?d=${encodeURIComponent(sn.qr)}`;
        const pin = await this.refreshPin(uid);
        const verified = pin?.verified && pin.master_key === theirs;
        $(".safety-status", n).textContent = t(verified ? "e2ee.verified" : "e2ee.not_verified");
        const btn = $(".safety-verify", n);
        btn.hidden = verified;
        btn.onclick = async () => {
          await this.core.markVerified(uid, theirs);
          await this.refreshPin(uid);
          $(".safety-status", n).textContent = t("e2ee.verified");
          btn.hidden = true;
          this.app.chat.requestRender();
          toast(t("e2ee.marked_verified"));
        };
      } catch (err) {
        errBox.textContent = errorText(err);
      }
    };
    pick.addEventListener("change", show);
    show();
  }

  // -- local search -----------------------------------------------------------------------
  async search(query, { chatId = null } = {}) {
    try {
      await this.core.start();
      const rows = await this.core.local.search(query, { chatId });
      return rows.map((r) => ({ chat_id: r.chat_id, seq: r.seq, text: r.text, kind: r.kind, created_at: r.created_at,
        sender_id: r.sender_id, attachment: r.name ? { name: r.name } : null,
        chat_title: this.app.chats.get(r.chat_id)?.title || "", local: true }));
    } catch (err) {
      console.warn("local search failed", err);
      return [];
    }
  }
}

// Length (and a video's size) read by the browser, as the server would have from the bytes. A
// recorded WebM has no length in its header until the element seeks to its end.
async function probeMedia(blob, video) {
  const url = URL.createObjectURL(blob);
  const m = document.createElement(video ? "video" : "audio");
  m.preload = "metadata";
  m.muted = true;
  const until = (setup, ms = 5000) => new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    setup(() => { clearTimeout(timer); resolve(); });
  });
  try {
    await until((done) => { m.onloadedmetadata = done; m.onerror = done; m.src = url; });
    if (m.duration === Infinity) await until((done) => { m.ondurationchange = done; m.currentTime = 1e101; });
    const out = {};
    if (Number.isFinite(m.duration) && m.duration > 0) out.duration_ms = Math.round(m.duration * 1000);
    if (video && m.videoWidth) Object.assign(out, { width: m.videoWidth, height: m.videoHeight });
    return out;
  } finally {
    m.removeAttribute("src");
    m.load();
    URL.revokeObjectURL(url);
  }
}

function kindOf(mime) {
  if (mime.startsWith("image/")) return "image";
  if (mime.startsWith("video/")) return "video";
  if (mime.startsWith("audio/")) return "voice";
  return "file";
}
