// End-to-end encryption for the page, as docs/e2ee.md specifies: device bundles signed by the
// device and by the user's master key, Olm to-device messages carrying Megolm room keys, one
// outbound Megolm session per chat shared with every verified device of every member (and this
// user's other devices), envelope checks with failure reasons, pinned master keys. State is
// pickled to IndexedDB after every change (e2ee_store.js); olm is behind e2ee_olm.js; the device
// link is in e2ee_link.js and the local search in e2ee_search.js.

import { Account, InboundGroup, MasterKey, OlmSession, OutboundGroup, ed25519Verify, loadOlm } from "./e2ee_olm.js";
import { approved, declineKeys, expectLink, keyRequests, linkPart, onLinkRequest, requestLink, shareKeys } from "./e2ee_link.js";
import { LocalIndex } from "./e2ee_search.js";
import { E2eeStore } from "./e2ee_store.js";
import { DariError } from "./session.js";
import { b64encode, canonicalJson, deviceText } from "./e2ee_util.js";

const ROTATE_MESSAGES = 100;
const ROTATE_MS = 7 * 86400000;
const OTK_TARGET = 50;
const QUERY_TTL_MS = 5 * 60000;
const MAX_PAYLOAD = 64 * 1024;

export class E2ee extends EventTarget {
  constructor(session) {
    super();
    this.session = session;
    this.store = null;
    this.ready = null;
    this.users = new Map(); // user_id -> {master_key, devices: Map(device_id -> bundle), at}
    this.olm = new Map(); // their identity key -> [{id, s: OlmSession, used}]
    this.inbound = new Map(); // `${sender_key}|${session_id}` -> {g: InboundGroup, meta}
    this.outbound = new Map(); // chat_id -> {g: OutboundGroup, meta}
    this.results = new Map(); // decrypted envelopes, by session and ciphertext (history pages come again)
    this.local = new LocalIndex(this);
    this._queue = Promise.resolve();
    this._pulling = false;
    // Why this device cannot encrypt yet (kv "await_link"): "link" (approved by code, its keys are on
    // their way), "login" (a password login while the user already has a master key: another device
    // must share it), "reset" (the user's master key was replaced on another device); else null.
    this.awaiting = null;
  }

  _emit(name, detail) { this.dispatchEvent(new CustomEvent(name, { detail })); }

  // The device's state changed ("ready", waiting, reset): this tab's banner, and the other tabs of
  // this device, which read it again under the lock (_exclusive finds their copy outdated).
  stateChanged() {
    this._emit("state", { state: this.state });
    this.channel?.postMessage({ state: true });
  }

  // One olm operation at a time: sessions are stateful and every change is pickled before the next.
  // Across tabs too (they share this device's database): a Web Lock, and a tab that finds another
  // tab's state newer than its own drops its copies and reads the pickles again (else two tabs could
  // send with the same Megolm index, which receivers reject as replayed).
  locked(fn) {
    const run = () => (navigator.locks && this.store
      ? navigator.locks.request(`dari-e2ee-${this._key}`, () => this._exclusive(fn)) : fn());
    const p = this._queue.then(run);
    this._queue = p.catch(() => {});
    return p;
  }

  async _exclusive(fn) {
    const version = await this.store.get("kv", "version");
    if (version !== undefined && version !== this._version) await this._reload();
    try {
      return await fn();
    } finally {
      this._version = crypto.randomUUID();
      await this.store.put("kv", "version", this._version);
    }
  }

  async _reload() {
    for (const list of this.olm.values()) for (const e of list) e.s.free();
    for (const x of this.outbound.values()) x.g.free();
    this.olm.clear();
    this.outbound.clear();
    this.account.free();
    this.account = Account.fromPickle(await this.store.get("kv", "account"), this.pickleKey);
    const seed = await this.store.get("kv", "master_seed");
    if (seed && (!this.master || b64encode(seed) !== b64encode(this.master.seed))) {
      this.master?.free();
      this.master = new MasterKey(seed);
    }
    const awaiting = await this.store.get("kv", "await_link");
    const was = this.state;
    this.awaiting = awaiting ? (awaiting === true ? "link" : awaiting) : null;
    if (this.state !== was) this._emit("state", { state: this.state });
  }

