// Pure helpers of the E2EE contract (docs/e2ee.md): canonical JSON, unpadded base64, the signed
// device text, safety numbers, AES-256-GCM for media. No olm, no I/O.

export function canonicalJson(v) {
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x ?? null)).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

export function b64encode(bytes) {
  let s = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) s += String.fromCharCode(...bytes.subarray(i, i + chunk));
  return btoa(s).replace(/=+$/, "");
}

export function b64decode(text) {
  const s = String(text).replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const bin = atob(s + "===".slice((s.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const utf8 = new TextEncoder();

// What both signatures of a device bundle cover.
export function deviceText(userId, deviceId, identityKey, signingKey) {
  return canonicalJson({ alg: "dari-device-v1", device_id: deviceId, identity_key: identityKey,
    signing_key: signingKey, user_id: userId });
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// 30 digits for one user: 5,200 rounds of SHA-512 over the master key (docs/e2ee.md).
async function userDigits(userId, masterKey) {
  const raw = b64decode(masterKey);
  let h = concat(utf8.encode("dari-safety-v1"), raw, utf8.encode(String(userId)));
  for (let i = 0; i < 5200; i++) h = new Uint8Array(await crypto.subtle.digest("SHA-512", concat(h, raw)));
  let digits = "";
  for (let i = 0; i < 6; i++) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + h[i * 5 + j]; // 40 bits: exact in a double
    digits += String(n % 100000).padStart(5, "0");
  }
  return digits;
}

// {digits: 60 digits, groups: 12 × 5, qr: "dari-verify:1:..."} for two users, smaller id first.
export async function safetyNumber(a, b) {
  const [lo, hi] = a.user_id < b.user_id ? [a, b] : [b, a];
  const digits = (await userDigits(lo.user_id, lo.master_key)) + (await userDigits(hi.user_id, hi.master_key));
  return { digits, groups: digits.match(/.{5}/g),
    qr: `dari-verify:1:${lo.user_id}:${lo.master_key}:${hi.user_id}:${hi.master_key}` };
}

// AES-256-GCM, fresh key and IV per file; the blob is ciphertext‖tag (WebCrypto's output).
export async function encryptFile(bytes) {
  const keyRaw = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const key = await crypto.subtle.importKey("raw", keyRaw, "AES-GCM", false, ["encrypt"]);
  const data = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, bytes));
  return { data, key: b64encode(keyRaw), iv: b64encode(iv),
    sha256: hex(await crypto.subtle.digest("SHA-256", bytes)),
    blob_id: hex(await crypto.subtle.digest("SHA-256", data)) };
}

// Throws when the tag does not verify (a tampered or truncated blob).
export async function decryptFile(bytes, keyB64, ivB64) {
  const key = await crypto.subtle.importKey("raw", b64decode(keyB64), "AES-GCM", false, ["decrypt"]);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: b64decode(ivB64) }, key, bytes));
}

// Overlapping character pairs (and single characters) of a text, lower-cased: the local search
// keys, so that a Korean, Chinese or Japanese substring of two or more characters is found.
export function grams(text) {
  const chars = [...String(text).toLowerCase().normalize("NFC")].filter((c) => !/\s/.test(c));
  const out = new Set();
  for (let i = 0; i + 1 < chars.length; i++) out.add(chars[i] + chars[i + 1]);
  if (chars.length === 1) out.add(chars[0]);
  return [...out];
}
