// Relays for the browser: the server-signed descriptors of relay.list (src/dari/relay/descriptor.py),
// checked here with WebCrypto's Ed25519 and kept in localStorage, so that the page can reach the
// server through a relay's WebSocket when both routes to its own origin fail.
//
// Wire form of a descriptor: base64url (no padding) of 64 bytes of Ed25519 signature followed by
// the compact JSON body it signs. The same check as the SDK's RelayBook: a trusted key, the right
// body type, well-formed fields, not expired, not revoked.
//
// Which key is trusted: the one relay.list names when it is answered over the page's own origin
// (the page's code came from that origin over the same TLS, so the origin is already trusted
// completely). An answer carried by a relay (a terminating relay sees and could alter frames) may
// not introduce or change the key: its descriptors must carry the key learned from the origin.
// Without WebCrypto Ed25519 (an insecure context, an old browser) nothing is verified, so nothing
// is used: relays fail closed.

const STORE = "dari.relays";
const MAX_BLOB = 4096;
const SIG = 64;
const ID = /^[a-z0-9-]{1,40}$/;
const SERIAL = /^[0-9a-f]{8,32}$/;
const PIN = /^sha256\/[A-Za-z0-9+/]{43}=$/;
const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):([0-9]{1,5})$/;
const KINDS = new Set(["stream", "obfs4", "https"]);
export const LINK_PREFIX = "dari://relay?d=";

export class RelayError extends Error {}

function unb64u(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new RelayError("malformed descriptor: not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  let bin;
  try {
    bin = atob(b64);
  } catch {
    throw new RelayError("malformed descriptor: not base64url");
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

const keyCache = new Map();

async function importKey(text) {
  if (typeof text !== "string" || !text.startsWith("ed25519:")) throw new RelayError("not an ed25519 key");
  if (!keyCache.has(text)) {
    const raw = unb64u(text.slice(8));
    if (raw.length !== 32) throw new RelayError("malformed signing key");
    if (!globalThis.crypto?.subtle) throw new RelayError("this page cannot verify signatures (no WebCrypto: not a secure context)");
    keyCache.set(text, crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]));
  }
  try {
    return await keyCache.get(text);
  } catch (err) {
    keyCache.delete(text);
    throw new RelayError(`this browser cannot verify Ed25519 signatures: ${err.message}`);
  }
}

// The signed body of a blob, if `keyText` signed it and it says `type`; throws RelayError why not.
export async function openSigned(blob, keyText, type) {
  if (typeof blob !== "string" || !blob || blob.length > MAX_BLOB) throw new RelayError("malformed descriptor: empty or too long");
  const raw = unb64u(blob);
  if (raw.length <= SIG) throw new RelayError("malformed descriptor: too short to carry a signature");
  if (!keyText) throw new RelayError("no trusted server key yet");
  const key = await importKey(keyText);
  const sig = raw.slice(0, SIG);
  const payload = raw.slice(SIG);
  if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, sig, payload))) {
    throw new RelayError("bad signature: not signed by the server key this page trusts");
  }
  let body;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch {
    throw new RelayError("malformed descriptor: the body is not JSON");
  }
  if (!body || typeof body !== "object" || body.type !== type || body.v !== 1) {
    throw new RelayError(`malformed descriptor: not a ${type} body`);
  }
  return body;
}

// A verified, current, not revoked descriptor body; throws RelayError saying what is wrong.
export async function verifyDescriptor(blob, keyText, { revoked = new Set(), now = Date.now() } = {}) {
  const d = await openSigned(blob, keyText, "relay");
  const int = (v) => Number.isSafeInteger(v);
  if (!ID.test(d.id ?? "") || !SERIAL.test(d.serial ?? "") || !PIN.test(d.pin ?? "") || !KINDS.has(d.kind ?? "stream")
    || !int(d.issued) || !int(d.expires) || !Array.isArray(d.addresses) || d.addresses.length < 1
    || d.addresses.length > 8) {
    throw new RelayError("malformed descriptor: missing or bad fields");
  }
  for (const a of d.addresses) {
    const m = typeof a === "string" && ADDRESS.exec(a);
    if (!m || !(Number(m[2]) > 0 && Number(m[2]) < 65536)) throw new RelayError(`malformed descriptor: bad address ${a}`);
  }
  if (d.expires * 1000 <= now) throw new RelayError(`expired descriptor: relay ${d.id}`);
  if (d.issued * 1000 > now + 600_000) throw new RelayError(`descriptor for relay ${d.id} is issued in the future`);
  if (revoked.has(d.id) || revoked.has(d.serial)) throw new RelayError(`revoked descriptor: relay ${d.id}`);
  return d;
}

