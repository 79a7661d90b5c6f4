// Linking a device (docs/e2ee.md, "Linking a device"), for e2ee.js: the page as the approving
// device (it hands over the master seed and the chats' keys) and as the new one (it asks for them).
// As the SDK does it (src/dari/client/e2ee_sync.py): the new device, with no master key yet,
// sends its keys in the clear (they are public; the server records which device sent them) and
// one one-time key to this user's other devices (dari.link_request.v1); the device that approved
// it within LINK_APPROVAL_MS answers over Olm with link_transfer parts (master seed, sessions).
// A request from any other device of this user (a password login elsewhere) is not answered by
// itself: it waits for the user ("key_request"), who shares the keys or says "not me" — a password
// alone must not be enough to obtain the master key.

import { InboundGroup, MasterKey, ed25519Verify } from "./e2ee_olm.js";
import { b64decode, b64encode, canonicalJson, deviceText } from "./e2ee_util.js";

const LINK_APPROVAL_MS = 15 * 60000;
const LINK_PART = 47 * 1024;
const REQUEST_TTL_MS = 7 * 86400000; // a pending key request older than this is dropped
const MAX_REQUESTS = 20; // pending key requests kept (one per device, newest win)

// This page was approved from another device: it waits for the master seed.
export function expectLink() { localStorage.setItem("dari.e2ee.await_link", "1"); }

// device.link_approve went through here: that device may ask for the master key for a while.
export async function approved(core, deviceId) {
  await core.start();
  const table = (await core.store.get("kv", "link_approved")) || {};
  const now = Date.now();
  for (const [k, v] of Object.entries(table)) if (now - v > LINK_APPROVAL_MS) delete table[k];
  table[deviceId] = now;
  await core.store.put("kv", "link_approved", table);
}

export async function requestLink(core) {
  const res = await core.session.call("keys.query", { user_ids: [core.userId] });
  const targets = (res.users || []).flatMap((u) => u.devices || []).map((b) => b.device_id)
    .filter((d) => d !== core.deviceId);
  if (!targets.length) return;
  if (!Object.keys(core.account.oneTimeKeys()).length) {
    core.account.generateOneTimeKeys(1);
    await core._saveAccount();
  }
  const otk = Object.values(core.account.oneTimeKeys())[0];
  const text = deviceText(core.userId, core.deviceId, core.ids.curve25519, core.ids.ed25519);
  const payload = { alg: "dari.link_request.v1", identity_key: core.ids.curve25519, signing_key: core.ids.ed25519,
    one_time_key: otk, device_signature: core.account.sign(text) };
  await core.session.call("todevice.send", { messages: targets.map((d) => ({ device_id: d, payload })) });
  if (core.awaiting === "link") core._emit("linking", {});
}

function checkRequest(core, deviceId, p) {
  // Keys are 43 characters, signatures 86: anything longer is not a request, and is never stored.
  const fields = ["identity_key", "signing_key", "one_time_key", "device_signature"];
  if (!p || !fields.every((k) => typeof p[k] === "string" && p[k].length > 0 && p[k].length <= 200)) {
    throw new Error("bad link request");
  }
  const text = deviceText(core.userId, deviceId, p.identity_key, p.signing_key);
  if (!ed25519Verify(p.signing_key, text, p.device_signature)) throw new Error("link request signature");
}

// `deviceId` among this user's current devices (device.list: logged in, not revoked), else null.
async function currentDevice(core, deviceId) {
  const list = await core.session.call("device.list", {});
  return (list || []).find((d) => d.device_id === deviceId && !d.current) || null;
}

async function requestTable(core) {
  const table = (await core.store.get("kv", "key_requests")) || {};
  const now = Date.now();
  for (const [k, v] of Object.entries(table)) if (now - v.at > REQUEST_TTL_MS) delete table[k];
  return table;
}

function saveRequests(core, table) {
  const newest = Object.entries(table).sort((a, b) => b[1].at - a[1].at).slice(0, MAX_REQUESTS);
  return core.store.put("kv", "key_requests", Object.fromEntries(newest));
}

export async function onLinkRequest(core, m) {
  const p = m.payload;
  const did = m.sender_device;
  if (m.sender_id !== core.userId || did === core.deviceId) throw new Error(`user ${m.sender_id} asked for our master key`);
  if (!core.master || core.awaiting) return; // no current master key to give
  checkRequest(core, did, p);
  // A repeated request from a device that has (or is getting) the keys already.
  if ((core._shared ||= new Set()).has(p.identity_key)) return;
  const mine = (await core.query([core.userId], { refresh: true })).get(core.userId);
  if (mine?.devices.get(did)?.identity_key === p.identity_key) return;
  const table = (await core.store.get("kv", "link_approved")) || {};
  const when = table[did];
  if (when && Date.now() - when <= LINK_APPROVAL_MS) {
    await transfer(core, did, p);
    delete table[did];
    await core.store.put("kv", "link_approved", table);
    return;
  }
  // Not approved here: the user decides, after seeing which device asks.
  const device = await currentDevice(core, did);
  if (!device) throw new Error(`device ${did} is not a current device of ours`);
  const requests = await requestTable(core);
  const known = requests[did];
  const same = known?.request.identity_key === p.identity_key;
  if (same && known.declined) return;
  requests[did] = { request: { identity_key: p.identity_key, signing_key: p.signing_key, one_time_key: p.one_time_key,
    device_signature: p.device_signature }, name: String(device.name || ""), at: Date.now() };
  await saveRequests(core, requests);
  if (!same) core._emit("key_request", { device_id: did, device_name: String(device.name || "") });
}

