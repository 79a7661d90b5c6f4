// Recording a voice message in the composer: the microphone button records with getUserMedia and
// MediaRecorder (Opus in WebM on Chromium, in Ogg on Firefox). Tap it to record and tap again (or
// press Send) to send; hold it and let go to send at once, as phone messengers do. The bar shows the
// time against the limit, Cancel throws the recording away. A finished recording goes through the
// same upload job as an attached file (progress, retry after a dropped connection), as kind
// "voice" with its length, so the receiver's page plays it inline.

import { t } from "./i18n.js";
import { formatDuration } from "./media.js";
import { $, errorText } from "./ui.js";

export const MAX_MS = 5 * 60 * 1000;
export const MAX_BYTES = 4 << 20;       // 5 minutes of Opus at 32 kbit/s is 1.2 MB: room to spare
const MIN_MS = 500;                     // shorter is a slip of the finger, not a message
const HOLD_MS = 450;                    // a press longer than this is hold-to-talk: release sends
const TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg"];

function pickType() {
  return TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || "";
}

// Why the microphone could not be used, for the person (the DOMException names of getUserMedia).
function micError(err) {
  const name = err?.name || "";
  if (name === "NotAllowedError" || name === "SecurityError") return t("voice.denied");
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") return t("voice.no_mic");
  if (name === "NotReadableError" || name === "AbortError") return t("voice.mic_busy");
  return `${t("voice.failed")} ${errorText(err)}`.trim();
}

export class VoiceRecorder {
  constructor(app) {
    this.app = app;
    this.state = "idle"; // idle, starting, recording, stopping
    this.rec = null;
    this.stream = null;
    this.chunks = [];
    this.bytes = 0;
    this.startedAt = 0;
    this.pressAt = 0;
    this.timer = null;
    this.chatId = null;
  }

  bind() {
    const btn = $("#btn-voice");
    btn.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      if (this.state === "recording") { this.finish(); return; }
      if (this.state !== "idle") return;
      btn.setPointerCapture?.(ev.pointerId);
      this.pressAt = performance.now();
      this.start();
    });
    btn.addEventListener("pointerup", () => {
      const held = this.pressAt && performance.now() - this.pressAt > HOLD_MS;
      this.pressAt = 0;
      // A tap, or a press that ended while the browser still asked for the microphone: keep
      // recording until Send.
      if (held && this.state === "recording") this.finish();
    });
    // Enter or Space on the focused button: a click without a pointer press.
    btn.addEventListener("click", (ev) => {
      if (ev.detail !== 0) return;
      if (this.state === "idle") this.start();
      else if (this.state === "recording") this.finish();
    });
    $("#voice-send").addEventListener("click", () => this.finish());
    $("#voice-cancel").addEventListener("click", () => this.finish({ send: false }));
    $("#voice-bar").addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.stopPropagation(); this.finish({ send: false }); }
    });
  }

  setError(text) {
    $("#compose-error").textContent = text;
  }

  async start() {
    const chatId = this.app.chat?.chatId;
    if (chatId == null) return;
    this.setError("");
    if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
      this.setError(t("voice.unsupported"));
      return;
    }
    this.state = "starting";
    this.chatId = chatId;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      this.state = "idle";
      this.setError(micError(err));
      return;
    }
    if (this.state !== "starting") { // cancelled while the browser asked for the microphone
      stream.getTracks().forEach((tr) => tr.stop());
      this.state = "idle";
      return;
    }
    let rec;
    try {
      rec = new MediaRecorder(stream, { mimeType: pickType(), audioBitsPerSecond: 32000 });
    } catch (err) {
      stream.getTracks().forEach((tr) => tr.stop());
      this.state = "idle";
      this.setError(`${t("voice.failed")} ${errorText(err)}`.trim());
      return;
    }
    this.stream = stream;
    this.rec = rec;
    this.chunks = [];
    this.bytes = 0;
    rec.addEventListener("dataavailable", (ev) => {
      if (!ev.data?.size) return;
      this.chunks.push(ev.data);
      this.bytes += ev.data.size;
      if (this.bytes >= MAX_BYTES && this.state === "recording") this.finish({ note: t("voice.limit_reached") });
    });
    rec.start(1000); // a piece every second, so the size bound holds while recording
    this.startedAt = performance.now();
    this.state = "recording";
    this.showBar(true);
    this.timer = setInterval(() => this.tick(), 250);
    this.tick();
  }

  tick() {
    const ms = performance.now() - this.startedAt;
    $("#voice-timer").textContent = `${formatDuration(ms)} / ${formatDuration(MAX_MS)}`;
    if (ms >= MAX_MS && this.state === "recording") this.finish({ note: t("voice.limit_reached") });
  }

  showBar(on) {
    const btn = $("#btn-voice");
    btn.setAttribute("aria-pressed", on ? "true" : "false");
    btn.classList.toggle("recording", on);
    btn.setAttribute("aria-label", t(on ? "voice.send" : "voice.record"));
    btn.title = t(on ? "voice.send" : "voice.record");
    $("#voice-bar").hidden = !on;
    $(".compose-row").classList.toggle("is-recording", on);
    if (on) $("#voice-send").focus();
  }

  // Stop recording; send the result unless `send` is false. `note` says why it stopped by itself.
  async finish({ send = true, note = "" } = {}) {
    if (this.state !== "recording") {
      if (this.state === "starting") this.state = "cancelled";
      return;
    }
    this.state = "stopping";
    clearInterval(this.timer);
    const rec = this.rec;
    const durationMs = Math.round(performance.now() - this.startedAt);
    const stopped = new Promise((resolve) => rec.addEventListener("stop", resolve, { once: true }));
    if (rec.state !== "inactive") rec.stop();
    await stopped;
    this.stream.getTracks().forEach((tr) => tr.stop());
    this.rec = null;
    this.stream = null;
    this.state = "idle";
    this.showBar(false);
    $("#composer").focus();
    if (!send) return;
    if (durationMs < MIN_MS || !this.bytes) {
      this.setError(t("voice.too_short"));
      return;
    }
    if (note) this.setError(note);
    const type = (rec.mimeType || this.chunks[0]?.type || "audio/webm").split(";")[0];
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    const file = new File(this.chunks, `voice-${stamp}.${ext}`, { type });
    this.chunks = [];
    const replyTo = this.app.chat.chatId === this.chatId ? this.app.chat.reply : null;
    if (replyTo !== null) this.app.chat.cancelContext();
    await this.app.media.sendFile(this.chatId, file, { kind: "voice", durationMs: Math.min(durationMs, MAX_MS),
      replyTo });
  }
}