  // -- start ------------------------------------------------------------------------------
  start() {
    const { user, deviceId } = this.session;
    const key = `${user.user_id}-${deviceId}`;
    if (this.ready && this._key === key) return this.ready;
    this._key = key;
    this.userId = user.user_id;
    this.deviceId = deviceId;
    this.ready = this._start();
    this.ready.catch((err) => { console.warn("e2ee start failed", err); this.ready = null; });
    return this.ready;
  }

  async _start() {
    await loadOlm();
    this.store?.close();
    this.store = new E2eeStore(this.userId, this.deviceId);
    await this.store.open();
    this.pickleKey = await this.store.get("kv", "pickle_key");
    if (!this.pickleKey) {
      this.pickleKey = b64encode(crypto.getRandomValues(new Uint8Array(32)));
      await this.store.put("kv", "pickle_key", this.pickleKey);
    }
    const pickled = await this.store.get("kv", "account");
    if (pickled) {
      this.account = Account.fromPickle(pickled, this.pickleKey);
    } else {
      this.account = Account.create();
      await this._saveAccount();
    }
    this.ids = this.account.identityKeys();
    // Another tab of this device that stores a room key says so: messages waiting here decrypt too.
    this.channel?.close();
    this.channel = new BroadcastChannel(`dari-e2ee-${this._key}`);
    this.channel.onmessage = (ev) => {
      if (ev.data?.roomkey) this._roomKeyStored(ev.data.roomkey);
      if (ev.data?.state) this.locked(() => {}).catch(() => {});
    };
    if (localStorage.getItem("dari.e2ee.await_link")) {
      localStorage.removeItem("dari.e2ee.await_link");
      await this.store.put("kv", "await_link", "link");
    }
    const seed = await this.store.get("kv", "master_seed");
    let awaiting = await this.store.get("kv", "await_link");
    if (seed) {
      this.master = new MasterKey(seed);
    } else if (!awaiting) {
      // A new master key would turn the user's other devices into unverified ones for every
      // contact: only the user's first device makes one; a later one asks a device that holds it.
      const res = await this.session.call("keys.query", { user_ids: [this.userId] });
      if ((res.users || []).some((u) => u.user_id === this.userId && u.master_key)) {
        awaiting = "login";
        await this.store.put("kv", "await_link", awaiting);
      } else {
        await this.setMasterSeed(MasterKey.newSeed());
      }
    }
    this.awaiting = awaiting ? (awaiting === true ? "link" : awaiting) : null;
    this._emit("state", { state: this.state });
    // A device waiting for its keys asks its user's other devices for them; any other publishes its
    // keys, then looks whether its user's master key was replaced while it was away.
    if (this.awaiting) {
      await this.locked(() => requestLink(this));
    } else {
      await this.locked(() => this._publish());
      await this.query([this.userId], { refresh: true });
    }
    this.pullToDevice();
  }

  // A new session (session.open) of a device still waiting for its keys asks its user's devices again.
  async opened() {
    const first = !this.ready;
    await this.start();
    if (!first && this.awaiting) await this.locked(() => requestLink(this));
  }

  // "ready", or why this device cannot encrypt: "link", "login", "reset" (see `awaiting`).
  get state() { return this.master && !this.awaiting ? "ready" : this.awaiting || "link"; }

  async setMasterSeed(seed) {
    this.master?.free();
    this.master = new MasterKey(seed);
    this.awaiting = null;
    await this.store.write([["kv", "master_seed", seed], ["kv", "await_link", undefined]]);
  }

  // A new master key for the user, when no device holding the current one can share it: contacts
  // see the security code change and the user's other devices must be linked again.
  async reset() {
    await this.start();
    await this.locked(async () => {
      await this.setMasterSeed(MasterKey.newSeed());
      this._linkParts = null;
      this.users.delete(this.userId);
      await this._publish();
    });
    this.stateChanged();
  }

  // Key requests of this user's other devices (e2ee_link.js).
  keyRequests() { return keyRequests(this); }

  async shareKeys(deviceId) {
    await this.start();
    return this.locked(() => shareKeys(this, deviceId));
  }

  async declineKeys(deviceId) {
    await this.start();
    return this.locked(() => declineKeys(this, deviceId));
  }