// What the page keeps: {key, relays: {id: blob}, revoked: [...], revoked_issued}.
export class RelayBook {
  constructor(storage = globalThis.localStorage) {
    this.storage = storage;
    this.key = null;
    this.blobs = {};
    this.revoked = new Set();
    this.revokedIssued = 0;
    this.verified = []; // [{d, blob}] after the last check: what routes and Settings use
    try {
      const saved = JSON.parse(storage.getItem(STORE) || "null");
      if (saved && typeof saved === "object") {
        this.key = typeof saved.key === "string" ? saved.key : null;
        this.blobs = saved.relays && typeof saved.relays === "object" ? saved.relays : {};
        this.revoked = new Set(Array.isArray(saved.revoked) ? saved.revoked : []);
        this.revokedIssued = Number(saved.revoked_issued) || 0;
      }
    } catch {
      console.warn("ignoring an unreadable relay list in localStorage");
    }
  }

  _save() {
    this.storage.setItem(STORE, JSON.stringify({
      key: this.key, relays: this.blobs, revoked: [...this.revoked], revoked_issued: this.revokedIssued,
    }));
  }

  // Re-check every kept descriptor (stored copies are never used unchecked); drops bad ones.
  async check() {
    const out = [];
    for (const [id, blob] of Object.entries(this.blobs)) {
      try {
        const d = await verifyDescriptor(blob, this.key, { revoked: this.revoked });
        if (d.id !== id) throw new RelayError("descriptor stored under another id");
        out.push({ d, blob });
      } catch (err) {
        console.info(`dropping relay ${id}: ${err.message}`);
        delete this.blobs[id];
      }
    }
    this.verified = out;
    this._save();
    return out;
  }

  // Take in a relay.list answer. `fromOrigin`: answered over the page's own origin, whose key may
  // be learned (or replaced, after the operator changed it). Returns the problems found.
  async apply(listing, { fromOrigin }) {
    const problems = [];
    const key = typeof listing?.key === "string" ? listing.key : "";
    if (key && key !== this.key) {
      if (fromOrigin) {
        if (this.key) console.info("the server's relay-signing key changed: forgetting relays signed by the old one");
        this.key = key;
        this.revokedIssued = 0;
      } else {
        problems.push("a relay offered another signing key: ignored");
      }
    }
    try {
      const rev = await openSigned(String(listing?.revoked ?? ""), this.key, "revocations");
      if (Array.isArray(rev.revoked) && Number.isSafeInteger(rev.issued) && rev.issued >= this.revokedIssued) {
        this.revoked = new Set(rev.revoked.map(String));
        this.revokedIssued = rev.issued;
      }
    } catch (err) {
      problems.push(`revocation list rejected: ${err.message}`);
    }
    const fresh = {};
    for (const blob of Array.isArray(listing?.relays) ? listing.relays : []) {
      try {
        const d = await verifyDescriptor(blob, this.key, { revoked: this.revoked });
        const old = fresh[d.id] || this.blobs[d.id];
        if (old && old !== blob) {
          // Never let an older copy replace a rotated one.
          const prev = await verifyDescriptor(old, this.key, { revoked: this.revoked }).catch(() => null);
          if (prev && prev.issued > d.issued) { fresh[d.id] = old; continue; }
        }
        fresh[d.id] = blob;
      } catch (err) {
        problems.push(err.message);
      }
    }
    // The origin's answer is the whole list: relays it no longer names are withdrawn. One carried
    // by a relay only adds (a relay must not be able to hide the others); revocations still apply.
    this.blobs = fromOrigin ? fresh : { ...this.blobs, ...fresh };
    await this.check();
    for (const p of problems) console.warn(`relay.list: ${p}`);
    return problems;
  }

  // WebSocket URLs of the usable "https" relays, in the server's order; the scheme follows the
  // page's (an https page may only open wss:). Expiry is checked again at each use.
  wsRoutes(pageProtocol = globalThis.location?.protocol) {
    const scheme = pageProtocol === "https:" ? "wss:" : "ws:";
    const now = Date.now();
    const out = [];
    for (const { d } of this.verified) {
      if (d.kind !== "https" || d.expires * 1000 <= now) continue;
      for (const a of d.addresses) out.push({ kind: "relay", id: d.id, url: `${scheme}//${a}/ws` });
    }
    return out;
  }
}
