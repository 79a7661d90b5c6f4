// HTTP long-poll with the small part of the WebSocket interface session.js uses (readyState,
// onopen/onmessage/onclose, send, close), for networks whose proxies break WebSockets.
//
// POST /lp/open -> {sid}; POST /lp/{sid}/send [frames]; POST /lp/{sid}/poll?ack=N&wait=S ->
// {last, closed, frames}. Frames are numbered by the server and kept until a later poll
// acknowledges them, so a lost poll response costs a repeat, never a frame.

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
const WAIT_S = 20;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LongPollSocket {
  constructor(base) {
    this.base = base;
    this.readyState = CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this._ack = 0;
    this._queue = [];
    this._sending = false;
    this._abort = new AbortController();
    this._open();
  }

  async _post(path, body, timeoutMs) {
    const timer = setTimeout(() => this._abort.abort(), timeoutMs);
    try {
      return await fetch(`${this.base}${path}`, {
        method: "POST", cache: "no-store", body, signal: this._abort.signal,
        headers: body ? { "Content-Type": "application/json" } : {},
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async _open() {
    try {
      const resp = await this._post("/lp/open", null, 8000);
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      this.sid = (await resp.json()).sid;
    } catch {
      this._finish(1006);
      return;
    }
    if (this.readyState !== CONNECTING) return;
    this.readyState = OPEN;
    this.onopen?.({});
    this._poll();
  }

  async _poll() {
    let failures = 0;
    while (this.readyState === OPEN) {
      let body;
      try {
        const resp = await this._post(`/lp/${this.sid}/poll?ack=${this._ack}&wait=${WAIT_S}`, null,
          (WAIT_S + 15) * 1000);
        if (resp.status === 404) { this._finish(1001); return; }
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        body = await resp.json();
      } catch {
        if (this.readyState !== OPEN) return;
        failures += 1;
        if (failures >= 3) { this._finish(1006); return; }
        this._abort = new AbortController();
        await sleep(300 * failures);
        continue;
      }
      failures = 0;
      const frames = body.frames || [];
      const first = body.last - frames.length + 1;
      frames.forEach((frame, i) => {
        if (first + i > this._ack && this.readyState === OPEN) this.onmessage?.({ data: JSON.stringify(frame) });
      });
      this._ack = Math.max(this._ack, body.last);
      if (body.closed) { this._finish(body.close_code || 1000); return; }
    }
  }

  send(text) {
    if (this.readyState !== OPEN) throw new Error("long-poll session is not open");
    this._queue.push(text);
    if (!this._sending) this._drain();
  }

  // One POST at a time keeps requests in the order they were sent.
  async _drain() {
    this._sending = true;
    try {
      while (this._queue.length && this.readyState === OPEN) {
        const batch = this._queue.splice(0, this._queue.length);
        try {
          const resp = await this._post(`/lp/${this.sid}/send`, `[${batch.join(",")}]`, 15000);
          if (resp.status !== 202) throw new Error(`HTTP ${resp.status}`);
        } catch {
          this._finish(1006);
          return;
        }
      }
    } finally {
      this._sending = false;
    }
  }

  close() {
    this._finish(1000);
  }

  _finish(code) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this._abort.abort();
    this.onclose?.({ code });
  }
}