  // Logged out or revoked: this device's keys are gone from the server, and its sessions and
  // decrypted texts go from the browser too.
  async wipe() {
    const name = this.store?.name;
    await this.ready?.catch(() => {});
    this.store?.close();
    this.channel?.close();
    this.channel = null;
    for (const list of this.olm.values()) for (const e of list) e.s.free();
    for (const x of [...this.inbound.values(), ...this.outbound.values()]) x.g.free();
    this.account?.free();
    this.master?.free();
    Object.assign(this, { store: null, ready: null, account: null, master: null, _key: null, _seen: null,
      _batch: [], awaiting: null, _linkParts: null, _shared: null });
    this.local.reset();
    clearTimeout(this._batchTimer);
    this._batchTimer = null;
    this.olm.clear();
    this.inbound.clear();
    this.outbound.clear();
    this.users.clear();
    this.results.clear();
    if (name) await new Promise((resolve) => {
      const req = indexedDB.deleteDatabase(name);
      req.onsuccess = req.onerror = req.onblocked = () => resolve();
    });
  }

  _saveAccount() { return this.store.put("kv", "account", this.account.pickle(this.pickleKey)); }

  get identityKey() { return this.ids.curve25519; }
  get masterKey() { return this.master?.publicKey ?? null; }

  // Upload the bundle (once per identity and master key) and top one-time keys up to OTK_TARGET.
  async _publish() {
    if (!this.master || this.awaiting) return;
    const mark = `${this.ids.curve25519}|${this.master.publicKey}`;
    const params = {};
    if ((await this.store.get("kv", "published")) !== mark) {
      const text = deviceText(this.userId, this.deviceId, this.ids.curve25519, this.ids.ed25519);
      Object.assign(params, { identity_key: this.ids.curve25519, signing_key: this.ids.ed25519,
        master_key: this.master.publicKey, device_signature: this.account.sign(text),
        master_signature: this.master.sign(text) });
    }
    let count = 0;
    if (!params.identity_key) ({ one_time_key_count: count } = await this.session.call("keys.count", {}));
    const want = Math.min(100, Math.max(0, OTK_TARGET - count));
    if (want) this.account.generateOneTimeKeys(want);
    if (!(await this.store.get("kv", "fallback"))) this.account.generateFallbackKey();
    const otks = this.account.oneTimeKeys();
    const fallback = this.account.unpublishedFallbackKey();
    if (!params.identity_key && !Object.keys(otks).length && !fallback) return;
    await this._saveAccount(); // the keys exist before anyone can claim them
    await this.session.call("keys.upload", { ...params, one_time_keys: otks, fallback_key: fallback || undefined });
    this.account.markPublished();
    await this._saveAccount();
    await this.store.write([["kv", "published", mark], ...(fallback ? [["kv", "fallback", fallback.key_id]] : [])]);
  }

  topUp() { return this.ready && this.locked(() => this._publish()); }

  // -- devices and master keys ------------------------------------------------------------
  // keys.changed: ask again next time; a device still waiting asks its own devices again, and a
  // device with its keys looks at once whether its user's master key was replaced elsewhere.
  forget(userId) {
    this.users.delete(userId);
    if (userId !== this.userId || !this.ready || !this.account) return;
    if (this.awaiting) {
      this.locked(() => requestLink(this)).catch((err) => console.warn("link request failed", err));
    } else {
      this.query([userId]).catch((err) => console.warn("own keys not loaded", err));
    }
  }

  // Verified devices of these users ({user_id -> entry}); both signatures checked, master pinned.
  async query(userIds, { refresh = false } = {}) {
    const now = Date.now();
    const need = [...new Set(userIds)].filter((u) => refresh || !this.users.has(u) || now - this.users.get(u).at > QUERY_TTL_MS);
    if (need.length) {
      const res = await this.session.call("keys.query", { user_ids: need });
      const seen = new Set();
      for (const u of res.users || []) {
        seen.add(u.user_id);
        const devices = new Map();
        for (const b of u.devices || []) if (this.verifyBundle(b, u.user_id, u.master_key)) devices.set(b.device_id, b);
        this.users.set(u.user_id, { master_key: u.master_key, devices, at: now });
        if (u.user_id === this.userId) this._ownMaster(u.master_key);
        else await this._pin(u.user_id, u.master_key);
      }
      for (const u of need) if (!seen.has(u)) this.users.set(u, { master_key: null, devices: new Map(), at: now });
    }
    return new Map(userIds.map((u) => [u, this.users.get(u)]));
  }

