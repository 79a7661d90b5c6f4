// Voice and video calls over WebRTC (docs/protocol.md, "Calls"). The server keeps the call's state
// and relays signaling over the session, so a call is set up on whatever route carries the page
// (WebSocket, long-poll, a relay); media then flows peer to peer, or through TURN when the network
// allows nothing else. Whoever is already in a call offers to each device that joins it: the
// caller to the callee in a 1:1 call, and everyone to a newcomer in a group call (a mesh, at most 8).

import { t } from "./i18n.js";
import { formatDuration } from "./media.js";
import { $, errorText, toast } from "./ui.js";

const ENDED_SHOWN_MS = 1500;

// Why the microphone or camera could not be used (the DOMException names of getUserMedia).
function mediaError(err) {
  const name = err?.name || "";
  if (name === "NotAllowedError" || name === "SecurityError") return t("call.denied");
  if (name === "NotFoundError" || name === "OverconstrainedError") return t("call.no_device");
  if (name === "NotReadableError" || name === "AbortError") return t("call.device_busy");
  return errorText(err) || String(err);
}

class Peer {
  constructor(calls, deviceId, userId) {
    this.calls = calls;
    this.deviceId = deviceId;
    this.userId = userId;
    this.queued = []; // candidates that arrived before the remote description
    this.audio = document.createElement("audio");
    this.audio.autoplay = true;
    this.audio.dataset.device = deviceId;
    $("#call-audio").append(this.audio);
    calls.applySink(this.audio);
    const pc = new RTCPeerConnection(calls.rtcConfig);
    this.pc = pc;
    for (const track of calls.local?.getTracks() || []) pc.addTrack(track, calls.local);
    pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      this.send({ type: "candidate", candidate: c ? c.candidate : "", sdp_mid: c?.sdpMid ?? null,
        sdp_mline_index: c?.sdpMLineIndex ?? null });
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (ev.track.kind === "audio") this.audio.srcObject = stream;
      else calls.showRemoteVideo(stream);
    };
    pc.onconnectionstatechange = () => calls.onPeerState(this);
  }

  send(payload) {
    const call = this.calls.call;
    if (!call) return;
    this.calls.app.session.call("call.signal", { call_id: call.id, to_device: this.deviceId, payload })
      .catch((err) => console.warn("call.signal", err));
  }

  async offer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this.send({ type: "offer", sdp: this.pc.localDescription.sdp });
  }

  async onSignal(p) {
    const pc = this.pc;
    if (p.type === "offer" || p.type === "answer") {
      await pc.setRemoteDescription({ type: p.type, sdp: p.sdp });
      for (const c of this.queued.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (p.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        this.send({ type: "answer", sdp: pc.localDescription.sdp });
      }
    } else if (p.candidate) {
      const c = { candidate: p.candidate, sdpMid: p.sdp_mid, sdpMLineIndex: p.sdp_mline_index };
      if (pc.remoteDescription) await pc.addIceCandidate(c).catch((err) => console.warn("candidate", err));
      else this.queued.push(c);
    }
  }

  close() {
    this.pc.close();
    this.audio.srcObject = null;
    this.audio.remove();
  }
}

export class Calls {
  constructor(app) {
    this.app = app;
    this.call = null;       // {id, chatId, video, group, title, state, joined, answeredAt}
    this.peers = new Map(); // device id -> Peer
    this.local = null;      // our MediaStream
    this.rtcConfig = {};
    this.sinkId = "";
    this.starting = false;
    this.held = [];         // events that arrived while call.start was on its way
    this.timer = null;
    this.ringing = null;    // the call id the ring tone is for
    this.ringTimer = null;
    this.ringCtx = null;
    this.ringNote = null;
  }

  me() { return this.app.session.user?.user_id; }
  myDevice() { return this.app.session.deviceId; }

  bind() {
    $("#btn-call-voice").addEventListener("click", () => this.start(false));
    $("#btn-call-video").addEventListener("click", () => this.start(true));
    $("#call-accept").addEventListener("click", () => this.accept());
    $("#call-decline").addEventListener("click", () => this.decline());
    $("#call-hangup").addEventListener("click", () => this.hangup());
    $("#call-mute").addEventListener("click", (ev) => this.toggle("audio", ev.currentTarget, "call.mute", "call.unmute"));
    $("#call-camera").addEventListener("click", (ev) => this.toggle("video", ev.currentTarget, "call.camera_off", "call.camera_on"));
    $("#call-speaker").addEventListener("change", (ev) => this.setSink(ev.target.value));
  }

