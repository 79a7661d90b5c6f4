// Media in the web client: uploads (plain HTTP where it works, else chunks over the session, resumed
// after a dropped connection), photos and files shown from blob: URLs fetched with the Bearer token
// (an <img src> cannot carry the header), the viewer, and the composer's attach/paste/drop.
//
// Blob URLs are counted by the DOM: sweep() revokes every URL no element shows any more, so the
// memory of a long scroll through photos is released once they leave the rendered window.

import { t } from "./i18n.js";
import { newClientId } from "./outbox.js";
import { DariError } from "./session.js";
import { systemText } from "./systemline.js";
import { $, $$, dialog, el, errorText, toast } from "./ui.js";

const HTTP_PIECE = 4 << 20;
const RETRYABLE = new Set(["unavailable", "rate_limited", "internal", "conflict"]);
export const MEDIA_KINDS = new Set(["image", "video", "voice", "file"]);
const ICONS = { image: "🖼", video: "🎬", voice: "🎤", file: "📄", sticker: "😊" };
const AUTOLOAD_BYTES = 8 << 20; // videos and voice messages up to this size load with the chat

export function formatSize(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

// One line for a message in previews, quotes and notifications.
export function previewText(msg) {
  if (msg.unsent) return t("message.unsent");
  if (msg.kind === "system") return systemText(msg);
  if (msg.kind === "encrypted") return `🔒 ${t("e2ee.undecryptable")}`;
  if (msg.kind === "sticker") return `${ICONS.sticker} ${t("media.sticker")}${msg.attachment?.emoji ? ` ${msg.attachment.emoji}` : ""}`;
  if (MEDIA_KINDS.has(msg.kind)) {
    const label = msg.kind === "file" && msg.attachment?.name ? msg.attachment.name : t(`media.kind_${msg.kind}`);
    return `${ICONS[msg.kind]} ${msg.text || label}`;
  }
  return msg.text || "";
}

// A search hit in one line: a media hit shows the caption and the file name it may have been found by.
export function hitText(hit) {
  if (!MEDIA_KINDS.has(hit.kind)) return hit.text || "";
  const found = [hit.text, hit.attachment?.name].filter(Boolean).join(" · ");
  return `${ICONS[hit.kind]} ${found || t(`media.kind_${hit.kind}`)}`;
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function toBase64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).slice(String(r.result).indexOf(",") + 1));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class Media {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.urls = new Map(); // "blob_id" or "blob_id/thumb" -> {promise, url, used}
    this.httpOk = true; // plain HTTP to /media works on this route (reset on every new connection)
    this.jobs = new Map(); // upload jobs: id -> {chatId, file, caption, sent, state, error}
    this.keys = new Map(); // blob_id -> {key, iv, mime}: blobs of E2EE messages, decrypted after download
    this._sweepTimer = null;
    this.session.addEventListener("opened", () => { this.httpOk = true; });
    setInterval(() => this.sweep(), 15000);
  }

  // -- fetching ---------------------------------------------------------------------------
  url(blobId, { thumb = false } = {}) {
    const key = thumb ? `${blobId}/thumb` : blobId;
    let e = this.urls.get(key);
    if (!e) {
      e = { url: null, used: Date.now() };
      e.promise = this.fetchBlob(blobId, { thumb }).then((blob) => {
        e.url = URL.createObjectURL(blob);
        return e.url;
      });
      e.promise.catch(() => { if (this.urls.get(key) === e) this.urls.delete(key); });
      this.urls.set(key, e);
    }
    e.used = Date.now();
    return e.promise;
  }

  // A blob of an E2EE message is ciphertext on the server: decrypted here (AES-GCM checks it).
  async fetchBlob(blobId, { thumb = false } = {}) {
    const keys = thumb ? null : this.keys.get(blobId);
    const blob = await this.fetchRaw(blobId, { thumb });
    return keys ? this.app.e2ee.decryptBlob(blob, keys) : blob;
  }

  async fetchRaw(blobId, { thumb = false } = {}) {
    if (this.httpOk) {
      let res = null;
      try {
        res = await fetch(`/media/${blobId}${thumb ? "/thumb" : ""}`, {
          headers: { Authorization: `Bearer ${this.session.token}` },
        });
      } catch { /* the route carries no plain HTTP: read over the session below */ }
      if (res?.ok) return res.blob();
      if (res) {
        const body = await res.json().catch(() => null);
        if (body?.error) throw new DariError(body.error.code, body.error.message, body.error.details);
      }
      this.httpOk = false;
    }
    const parts = [];
    let offset = 0;
    let type = "";
    for (;;) {
      const res = await this.session.call("media.read", { blob_id: blobId, offset, thumb }, { wait: 30000 });
      const bytes = fromBase64(res.data);
      parts.push(bytes);
      offset += bytes.length;
      type = res.type || type;
      if (res.eof || !bytes.length) break;
    }
    return new Blob(parts, { type });
  }

  // An <img> that fills itself from the blob store; `key` lets sweep() see it is still shown.
  img(blobId, { thumb = false, alt = "", cls = "", width = null, height = null } = {}) {
    const key = thumb ? `${blobId}/thumb` : blobId;
    const img = el(`img${cls ? "." + cls : ""}`, { alt, width, height, dataset: { mediaKey: key }, draggable: "false" });
    img.classList.add("loading");
    this.url(blobId, { thumb }).then((url) => {
      img.src = url;
      img.classList.remove("loading");
    }, (err) => {
      img.classList.remove("loading");
      img.classList.add("broken");
      img.title = errorText(err);
    });
    return img;
  }

  scheduleSweep() {
    clearTimeout(this._sweepTimer);
    this._sweepTimer = setTimeout(() => this.sweep(), 1500);
  }

  // Revoke the URLs that no element shows (messages scrolled out of the window, closed dialogs).
  sweep() {
    const shown = new Set($$("[data-media-key]").map((n) => n.dataset.mediaKey));
    const now = Date.now();
    for (const [key, e] of this.urls) {
      if (shown.has(key) || now - e.used < 2000 || !e.url) continue;
      URL.revokeObjectURL(e.url);
      this.urls.delete(key);
    }
  }

  async download(blobId, name) {
    try {
      const blob = await this.fetchBlob(blobId);
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: name || "file" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  // -- rendering ----------------------------------------------------------------------------
  // The attachment part of a message bubble: a photo thumbnail or a file card.
  renderAttachment(msg) {
    const a = msg.attachment || {};
    if (msg.kind === "image" && a.blob_id) {
      const [w, h] = fitBox(a.width, a.height, 260, 300);
      const btn = el("button.media-thumb", { type: "button", dataset: { act: "view-media" },
        "aria-label": t("media.open_photo") });
      const alt = msg.text || t("media.kind_image");
      // An E2EE photo's thumbnail is a blob of its own (encrypted by the sender); else the server's.
      btn.append(a.thumb_blob ? this.img(a.thumb_blob, { alt, width: w, height: h })
        : this.img(a.blob_id, { thumb: !!a.thumbnail_id, alt, width: w, height: h }));
      return btn;
    }
    if ((msg.kind === "video" || msg.kind === "voice") && a.blob_id) return this.player(a, msg.kind, `${msg.seq}:${a.blob_id}`);
    return this.fileCard(a, msg.kind);
  }

  // Inline playback of a video or voice message: <video controls>/<audio controls> on a blob: URL
  // fetched with the token (a media element cannot send the Authorization header either). Small
  // files load at once so the length shows; a big video waits for a click before it downloads.
  player(a, kind, id = a.blob_id) {
    const video = kind === "video";
    const key = a.blob_id;
    const dur = el("span.media-duration", { text: a.duration_ms ? formatDuration(a.duration_ms) : "" });
    const media = el(video ? "video.media-video" : "audio.media-audio", { controls: true, preload: "metadata",
      playsinline: video, dataset: { mediaKey: key }, "aria-label": t(`media.kind_${kind}`) });
    if (video) {
      const [w, h] = fitBox(a.width, a.height, 260, 300);
      media.width = w;
      media.height = h;
    }
    media.addEventListener("loadedmetadata", () => {
      if (Number.isFinite(media.duration) && media.duration > 0 && !a.duration_ms) {
        dur.textContent = formatDuration(media.duration * 1000);
      }
    });
    const box = el(`div.media-player.${video ? "is-video" : "is-voice"}`, { dataset: { state: "idle", player: id } });
    const details = el("span.media-details", {},
      video ? null : el("span.file-icon", { "aria-hidden": "true", text: ICONS.voice }), dur,
      el("span.file-size", { text: formatSize(a.size) }),
      el("button.link.small.file-download", { type: "button", dataset: { act: "download-media" },
        "aria-label": `${t("media.download")} ${a.name || t(`media.kind_${kind}`)}`, text: t("media.download") }));
    const load = () => {
      box.dataset.state = "loading";
      return this.url(a.blob_id).then((url) => {
        media.src = url;
        box.dataset.state = "ready";
      }, (err) => {
        box.dataset.state = "failed";
        dur.textContent = errorText(err);
        dur.setAttribute("role", "alert");
      });
    };
    if (a.size != null && a.size > AUTOLOAD_BYTES) {
      const btn = el("button.secondary.small.media-load", { type: "button",
        text: t("media.play_size", { size: formatSize(a.size) }),
        onclick: () => { btn.remove(); load().then(() => media.play().catch(() => {})); } });
      box.append(btn);
      media.hidden = true;
      media.addEventListener("loadedmetadata", () => { media.hidden = false; }, { once: true });
    } else {
      load();
    }
    box.prepend(media);
    box.append(details);
    return box;
  }

  // The chat list is rebuilt when messages arrive: carry the players over so that a video or a
  // voice message keeps playing (and keeps its position) instead of starting again.
  adoptPlayers(oldRoot, newRoot) {
    const old = new Map();
    for (const p of oldRoot.querySelectorAll(".media-player[data-player]")) old.set(p.dataset.player, p);
    if (!old.size) return;
    for (const p of newRoot.querySelectorAll(".media-player[data-player]")) {
      const o = old.get(p.dataset.player);
      if (o && o !== p) p.replaceWith(o);
    }
  }

  fileCard(a, kind = "file") {
    const name = a.name || t(`media.kind_${kind}`);
    const details = [formatSize(a.size)];
    if (a.duration_ms) details.push(formatDuration(a.duration_ms));
    return el("div.file-card", {},
      el("span.file-icon", { "aria-hidden": "true", text: ICONS[kind] || ICONS.file }),
      el("span.file-info", {}, el("span.file-name", { text: name }),
        el("span.file-size", { text: details.filter(Boolean).join(" · ") })),
      el("button.secondary.small.file-download", { type: "button", dataset: { act: "download-media" },
        "aria-label": `${t("media.download")} ${name}`, text: t("media.download") }));
  }

  openViewer(att, caption = "") {
    const d = dialog("tpl-viewer", { onClose: () => { $("#dialog").classList.remove("viewer-dialog"); this.scheduleSweep(); } });
    $("#dialog").classList.add("viewer-dialog");
    const stage = $(".viewer-stage", d.node);
    const img = this.img(att.blob_id, { alt: caption || t("media.kind_image"), cls: "viewer-img" });
    stage.append(img);
    $(".viewer-caption", d.node).textContent = caption;
    $(".viewer-caption", d.node).hidden = !caption;
    $(".viewer-meta", d.node).textContent = [att.width && att.height ? `${att.width}×${att.height}` : "",
      formatSize(att.size)].filter(Boolean).join(" · ");
    $(".viewer-download", d.node).addEventListener("click", () => this.download(att.blob_id, att.name || defaultName(att)));
    $(".viewer-close", d.node).focus();
  }

  // -- uploading ----------------------------------------------------------------------------
  async upload(file, job) {
    const begin = await this.session.call("media.upload_begin", {
      size: file.size, name: (file.name || "file").slice(0, 255), declared_type: (file.type || "").slice(0, 100),
    }, { wait: 30000 });
    const id = begin.upload_id;
    let offset = 0;
    let failures = 0;
    while (offset < file.size) {
      if (job.cancelled) throw new DariError("cancelled", t("media.cancelled"));
      try {
        if (this.httpOk) {
          try {
            const base = offset;
            offset = await this.httpPiece(job, id, offset, file.slice(offset, offset + HTTP_PIECE),
              (n) => this.progress(job, base + n));
          } catch (err) {
            if (err instanceof DariError) throw err;
            this.httpOk = false; // blocked or not forwarded on this route: chunks over the session
            continue;
          }
        } else {
          const piece = file.slice(offset, offset + begin.chunk_size);
          const res = await this.session.call("media.upload_chunk",
            { upload_id: id, offset, data: await toBase64(piece) }, { wait: 30000 });
          offset = res.offset;
        }
        failures = 0;
        this.progress(job, offset);
      } catch (err) {
        if (job.cancelled || !RETRYABLE.has(err.code) || ++failures > 30) throw err;
        await sleep(Math.min(200 * 2 ** failures, 3000));
        offset = (await this.session.call("media.upload_status", { upload_id: id }, { wait: 60000 })).offset;
      }
    }
    job.state = "processing";
    this.renderTray();
    return this.session.call("media.upload_finish", { upload_id: id }, { wait: 60000 });
  }

  httpPiece(job, uploadId, offset, blob, onSent) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      job.xhr = xhr;
      xhr.open("POST", `/media/upload?upload_id=${encodeURIComponent(uploadId)}&offset=${offset}`);
      xhr.setRequestHeader("Authorization", `Bearer ${this.session.token}`);
      xhr.timeout = 120000;
      xhr.upload.onprogress = (ev) => onSent(ev.loaded);
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { /* not dari's answer */ }
        if (body?.result) resolve(body.result.offset);
        else if (body?.error) reject(new DariError(body.error.code, body.error.message, body.error.details));
        else reject(new Error(`HTTP ${xhr.status}`));
      };
      xhr.onerror = () => reject(new Error("network"));
      xhr.ontimeout = () => reject(new Error("timeout"));
      xhr.onabort = () => reject(new DariError("cancelled", t("media.cancelled")));
      xhr.send(blob);
    });
  }

  progress(job, sent) {
    job.sent = Math.min(sent, job.file.size);
    const row = $(`#upload-tray [data-job="${job.id}"]`);
    if (row) {
      $("progress", row).value = job.sent;
      $(".upload-pct", row).textContent = `${Math.floor((100 * job.sent) / Math.max(1, job.file.size))}%`;
    }
  }

  // Upload a file and send it to a chat as a photo/video/voice/file message.
  // `kind` and `durationMs` come from the voice recorder (the server checks the kind against the bytes).
  async sendFile(chatId, file, { caption = "", replyTo = null, kind = null, durationMs = null } = {}) {
    const job = { id: newClientId(), clientId: newClientId(), chatId, file, caption, replyTo, kind, durationMs,
      sent: 0, state: "uploading", error: null, cancelled: false };
    this.jobs.set(job.id, job);
    this.renderTray();
    await this.runJob(job);
  }

  async runJob(job) {
    job.state = "uploading";
    job.error = null;
    job.cancelled = false;
    this.renderTray();
    try {
      // E2EE chats: the bytes are encrypted here (photos re-encoded first) and the server gets ciphertext.
      if (this.app.e2ee.isE2ee(job.chatId)) job.prepared ??= await this.app.e2ee.prepareFile(job.file, job.kind);
      job.blob ??= await this.upload(job.prepared?.upload || job.file, job);
      if (job.prepared?.thumb) job.thumbBlob ??= await this.upload(job.prepared.thumb.upload, { ...job, id: `${job.id}/thumb` });
      job.state = "sending";
      this.renderTray();
      const msg = await this.sendMedia(job);
      this.jobs.delete(job.id);
      this.renderTray();
      this.app.onMessageNew(msg);
    } catch (err) {
      if (job.cancelled) { this.jobs.delete(job.id); this.renderTray(); return; }
      job.state = "failed";
      job.error = err;
      this.renderTray();
    }
  }

  // message.send_media is idempotent by client_id (G2): a call cut off by a dropped or switched
  // connection (the session moving back to the WebSocket, say) is sent again, and the server answers
  // with the message it already stored instead of the job showing a failure for a sent message.
  async sendMedia(job) {
    for (let attempt = 1; ; attempt++) {
      try {
        if (job.prepared) return await this.app.e2ee.sendMedia(job);
        return await this.session.call("message.send_media", {
          chat_id: job.chatId, client_id: job.clientId, blob_id: job.blob.blob_id, caption: job.caption,
          name: (job.file.name || job.blob.name || "file").slice(0, 255), reply_to: job.replyTo ?? undefined,
          kind: job.kind ?? undefined, duration_ms: job.durationMs ?? undefined,
        }, { wait: 60000 });
      } catch (err) {
        if (err?.code !== "unavailable" || attempt >= 3 || job.cancelled) throw err;
      }
    }
  }

  cancel(id) {
    const job = this.jobs.get(id);
    if (!job) return;
    job.cancelled = true;
    job.xhr?.abort();
    this.jobs.delete(id);
    this.renderTray();
  }

  renderTray() {
    const tray = $("#upload-tray");
    if (!tray) return;
    const chatId = this.app.chat?.chatId;
    const rows = [...this.jobs.values()].filter((j) => j.chatId === chatId).map((j) => {
      const failed = j.state === "failed";
      const label = failed ? `${t("media.upload_failed")} — ${errorText(j.error)}` : t(`media.state_${j.state}`);
      return el(`div.upload-row${failed ? ".failed" : ""}`, { dataset: { job: j.id } },
        el("span.file-icon", { "aria-hidden": "true", text: fileIcon(j.file) }),
        el("span.upload-main", {},
          el("span.upload-name", { text: j.file.name || t("media.kind_file") }),
          el("progress", { max: Math.max(1, j.file.size), value: j.sent, "aria-label": t("media.progress") }),
          el("span.upload-state", { role: failed ? "alert" : null, text: label })),
        el("span.upload-pct", { text: `${Math.floor((100 * j.sent) / Math.max(1, j.file.size))}%` }),
        failed ? el("button.link.small", { type: "button", text: t("message.retry"), onclick: () => this.runJob(j) }) : null,
        el("button.icon.small", { type: "button", "aria-label": t("common.cancel"), title: t("common.cancel"),
          text: "×", onclick: () => this.cancel(j.id) }));
    });
    tray.replaceChildren(...rows);
    tray.hidden = rows.length === 0;
  }

  // -- the composer: attach button, paste, drag and drop --------------------------------------
  bindComposer() {
    const input = $("#file-input");
    $("#btn-attach").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = "";
      if (files.length) this.confirmSend(files);
    });
    $("#composer").addEventListener("paste", (ev) => {
      const files = [...(ev.clipboardData?.files || [])];
      if (!files.length) return;
      ev.preventDefault();
      this.confirmSend(files);
    });
    const pane = $("#chat");
    let depth = 0;
    const hasFiles = (ev) => [...(ev.dataTransfer?.types || [])].includes("Files");
    pane.addEventListener("dragenter", (ev) => { if (hasFiles(ev)) { depth++; pane.classList.add("dropping"); } });
    pane.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; pane.classList.remove("dropping"); } });
    pane.addEventListener("dragover", (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
    pane.addEventListener("drop", (ev) => {
      depth = 0;
      pane.classList.remove("dropping");
      const files = [...(ev.dataTransfer?.files || [])];
      if (!files.length) return;
      ev.preventDefault();
      this.confirmSend(files);
    });
  }

  // A dialog with the files to send and one caption (for the first file), as messengers do.
  confirmSend(files) {
    const chatId = this.app.chat.chatId;
    if (chatId === null) return;
    const previews = [];
    const d = dialog("tpl-send-files", { onClose: () => previews.forEach((u) => URL.revokeObjectURL(u)) });
    const list = $(".send-files", d.node);
    const max = this.app.serverInfo?.media_max_bytes;
    for (const f of files.slice(0, 10)) {
      let thumb;
      if (f.type.startsWith("image/")) {
        const u = URL.createObjectURL(f);
        previews.push(u);
        thumb = el("img.send-preview", { src: u, alt: "" });
      } else {
        thumb = el("span.file-icon", { "aria-hidden": "true", text: fileIcon(f) });
      }
      list.append(el("li.send-file", {}, thumb, el("span.file-info", {},
        el("span.file-name", { text: f.name || t("media.kind_file") }), el("span.file-size", { text: formatSize(f.size) }))));
    }
    if (files.length > 10) list.append(el("li.muted.small", { text: t("media.too_many", { n: 10 }) }));
    const form = $("form", d.node);
    const caption = form.caption;
    const errBox = $(".form-error", form);
    if (max && files.some((f) => f.size > max)) errBox.textContent = t("media.too_big", { size: formatSize(max) });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const replyTo = this.app.chat.reply;
      d.close();
      this.app.chat.cancelContext();
      files.slice(0, 10).forEach((f, i) => this.sendFile(chatId, f, { caption: i === 0 ? caption.value.trim() : "",
        replyTo: i === 0 ? replyTo : null }));
    });
    caption.focus();
  }
}

function fileIcon(file) {
  const type = file.type || "";
  if (type.startsWith("image/")) return ICONS.image;
  if (type.startsWith("video/")) return ICONS.video;
  if (type.startsWith("audio/")) return ICONS.voice;
  return ICONS.file;
}

function fitBox(w, h, maxW, maxH) {
  if (!w || !h) return [maxW, Math.round(maxW * 0.75)];
  const s = Math.min(1, maxW / w, maxH / h);
  return [Math.max(40, Math.round(w * s)), Math.max(40, Math.round(h * s))];
}

export function formatDuration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function defaultName(att) {
  const ext = (att.type || "").split("/")[1] || "bin";
  return `dari-${(att.blob_id || "").slice(0, 8)}.${ext.replace("jpeg", "jpg")}`;
}