  verifyBundle(b, userId, masterKey) {
    if (!b || b.user_id !== userId || !masterKey || b.master_key !== masterKey) return false;
    const text = deviceText(b.user_id, b.device_id, b.identity_key, b.signing_key);
    return ed25519Verify(b.signing_key, text, b.device_signature) && ed25519Verify(masterKey, text, b.master_signature);
  }

  // Trust on first use; a different master key later resets verification and is announced.
  async _pin(userId, masterKey) {
    if (!masterKey || userId === this.userId) return;
    const pin = await this.store.get("kv", `pin:${userId}`);
    if (!pin) {
      await this.store.put("kv", `pin:${userId}`, { master_key: masterKey, verified: false, changed_at: null });
    } else if (pin.master_key !== masterKey) {
      await this.store.put("kv", `pin:${userId}`, { master_key: masterKey, verified: false, changed_at: Date.now(),
        was_verified: pin.verified });
      this._emit("keychange", { user_id: userId, master_key: masterKey });
    }
  }

  // Our user's master key on the server is not ours: another device reset it. Contacts no longer
  // trust this device; it says so and asks for the new key as a new device does.
  _ownMaster(masterKey) {
    if (!masterKey || !this.master || this.awaiting || masterKey === this.master.publicKey) return;
    this.awaiting = "reset";
    this.store.put("kv", "await_link", "reset").then(() => this.stateChanged()).catch(() => {});
    setTimeout(() => this.locked(() => requestLink(this)).catch((err) => console.warn("link request failed", err)), 0);
  }

  pin(userId) { return this.store.get("kv", `pin:${userId}`); }

  async markVerified(userId, masterKey) {
    await this.store.put("kv", `pin:${userId}`, { master_key: masterKey, verified: true, changed_at: null });
  }

  // -- to-device (Olm) --------------------------------------------------------------------
  async _olmSessions(theirKey) {
    if (!this.olm.has(theirKey)) {
      const rows = await this.store.getAll("olm", E2eeStore.prefix(`${theirKey}|`));
      this.olm.set(theirKey, rows.map((r) => ({ id: r.id, used: r.used, s: OlmSession.fromPickle(r.pickle, this.pickleKey) })));
    }
    return this.olm.get(theirKey);
  }

  _olmOp(theirKey, entry) {
    entry.used = Date.now();
    return ["olm", `${theirKey}|${entry.id}`, { id: entry.id, used: entry.used, pickle: entry.s.pickle(this.pickleKey) }];
  }

  // Send `type`/`content` to these devices ([{user_id, device_id, identity_key}]) over Olm,
  // starting sessions with claimed one-time keys where none exists. Returns the device ids reached.
  async _sendToDevices(targets, type, content) {
    const ops = [];
    const fresh = [];
    for (const t of targets) if (!(await this._olmSessions(t.identity_key)).length) fresh.push(t);
    if (fresh.length) {
      const claimed = (await this.session.call("keys.claim", { device_ids: fresh.map((t) => t.device_id) })).keys || {};
      for (const t of fresh) {
        const k = claimed[String(t.device_id)];
        if (!k) continue; // no key left: this device gets the room key on a later message
        const s = this.account.outbound(t.identity_key, k.key);
        const entry = { id: s.id(), used: Date.now(), s };
        this.olm.get(t.identity_key).push(entry);
      }
    }
    const messages = [];
    for (const t of targets) {
      const list = this.olm.get(t.identity_key) || [];
      if (!list.length) continue;
      const entry = list.reduce((a, b) => (b.used > a.used ? b : a));
      const plain = canonicalJson({ type, sender_id: this.userId, sender_device: this.deviceId,
        recipient_id: t.user_id, recipient_device: t.device_id, recipient_key: t.identity_key, content });
      const m = entry.s.encrypt(plain);
      ops.push(this._olmOp(t.identity_key, entry));
      const payload = { alg: "olm.v1", sender_key: this.identityKey, type: m.type, body: m.body };
      if (canonicalJson(payload).length > MAX_PAYLOAD) throw new Error("to-device payload too large");
      messages.push({ device_id: t.device_id, payload });
    }
    if (ops.length) await this.store.write(ops);
    for (let i = 0; i < messages.length; i += 200) {
      await this.session.call("todevice.send", { messages: messages.slice(i, i + 200) });
    }
    return new Set(messages.map((m) => m.device_id));
  }

