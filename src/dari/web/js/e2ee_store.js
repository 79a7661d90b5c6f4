// E2EE state in IndexedDB, one database per account and device ("dari-e2ee-<user>-<device>"):
// the Olm account, Olm and Megolm sessions (as olm pickles), pinned master keys, the Megolm indices
// already used (replay check) and the local search index of decrypted messages.
//
// Pickles are encrypted by olm with a random pickle key kept in the same database. That key is
// beside the pickles, so it protects nothing from someone who can read this browser profile; it
// only keeps the pickles in olm's normal (encrypted) format. A browser gives a page no better
// secret store without asking the user for a passphrase on every start, which dari does not do.

const STORES = ["kv", "olm", "inbound", "outbound", "seen", "grams", "texts"];

function promisify(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class E2eeStore {
  constructor(userId, deviceId) {
    this.name = `dari-e2ee-${userId}-${deviceId}`;
    this.db = null;
  }

  async open() {
    const req = indexedDB.open(this.name, 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      for (const s of STORES) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s);
    };
    this.db = await promisify(req);
  }

  close() {
    this.db?.close();
    this.db = null;
  }

  async get(store, key) {
    return promisify(this.db.transaction(store).objectStore(store).get(key));
  }

  async getAll(store, range) {
    return promisify(this.db.transaction(store).objectStore(store).getAll(range));
  }

  async keys(store, range) {
    return promisify(this.db.transaction(store).objectStore(store).getAllKeys(range));
  }

  // Several writes in one transaction: [[store, key, value|undefined(delete)], ...].
  async write(ops) {
    const names = [...new Set(ops.map((o) => o[0]))];
    const tx = this.db.transaction(names, "readwrite");
    for (const [store, key, value] of ops) {
      if (value === undefined) tx.objectStore(store).delete(key);
      else tx.objectStore(store).put(value, key);
    }
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  put(store, key, value) {
    return this.write([[store, key, value]]);
  }

  // Keys starting with `prefix` (strings).
  static prefix(prefix) {
    return IDBKeyRange.bound(prefix, `${prefix}\uffff`);
  }
}
