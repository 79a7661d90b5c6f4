// The one module that touches libolm (vendor/olm, @matrix-org/olm 3.2.15 compiled to WebAssembly).
// Everything else (e2ee.js) uses these small classes, so the WASM can be swapped for vodozemac's own
// build later without touching the protocol. olm.js is a classic script (it defines a global Olm),
// loaded on first use only: pages that never open an E2EE chat never fetch the 150 KB of WASM.

const BASE = "/static/vendor/olm";
let ready = null;

export function loadOlm() {
  ready ||= (async () => {
    if (!globalThis.Olm) {
      await new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = `${BASE}/olm.js`;
        s.onload = resolve;
        s.onerror = () => reject(new Error("could not load the encryption library"));
        document.head.append(s);
      });
    }
    await globalThis.Olm.init({ locateFile: () => `${BASE}/olm.wasm` });
    return globalThis.Olm;
  })();
  ready.catch(() => { ready = null; }); // a failed load (offline) is tried again next time
  return ready;
}

function O() {
  if (!globalThis.Olm?.Account) throw new Error("olm not loaded: await loadOlm() first");
  return globalThis.Olm;
}

export class Account {
  constructor(raw) { this.raw = raw; }
  static create() { const a = new (O().Account)(); a.create(); return new Account(a); }
  static fromPickle(pickle, key) { const a = new (O().Account)(); a.unpickle(key, pickle); return new Account(a); }
  pickle(key) { return this.raw.pickle(key); }
  identityKeys() { return JSON.parse(this.raw.identity_keys()); } // {curve25519, ed25519}
  sign(text) { return this.raw.sign(text); }
  maxOneTimeKeys() { return this.raw.max_number_of_one_time_keys(); }
  generateOneTimeKeys(n) { this.raw.generate_one_time_keys(n); }
  oneTimeKeys() { return JSON.parse(this.raw.one_time_keys()).curve25519 || {}; }
  generateFallbackKey() { this.raw.generate_fallback_key(); }
  unpublishedFallbackKey() {
    const all = JSON.parse(this.raw.unpublished_fallback_key()).curve25519 || {};
    const [id] = Object.keys(all);
    return id ? { key_id: id, key: all[id] } : null;
  }
  markPublished() { this.raw.mark_keys_as_published(); }
  outbound(theirIdentityKey, theirOneTimeKey) {
    const s = new (O().Session)();
    s.create_outbound(this.raw, theirIdentityKey, theirOneTimeKey);
    return new OlmSession(s);
  }
  // A pre-key message starting a session: the one-time key it used is removed from the account.
  inbound(senderKey, body) {
    const s = new (O().Session)();
    try {
      s.create_inbound_from(this.raw, senderKey, body);
      this.raw.remove_one_time_keys(s);
    } catch (err) {
      s.free();
      throw err;
    }
    return new OlmSession(s);
  }
  free() { this.raw.free(); }
}

export class OlmSession {
  constructor(raw) { this.raw = raw; }
  static fromPickle(pickle, key) { const s = new (O().Session)(); s.unpickle(key, pickle); return new OlmSession(s); }
  pickle(key) { return this.raw.pickle(key); }
  id() { return this.raw.session_id(); }
  matchesInbound(senderKey, body) { return this.raw.matches_inbound_from(senderKey, body); }
  encrypt(text) { return this.raw.encrypt(text); } // {type: 0|1, body}
  decrypt(type, body) { return this.raw.decrypt(type, body); }
  free() { this.raw.free(); }
}

export class OutboundGroup {
  constructor(raw) { this.raw = raw; }
  static create() { const g = new (O().OutboundGroupSession)(); g.create(); return new OutboundGroup(g); }
  static fromPickle(pickle, key) { const g = new (O().OutboundGroupSession)(); g.unpickle(key, pickle); return new OutboundGroup(g); }
  pickle(key) { return this.raw.pickle(key); }
  id() { return this.raw.session_id(); }
  sessionKey() { return this.raw.session_key(); }
  index() { return this.raw.message_index(); }
  encrypt(text) { return this.raw.encrypt(text); }
  free() { this.raw.free(); }
}

export class InboundGroup {
  constructor(raw) { this.raw = raw; }
  static fromKey(sessionKey) { const g = new (O().InboundGroupSession)(); g.create(sessionKey); return new InboundGroup(g); }
  static fromExport(exported) { const g = new (O().InboundGroupSession)(); g.import_session(exported); return new InboundGroup(g); }
  static fromPickle(pickle, key) { const g = new (O().InboundGroupSession)(); g.unpickle(key, pickle); return new InboundGroup(g); }
  pickle(key) { return this.raw.pickle(key); }
  id() { return this.raw.session_id(); }
  firstIndex() { return this.raw.first_known_index(); }
  exportAt(index) { return this.raw.export_session(index); }
  decrypt(ciphertext) {
    const r = this.raw.decrypt(ciphertext);
    return { plaintext: r.plaintext, index: r.message_index };
  }
  free() { this.raw.free(); }
}

// The user's master key: Ed25519 from a 32-byte seed (the seed is what the device link carries).
export class MasterKey {
  constructor(seed) {
    this.seed = seed;
    this.raw = new (O().PkSigning)();
    this.publicKey = this.raw.init_with_seed(seed);
  }
  static newSeed() { return crypto.getRandomValues(new Uint8Array(32)); }
  sign(text) { return this.raw.sign(text); }
  free() { this.raw.free(); }
}

export function ed25519Verify(publicKey, text, signature) {
  const u = new (O().Utility)();
  try {
    u.ed25519_verify(publicKey, text, signature);
    return true;
  } catch {
    return false;
  } finally {
    u.free();
  }
}
