// Linking a device (docs/e2ee.md, "Linking a device"), for e2ee.js: the page as the approving
// device (it hands over the master seed and the chats' keys) and as the new one (it asks for them).
// As the SDK does it (src/dari/client/e2ee_sync.py): the new device, with no master key yet,
// sends its keys in the clear (they are public; the server records which device sent them) and
// one one-time key to this user's other devices (dari.link_request.v1); the device that approved
// it within LINK_APPROVAL_MS answers over Olm with link_transfer parts (master seed, sessions).

import { InboundGroup, MasterKey, ed25519Verify } from "./e2ee_olm.js";
import { b64decode, b64encode, canonicalJson, deviceText } from "./e2ee_util.js";

const LINK_APPROVAL_MS = 15 * 60000;
const LINK_PART = 47 * 1024;

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
  core._emit("linking", {});
}

export async function onLinkRequest(core, m) {
  const p = m.payload;
  const table = (await core.store.get("kv", "link_approved")) || {};
  const when = table[m.sender_device];
  if (m.sender_id !== core.userId || !when || Date.now() - when > LINK_APPROVAL_MS || !core.master) {
    throw new Error(`device ${m.sender_device} asked for keys it was not approved for`);
  }
  const text = deviceText(core.userId, m.sender_device, p.identity_key, p.signing_key);
  if (!ed25519Verify(p.signing_key, text, p.device_signature)) throw new Error("link request signature");
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
  const target = { user_id: core.userId, device_id: m.sender_device, identity_key: p.identity_key };
  for (let i = 0; i < parts.length; i++) {
    await core._sendToDevices([target], "link_transfer",
      { master_seed: b64encode(core.master.seed), part: i, parts: parts.length, sessions: parts[i] });
  }
  delete table[m.sender_device];
  await core.store.put("kv", "link_approved", table);
  core._emit("link_sent", { device_id: m.sender_device });
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
  if (!core.master) {
    core.master = master;
    await core.store.write([["kv", "master_seed", seed]]);
  } else {
    master.free();
  }
  if (parts.size >= c.parts && (await core.store.get("kv", "await_link"))) {
    await core.store.put("kv", "await_link", undefined);
    await core._publish();
    core._emit("linked", { device_id: senderDevice });
  }
}
