// The offline outbox (G7): messages are written to IndexedDB before anything is sent, so a message
// typed while offline survives a page reload and goes out, in order, exactly once (the server
// deduplicates by client_id, so a retry after a lost answer never stores a second copy).

const DB_NAME = "dari";
const STORE = "outbox";

function promisify(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class Outbox {
  constructor() {
    this.db = null;
    this.memory = new Map(); // fallback when IndexedDB is unavailable (private windows of some browsers)
  }

  async open() {
    if (this.db || !("indexedDB" in globalThis)) return;
    try {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => {
        const store = req.result.createObjectStore(STORE, { keyPath: "client_id" });
        store.createIndex("by_order", "order");
      };
      this.db = await promisify(req);
    } catch (err) {
      console.warn("IndexedDB unavailable; the outbox lives in memory only", err);
      this.db = null;
    }
  }

  async _tx(mode, fn) {
    if (!this.db) return fn(null);
    const tx = this.db.transaction(STORE, mode);
    const result = await fn(tx.objectStore(STORE));
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    return result;
  }

  async add(item) {
    await this._tx("readwrite", async (store) => {
      if (store) await promisify(store.put(item));
      else this.memory.set(item.client_id, item);
    });
    return item;
  }

  async put(item) {
    return this.add(item);
  }

  async remove(clientId) {
    await this._tx("readwrite", async (store) => {
      if (store) await promisify(store.delete(clientId));
      else this.memory.delete(clientId);
    });
  }

  // Every queued item of one user, oldest first.
  async all(userId) {
    const items = await this._tx("readonly", async (store) => {
      if (!store) return [...this.memory.values()];
      return promisify(store.index("by_order").getAll());
    });
    return items.filter((it) => it.user_id === userId).sort((a, b) => a.order - b.order);
  }
}

export function newClientId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "w" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
