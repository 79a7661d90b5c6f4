// The page's local search over E2EE chats (docs/e2ee.md, "Search"): what this device decrypted,
// indexed in IndexedDB by overlapping character pairs (e2ee_util.grams), so that Korean, Chinese and
// Japanese substrings are found. Writes go out in e2ee.js's batches.

import { E2eeStore } from "./e2ee_store.js";
import { grams } from "./e2ee_util.js";

export class LocalIndex {
  constructor(core) {
    this.core = core;
    this._indexed = new Map(); // "chat:seq" -> indexed document, this page's session
  }

  reset() { this._indexed = new Map(); }

  // A message's text and its file's name, as the server indexes captions and names of plaintext chats.
  async index(msg) {
    const name = msg.attachment?.name && msg.kind !== "sticker" ? msg.attachment.name : "";
    const doc = [msg.text, name].filter(Boolean).join(" ");
    if (!this.core.store || !doc) return;
    const id = `${msg.chat_id}:${msg.seq}`;
    if (this._indexed.get(id) === doc) return;
    const old = this._indexed.has(id) ? null : await this.core.store.get("texts", id);
    const before = this._indexed.get(id) ?? old?.doc;
    this._indexed.set(id, doc);
    if (before === doc) return;
    const gs = grams(doc);
    const ops = (before ? grams(before) : []).map((g) => ["grams", `${g}|${id}`, undefined]);
    ops.push(...gs.map((g) => ["grams", `${g}|${id}`, 1]));
    ops.push(["texts", id, { chat_id: msg.chat_id, seq: msg.seq, text: msg.text, name, doc,
      created_at: msg.created_at, sender_id: msg.sender_id, kind: msg.kind }]);
    this.core._later(...ops);
  }

  async unindex(chatId, seq) {
    if (!this.core.store) return;
    const id = `${chatId}:${seq}`;
    const doc = this._indexed.get(id) ?? (await this.core.store.get("texts", id))?.doc;
    this._indexed.delete(id);
    if (!doc) return;
    this.core._later(...grams(doc).map((g) => ["grams", `${g}|${id}`, undefined]), ["texts", id, undefined]);
  }

  // Messages of E2EE chats this device decrypted whose text contains `query` (newest first).
  async search(query, { chatId = null, limit = 50 } = {}) {
    if (!this.core.store) return [];
    await this.core.flushLater();
    const q = query.trim().toLowerCase();
    const gs = grams(q);
    if (!gs.length) return [];
    if ([...q].length === 1) return this._scan(q, chatId, limit);
    let ids = null;
    for (const g of gs.slice(0, 4)) {
      const found = new Set((await this.core.store.keys("grams", E2eeStore.prefix(`${g}|`))).map((k) => k.slice(g.length + 1)));
      ids = ids ? new Set([...ids].filter((x) => found.has(x))) : found;
      if (!ids.size) return [];
    }
    const hits = [];
    for (const id of ids) {
      const row = await this.core.store.get("texts", id);
      if (row && row.doc.toLowerCase().includes(q) && (chatId === null || row.chat_id === chatId)) hits.push(row);
    }
    hits.sort((a, b) => b.created_at - a.created_at);
    return hits.slice(0, limit);
  }

  // One character (a Chinese word, a Korean syllable): no pair to look up, read the texts.
  async _scan(q, chatId, limit) {
    const rows = (await this.core.store.getAll("texts")).filter((r) => r.doc.toLowerCase().includes(q)
      && (chatId === null || r.chat_id === chatId));
    return rows.sort((a, b) => b.created_at - a.created_at).slice(0, limit);
  }
}