  // Fetch and handle queued to-device messages (event todevice.pending, and at start).
  pullToDevice() {
    if (!this.ready) return Promise.resolve();
    if (this._pulling) { this._pullAgain = true; return Promise.resolve(); }
    this._pulling = true;
    return this.ready.then(() => this.locked(async () => {
      do {
        this._pullAgain = false;
        for (;;) {
          const res = await this.session.call("todevice.fetch", { after: 0, limit: 100 });
          const msgs = res.messages || [];
          for (const m of msgs) {
            try {
              await this._handleToDevice(m);
            } catch (err) {
              console.warn("to-device message dropped", m.id, err.message || err);
            }
          }
          if (msgs.length) await this.session.call("todevice.ack", { up_to: msgs[msgs.length - 1].id });
          if (!res.has_more || !msgs.length) break;
        }
      } while (this._pullAgain);
    })).catch((err) => console.warn("todevice.fetch failed", err)).finally(() => { this._pulling = false; });
  }

  async _olmDecrypt(senderKey, type, body) {
    const list = await this._olmSessions(senderKey);
    if (type === 0) {
      const match = list.find((e) => e.s.matchesInbound(senderKey, body));
      if (match) return [match, match.s.decrypt(type, body)];
      const s = this.account.inbound(senderKey, body);
      const entry = { id: s.id(), used: Date.now(), s };
      const plain = s.decrypt(type, body);
      list.push(entry);
      await this._saveAccount(); // its one-time key is gone
      this.topUp();
      return [entry, plain];
    }
    for (const e of list) {
      try { return [e, e.s.decrypt(type, body)]; } catch { /* another session */ }
    }
    throw new Error("no Olm session decrypts this message");
  }

  async _handleToDevice(m) {
    const p = typeof m.payload === "string" ? JSON.parse(m.payload) : m.payload || {};
    if (p.alg === "dari.link_request.v1") { await onLinkRequest(this, { ...m, payload: p }); return; }
    if (p.alg !== "olm.v1" || typeof p.sender_key !== "string" || typeof p.body !== "string") throw new Error("not olm.v1");
    const [entry, text] = await this._olmDecrypt(p.sender_key, p.type, p.body);
    await this.store.write([this._olmOp(p.sender_key, entry)]);
    const plain = JSON.parse(text);
    if (plain.recipient_id !== this.userId || plain.recipient_device !== this.deviceId
      || plain.recipient_key !== this.identityKey) throw new Error("not for this device");
    if (plain.sender_id !== m.sender_id || plain.sender_device !== m.sender_device) throw new Error("sender mismatch");
    let dev = (await this.query([m.sender_id])).get(m.sender_id)?.devices.get(m.sender_device);
    if (!dev) dev = (await this.query([m.sender_id], { refresh: true })).get(m.sender_id)?.devices.get(m.sender_device);
    if (!dev || dev.identity_key !== p.sender_key) throw new Error("sender device not verified");
    if (plain.type === "room_key") await this._roomKey(plain, p.sender_key);
    else if (plain.type === "link_transfer" && m.sender_id === this.userId) await linkPart(this, plain.content, m.sender_device);
  }

  async _roomKey(plain, senderKey) {
    const c = plain.content || {};
    const g = InboundGroup.fromKey(c.session_key);
    if (g.id() !== c.session_id) { g.free(); throw new Error("room key session id mismatch"); }
    await this._keepInbound(g, { chat_id: c.chat_id, sender_id: plain.sender_id, sender_device: plain.sender_device,
      sender_key: senderKey, session_id: c.session_id });
  }

  // Keep an inbound session unless one that reaches further back is already kept.
  async _keepInbound(g, meta) {
    const key = `${meta.sender_key}|${meta.session_id}`;
    const old = await this._inboundFor(meta.sender_key, meta.session_id);
    if (old && old.g.firstIndex() <= g.firstIndex()) { g.free(); return; }
    old?.g.free();
    this.inbound.set(key, { g, meta });
    await this.store.put("inbound", key, { meta, pickle: g.pickle(this.pickleKey) });
    this.channel?.postMessage({ roomkey: { key, chat_id: meta.chat_id, session_id: meta.session_id } });
    this._roomKeyStored({ chat_id: meta.chat_id, session_id: meta.session_id });
  }