// Key requests waiting for the user, from devices still logged in: [{device_id, device_name, requested_at}].
export async function keyRequests(core) {
  await core.start();
  const table = await requestTable(core);
  if (!Object.keys(table).length) return [];
  const current = new Set((await core.session.call("device.list", {}) || []).filter((d) => !d.current).map((d) => d.device_id));
  return Object.entries(table).filter(([k, v]) => current.has(Number(k)) && !v.declined)
    .sort((a, b) => a[1].at - b[1].at)
    .map(([k, v]) => ({ device_id: Number(k), device_name: v.name, requested_at: v.at }));
}

// The user approved device `deviceId`'s key request: send it the master key and history keys.
export async function shareKeys(core, deviceId) {
  if (!core.master || core.awaiting) throw new Error("this device does not hold your current encryption keys itself");
  const requests = await requestTable(core);
  const entry = requests[deviceId];
  if (!entry || entry.declined) throw new Error(`device ${deviceId} has not asked for the encryption keys`);
  delete requests[deviceId];
  if (!(await currentDevice(core, deviceId))) {
    await saveRequests(core, requests);
    throw new Error(`device ${deviceId} is not a current device of your account`);
  }
  checkRequest(core, deviceId, entry.request);
  await transfer(core, deviceId, entry.request);
  await saveRequests(core, requests);
}

// "Not me": the request is dropped and the same device keys do not ask again.
export async function declineKeys(core, deviceId) {
  const requests = await requestTable(core);
  if (requests[deviceId]) {
    requests[deviceId].declined = true;
    await saveRequests(core, requests);
  }
}

async function transfer(core, did, p) {
  const s = core.account.outbound(p.identity_key, p.one_time_key);
  (await core._olmSessions(p.identity_key)).push({ id: s.id(), used: Date.now(), s });
  const sessions = [];
  for (const row of await core.store.getAll("inbound")) {
    const g = InboundGroup.fromPickle(row.pickle, core.pickleKey);
    sessions.push({ chat_id: row.meta.chat_id, sender_id: row.meta.sender_id, sender_device: row.meta.sender_device,
      sender_key: row.meta.sender_key, session_id: row.meta.session_id, first_index: g.firstIndex(),
      exported: g.exportAt(g.firstIndex()) });
    g.free();
  }
  const parts = [[]];
  let size = 0;
  for (const x of sessions) {
    const n = canonicalJson(x).length;
    if (parts[parts.length - 1].length && size + n > LINK_PART) { parts.push([]); size = 0; }
    parts[parts.length - 1].push(x);
    size += n;
  }
  const target = { user_id: core.userId, device_id: did, identity_key: p.identity_key };
  for (let i = 0; i < parts.length; i++) {
    await core._sendToDevices([target], "link_transfer",
      { master_seed: b64encode(core.master.seed), part: i, parts: parts.length, sessions: parts[i] });
  }
  (core._shared ||= new Set()).add(p.identity_key);
  core._emit("link_sent", { device_id: did });
}

export async function linkPart(core, c, senderDevice) {
  const seed = b64decode(c.master_seed);
  if (seed.length !== 32) throw new Error("bad master seed");
  const master = new MasterKey(seed);
  const current = (await core.query([core.userId], { refresh: true })).get(core.userId)?.master_key;
  if (current && master.publicKey !== current) { master.free(); throw new Error("not our current master key"); }
  for (const s of c.sessions || []) {
    const g = InboundGroup.fromExport(s.exported);
    if (g.id() !== s.session_id) { g.free(); continue; }
    await core._keepInbound(g, { chat_id: s.chat_id, sender_id: s.sender_id, sender_device: s.sender_device,
      sender_key: s.sender_key, session_id: s.session_id });
  }
  const got = (core._linkParts ||= new Map());
  const parts = got.get(senderDevice) || new Set();
  parts.add(c.part);
  got.set(senderDevice, parts);
  if (!core.master || (core.awaiting && core.master.publicKey !== master.publicKey)) {
    core.master?.free(); // the old key of a device whose user reset the encryption elsewhere
    core.master = master;
    await core.store.write([["kv", "master_seed", seed]]);
  } else {
    master.free();
  }
  if (parts.size >= c.parts && core.awaiting) {
    core.awaiting = null;
    await core.store.put("kv", "await_link", undefined);
    await core._publish();
    core._emit("linked", { device_id: senderDevice });
    core.stateChanged();
  }
}