  // The chat header's buttons: 1:1 chats get voice and video, groups voice (a mesh of up to 8).
  renderButtons(kind) {
    $("#btn-call-voice").hidden = !(kind === "direct" || kind === "group");
    $("#btn-call-video").hidden = kind !== "direct";
  }

  async iceConfig() {
    const creds = await this.app.session.call("call.turn_credentials", {});
    this.rtcConfig = { iceServers: creds.ice_servers, iceTransportPolicy: creds.relay_only ? "relay" : "all" };
  }

  async media(video) {
    this.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { width: 640, height: 480 } : false });
    if (video) {
      $("#call-local-video").srcObject = this.local;
      $("#call-videos").hidden = false;
    }
  }

  async start(video) {
    const chatId = this.app.chat.chatId;
    if (this.call || this.starting || chatId === null) return;
    this.starting = true;
    try {
      await this.iceConfig();
      await this.media(video);
    } catch (err) {
      this.starting = false;
      this.release();
      toast(mediaError(err), { kind: "error" });
      return;
    }
    let info;
    try {
      info = await this.app.session.call("call.start", { chat_id: chatId, video });
    } catch (err) {
      this.starting = false;
      if (err.details?.reason === "call_running") return this.joinRunning(err.details.call_id, chatId);
      this.release();
      toast(errorText(err), { kind: "error" });
      return;
    }
    this.starting = false;
    if (info.state === "ended") {
      this.release();
      toast(t(info.reason === "busy" ? "call.busy" : "call.no_answer"), { kind: "error" });
      this.held = [];
      return;
    }
    this.adopt(info, { joined: true, state: "calling" });
    for (const [name, p] of this.held.splice(0)) this.onEvent(name, p);
  }

  // A group chat already has a call: take part in it.
  async joinRunning(callId, chatId) {
    const chat = this.app.chats.get(chatId);
    this.adopt({ call_id: callId, chat_id: chatId, video: false, group: true, title: chat?.title || "" },
      { joined: false, state: "ringing" });
    await this.accept();
  }

  adopt(info, { joined, state }) {
    const chat = this.app.chats.get(info.chat_id);
    this.call = { id: info.call_id, chatId: info.chat_id, video: !!info.video, group: !!info.group, joined, state,
      title: info.group ? (chat?.title || info.title) : (chat?.title || info.caller_name), answeredAt: null };
    this.render();
  }

  async accept() {
    const call = this.call;
    if (!call || call.joined) return;
    call.state = "connecting";
    this.render();
    try {
      await this.iceConfig();
      if (!this.local) await this.media(call.video);
    } catch (err) {
      toast(mediaError(err), { kind: "error" });
      this.app.session.call("call.decline", { call_id: call.id }).catch(() => {});
      this.teardown();
      return;
    }
    // Joined before the answer arrives, so an offer that overtakes it is handled, not dropped.
    call.joined = true;
    try {
      await this.app.session.call("call.accept", { call_id: call.id });
      this.render();
    } catch (err) {
      toast(errorText(err), { kind: "error" });
      if (this.call === call) this.teardown();
    }
  }

  async decline() {
    const call = this.call;
    if (!call) return;
    this.teardown();
    try {
      await this.app.session.call("call.decline", { call_id: call.id });
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  async hangup() {
    const call = this.call;
    if (!call) return;
    this.finish(t("call.ended"));
    try {
      await this.app.session.call("call.hangup", { call_id: call.id });
    } catch (err) {
      console.warn("call.hangup", err);
    }
  }

  // -- events from the server --------------------------------------------------------------
  onEvent(name, p) {
    if (this.starting && name !== "call.ringing") { this.held.push([name, p]); return; }
    const call = this.call;
    const mine = call && p.call_id === call.id;
    switch (name) {
      case "call.ringing":
        // Already in a call (or placing one): the other call rings out and becomes a missed call.
        if (!this.call && !this.starting) this.adopt(p, { joined: false, state: "ringing" });
        break;
      case "call.answered_elsewhere":
        if (mine && p.device_id !== this.myDevice()) this.finish(t("call.answered_elsewhere"));
        break;
      case "call.accepted":
        if (mine && call.joined && p.device_id !== this.myDevice()) {
          call.state = "connecting";
          this.render();
          this.peer(p.device_id, p.user_id).offer().catch((err) => console.warn("offer", err));
        }
        break;
      case "call.signal":
        if (mine && call.joined && p.to_device === this.myDevice()) {
          this.peer(p.from_device, p.from_user).onSignal(p.payload).catch((err) => console.warn("signal", err));
        }
        break;
      case "call.left": {
        const peer = mine ? this.peers.get(p.device_id) : null;
        if (peer) { peer.close(); this.peers.delete(p.device_id); }
        break;
      }
      case "call.missed":
        if (mine && !call.joined && p.user_ids.includes(this.me())) this.finish(t("call.missed"));
        break;
      case "call.declined":
        if (mine && p.user_id === this.me() && !call.joined) this.finish(t("call.declined"));
        break;
      case "call.ended": {
        if (!mine) break;
        let key = "call.ended";
        if (p.reason === "declined") key = "call.declined";
        else if (p.reason === "missed") key = call.joined ? "call.no_answer" : "call.missed";
        this.finish(t(key));
        break;
      }
      default:
        break;
    }
  }

  // After a reload: a call still ringing for us.
  async resume() {
    if (this.call) return;
    try {
      const calls = await this.app.session.call("call.current", {});
      // A call this device was in before a reload: its media is gone with the old page.
      for (const c of calls) {
        if (c.members.some((m) => m.device_id === this.myDevice() && m.state === "joined") && c.call_id !== this.call?.id) {
          this.app.session.call("call.hangup", { call_id: c.call_id }).catch(() => {});
        }
      }
      const ringing = calls.find((c) => c.members.some((m) => m.user_id === this.me() && m.state === "ringing"));
      if (ringing && !this.call) this.adopt(ringing, { joined: false, state: "ringing" });
    } catch { /* no call, or not now */ }
  }

  peer(deviceId, userId) {
    let peer = this.peers.get(deviceId);
    if (!peer) {
      peer = new Peer(this, deviceId, userId);
      this.peers.set(deviceId, peer);
    }
    return peer;
  }

  onPeerState(peer) {
    const call = this.call;
    if (!call) return;
    const state = peer.pc.connectionState;
    if (state === "connected" && call.state !== "active") {
      call.state = "active";
      call.answeredAt = call.answeredAt || Date.now();
      this.listSpeakers();
      this.render();
    } else if (state === "failed" && ![...this.peers.values()].some((p) => p.pc.connectionState === "connected")) {
      call.state = "failed";
      this.render();
    }
  }

  showRemoteVideo(stream) {
    $("#call-remote-video").srcObject = stream;
    $("#call-videos").hidden = false;
  }

  // -- controls ----------------------------------------------------------------------------
  toggle(kind, button, onKey, offKey) {
    const tracks = this.local?.getTracks().filter((tr) => tr.kind === kind) || [];
    if (!tracks.length) return;
    const off = tracks[0].enabled;
    for (const tr of tracks) tr.enabled = !off;
    button.setAttribute("aria-pressed", String(off));
    button.textContent = t(off ? offKey : onKey);
  }

  // Speaker (audio output) switching: setSinkId where the browser has it (Chromium, Edge).
  async listSpeakers() {
    const wrap = $("#call-speaker-wrap");
    if (!("setSinkId" in HTMLMediaElement.prototype) || !navigator.mediaDevices?.enumerateDevices) return;
    const outputs = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audiooutput");
    const select = $("#call-speaker");
    select.replaceChildren(...outputs.map((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || t("call.speaker_n", { n: i + 1 });
      return o;
    }));
    select.value = this.sinkId || "default";
    if (select.selectedIndex < 0) select.selectedIndex = 0; // no "default" entry: show the first one
    wrap.hidden = outputs.length < 2;
  }

  setSink(id) {
    this.sinkId = id;
    for (const peer of this.peers.values()) this.applySink(peer.audio);
  }

  applySink(audio) {
    if (this.sinkId && audio.setSinkId) audio.setSinkId(this.sinkId).catch((err) => console.warn("setSinkId", err));
  }

  // -- view --------------------------------------------------------------------------------
  render() {
    const call = this.call;
    const box = $("#call-overlay");
    box.hidden = !call;
    clearInterval(this.timer);
    this.timer = null;
    if (!call) { this.stopRing(); return; }
    box.dataset.state = call.state;
    $("#call-title").textContent = call.title;
    const incoming = call.state === "ringing" && !call.joined;
    if (incoming) this.ring(call); else this.stopRing();
    $("#call-incoming").hidden = !incoming;
    $("#call-controls").hidden = incoming || call.state === "ended";
    $("#call-camera").hidden = !call.video;
    const key = incoming ? (call.group ? "call.incoming_group" : call.video ? "call.incoming_video" : "call.incoming_voice")
      : `call.state_${call.state}`;
    if (call.state !== "ended") $("#call-status").textContent = t(key);
    const tick = () => {
      $("#call-timer").textContent = call.answeredAt ? formatDuration(Date.now() - call.answeredAt) : "";
    };
    tick();
    if (call.state === "active") this.timer = setInterval(tick, 1000);
  }

  // Ringing: a two-tone ring from WebAudio (no sound file to ship; silent where the browser has not
  // allowed audio yet) and, when the tab is hidden, a notification that opens the page.
  ring(call) {
    if (this.ringing === call.id) return;
    this.stopRing();
    this.ringing = call.id;
    try {
      this.ringCtx = this.ringCtx || new AudioContext();
      this.ringCtx.resume().catch(() => {});
      const tone = () => {
        const ctx = this.ringCtx;
        const gain = ctx.createGain();
        gain.gain.setValueAtTime(0.0001, ctx.currentTime);
        gain.gain.exponentialRampToValueAtTime(0.15, ctx.currentTime + 0.05);
        gain.gain.setValueAtTime(0.15, ctx.currentTime + 0.9);
        gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 1);
        gain.connect(ctx.destination);
        for (const hz of [440, 480]) {
          const osc = ctx.createOscillator();
          osc.frequency.value = hz;
          osc.connect(gain);
          osc.start();
          osc.stop(ctx.currentTime + 1);
        }
      };
      tone();
      this.ringTimer = setInterval(tone, 3000);
    } catch (err) {
      console.info("no ring tone:", err.message);
    }
    if (document.hidden && this.app.notificationsOn()) {
      try {
        this.ringNote = new Notification(call.title, { body: t(call.group ? "call.incoming_group"
          : call.video ? "call.incoming_video" : "call.incoming_voice"), tag: `dari-call-${call.id}` });
        this.ringNote.onclick = () => { window.focus(); this.ringNote?.close(); };
      } catch (err) {
        console.warn("notification failed", err);
      }
    }
  }

  stopRing() {
    this.ringing = null;
    clearInterval(this.ringTimer);
    this.ringTimer = null;
    this.ringNote?.close();
    this.ringNote = null;
  }

  // The call is over for this page: say why for a moment, then close.
  finish(status) {
    const call = this.call;
    if (!call) return;
    call.state = "ended";
    this.release();
    this.render();
    $("#call-status").textContent = status;
    setTimeout(() => { if (this.call === call) this.teardown(); }, ENDED_SHOWN_MS);
  }

  teardown() {
    this.release();
    this.call = null;
    this.render();
  }

  release() {
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    for (const tr of this.local?.getTracks() || []) tr.stop();
    this.local = null;
    $("#call-local-video").srcObject = null;
    $("#call-remote-video").srcObject = null;
    $("#call-videos").hidden = true;
    for (const b of ["#call-mute", "#call-camera"]) $(b).setAttribute("aria-pressed", "false");
    $("#call-mute").textContent = t("call.mute");
    $("#call-camera").textContent = t("call.camera_off");
  }

  // For tests and the diagnosis panel: per peer connection, the bytes received and the kind of
  // path in use (the selected candidate pair's local side: host, srflx or relay, and its protocol).
  async stats() {
    const peers = [];
    for (const peer of this.peers.values()) {
      const report = await peer.pc.getStats();
      const byId = new Map([...report.values()].map((s) => [s.id, s]));
      let bytes = 0;
      let audioPackets = 0;
      let path = null;
      for (const s of report.values()) {
        if (s.type === "inbound-rtp") {
          bytes += s.bytesReceived || 0;
          if (s.kind === "audio") audioPackets += s.packetsReceived || 0;
        }
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const local = byId.get(byId.get(s.selectedCandidatePairId)?.localCandidateId);
          if (local) path = { local: local.candidateType, protocol: local.relayProtocol || local.protocol };
        }
      }
      peers.push({ device: peer.deviceId, bytes, audioPackets, path });
    }
    return { peers, bytes: peers.reduce((n, p) => n + p.bytes, 0),
      audioPackets: peers.reduce((n, p) => n + p.audioPackets, 0), paths: peers.map((p) => p.path).filter(Boolean) };
  }
}