  _roomKeyStored({ key, chat_id: chatId, session_id: sessionId }) {
    if (key) { this.inbound.get(key)?.g.free(); this.inbound.delete(key); } // another tab's: read it again
    for (const k of this.results.keys()) if (k.startsWith(`${sessionId}|`)) this.results.delete(k);
    this._emit("roomkey", { chat_id: chatId, session_id: sessionId });
  }

  // Who the session of this envelope came from (message.edited events name no sender; the
  // server lets only the author edit, and the session's sender was verified over Olm).
  async senderOf(env) {
    await this.start();
    return (await this._inboundFor(env?.sender_key, env?.session_id))?.meta.sender_id ?? null;
  }

  async _inboundFor(senderKey, sessionId) {
    const key = `${senderKey}|${sessionId}`;
    if (!this.inbound.has(key)) {
      const row = await this.store.get("inbound", key);
      if (!row) return null;
      this.inbound.set(key, { g: InboundGroup.fromPickle(row.pickle, this.pickleKey), meta: row.meta });
    }
    return this.inbound.get(key);
  }

  // -- Megolm: sending --------------------------------------------------------------------
  // An envelope for `content` ({type, text, ...}) in chat `chatId` whose members are `memberIds`.
  async encrypt(chatId, memberIds, content) {
    await this.start();
    return this.locked(async () => {
      // Waiting for the device link: the outbox keeps the message and sends it once linked. Waiting
      // for the user to share the keys from another device may take long: refused, never sent plain.
      if (this.awaiting === "login" || this.awaiting === "reset") {
        throw new DariError("forbidden", "this device is waiting for your other device to share your encrypted chats",
          { reason: "awaiting_keys" });
      }
      if (!this.master || this.awaiting) throw new DariError("unavailable", "this device waits for its keys from another device");
      const users = await this.query([...new Set([...memberIds, this.userId])]);
      const targets = [];
      for (const [uid, entry] of users) {
        for (const b of entry?.devices.values() || []) {
          if (!(uid === this.userId && b.device_id === this.deviceId)) {
            targets.push({ user_id: uid, device_id: b.device_id, identity_key: b.identity_key });
          }
        }
      }
      let ob = await this._outboundFor(chatId);
      const members = new Set(memberIds);
      const devices = new Set(targets.map((t) => t.device_id));
      if (!ob || ob.meta.count >= ROTATE_MESSAGES || Date.now() - ob.meta.created_at > ROTATE_MS
        || ob.meta.members.some((u) => !members.has(u))
        || Object.keys(ob.meta.shared).some((d) => !devices.has(Number(d)))) {
        ob = await this._rotate(chatId, memberIds);
      }
      ob.meta.members = [...members];
      const todo = targets.filter((t) => !ob.meta.shared[t.device_id]);
      if (todo.length) {
        const reached = await this._sendToDevices(todo, "room_key",
          { chat_id: chatId, session_id: ob.g.id(), session_key: ob.g.sessionKey() });
        for (const d of reached) ob.meta.shared[d] = true;
      }
      const ciphertext = ob.g.encrypt(canonicalJson({ ...content, chat_id: chatId }));
      ob.meta.count += 1;
      await this.store.put("outbound", chatId, { meta: ob.meta, pickle: ob.g.pickle(this.pickleKey) });
      return { v: 1, alg: "megolm.v1", sender_key: this.identityKey, device_id: this.deviceId,
        session_id: ob.g.id(), ciphertext };
    });
  }

  async _outboundFor(chatId) {
    if (!this.outbound.has(chatId)) {
      const row = await this.store.get("outbound", chatId);
      if (!row) return null;
      this.outbound.set(chatId, { g: OutboundGroup.fromPickle(row.pickle, this.pickleKey), meta: row.meta });
    }
    return this.outbound.get(chatId);
  }

  // A new outbound session; this device keeps its own inbound copy to read what it sent.
  async _rotate(chatId, memberIds) {
    this.outbound.get(chatId)?.g.free();
    const g = OutboundGroup.create();
    const ob = { g, meta: { chat_id: chatId, created_at: Date.now(), count: 0, members: [...memberIds], shared: {} } };
    this.outbound.set(chatId, ob);
    await this.store.put("outbound", chatId, { meta: ob.meta, pickle: g.pickle(this.pickleKey) });
    await this._keepInbound(InboundGroup.fromKey(g.sessionKey()), { chat_id: chatId, sender_id: this.userId,
      sender_device: this.deviceId, sender_key: this.identityKey, session_id: g.id() });
    return ob;
  }

  // Forget the chat's outbound session: the next message starts a new one (a member left, a
  // device was revoked).
  async rotate(chatId) {
    await this.start();
    return this.locked(async () => {
      const ob = await this._outboundFor(chatId);
      if (!ob) return;
      ob.meta.count = ROTATE_MESSAGES; // rotated on the next send, with the members of then
      await this.store.put("outbound", chatId, { meta: ob.meta, pickle: ob.g.pickle(this.pickleKey) });
    });
  }

  // -- device link (e2ee_link.js) ----------------------------------------------------------
  static expectLink() { expectLink(); }

  approved(deviceId) { return approved(this, deviceId); }

  // -- Megolm: receiving ------------------------------------------------------------------
  // {ok: true, content} or {ok: false, reason} for an envelope of a message `ident` (chat:seq)
  // said to be from `senderId` in chat `chatId`.
  async decrypt(chatId, senderId, ident, env) {
    await this.start();
    const memo = `${env?.session_id}|${env?.ciphertext}`;
    const hit = this.results.get(memo);
    if (hit && hit.chatId === chatId && hit.senderId === senderId && hit.ident === ident) return hit.result;
    const result = await this._decrypt(chatId, senderId, ident, env);
    if (result.ok || result.reason !== "unknown_session") {
      if (this.results.size > 5000) this.results.clear();
      this.results.set(memo, { chatId, senderId, ident, result });
    }
    return result;
  }

  async _decrypt(chatId, senderId, ident, env) {
    if (!env || env.alg !== "megolm.v1" || typeof env.ciphertext !== "string" || typeof env.session_id !== "string") {
      return { ok: false, reason: "tampered" };
    }
    const ib = await this._inboundFor(env.sender_key, env.session_id);
    if (!ib) return { ok: false, reason: "unknown_session" };
    if (ib.meta.sender_id !== senderId || ib.meta.sender_device !== env.device_id) return { ok: false, reason: "wrong_sender" };
    if (ib.meta.chat_id !== chatId) return { ok: false, reason: "wrong_chat" };
    let r;
    try {
      r = ib.g.decrypt(env.ciphertext);
    } catch (err) {
      return { ok: false, reason: /UNKNOWN_MESSAGE_INDEX/.test(String(err?.message || err)) ? "unknown_session" : "tampered" };
    }
    let content;
    try { content = JSON.parse(r.plaintext); } catch { return { ok: false, reason: "tampered" }; }
    if (!content || content.chat_id !== chatId) return { ok: false, reason: "wrong_chat" };
    const seen = await this._seenOf(env.session_id);
    const used = seen.get(r.index);
    if (used && used !== ident) return { ok: false, reason: "replayed" };
    if (!used) {
      seen.set(r.index, ident);
      this._later(["seen", `${env.session_id}|${r.index}`, ident]);
    }
    return { ok: true, content };
  }

  async flushLater() {
    if (!this._batchTimer) return;
    clearTimeout(this._batchTimer);
    this._batchTimer = null;
    const ops = this._batch;
    this._batch = [];
    await this.store.write(ops);
  }

  // Megolm indices already used, per session: read once, then kept in memory (a burst of messages
  // costs no read each).
  async _seenOf(sessionId) {
    this._seen ||= new Map();
    let m = this._seen.get(sessionId);
    if (!m) {
      const prefix = `${sessionId}|`;
      const range = E2eeStore.prefix(prefix);
      const [keys, values] = await Promise.all([this.store.keys("seen", range), this.store.getAll("seen", range)]);
      m = this._seen.get(sessionId) || new Map(keys.map((k, i) => [Number(k.slice(prefix.length)), values[i]]));
      this._seen.set(sessionId, m);
    }
    return m;
  }

  // Writes that are not olm state (replay marks, the search index) go out in batches, one
  // transaction per burst of messages.
  _later(...ops) {
    (this._batch ||= []).push(...ops);
    if (this._batchTimer) return;
    this._batchTimer = setTimeout(() => {
      const ops = this._batch;
      this._batch = [];
      this._batchTimer = null;
      this.store.write(ops).catch((err) => console.warn("e2ee: batch not written", err));
    }, 100);
  }

}
