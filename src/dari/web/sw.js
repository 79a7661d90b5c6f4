// dari's service worker: the app shell works offline, so a tab closed and reopened without a
// network still starts, shows the chats it had (localStorage, IndexedDB) and says why it cannot
// connect (diag_panel.js).
//
// The server fills in VERSION (a hash of the shell files) and SHELL (their URLs) when it serves
// /sw.js (src/dari/server/pwa.py): a deploy changes the worker, which then re-caches everything.
// Network first: online, the page always gets the server's current files (the cached copy is
// refreshed on the way); the cache answers only when the network fails or takes too long. Only the
// shell's own URLs are handled at all: API calls, /ws, /lp, media and everything else go to the
// network untouched and are never stored.

const VERSION = "__VERSION__";
const SHELL = ["__SHELL__"];
const CACHE = `dari-shell-${VERSION}`;
const NETWORK_MS = 4000; // a blackholed network: answer from the cache after this
const PATHS = new Set(SHELL);

self.addEventListener("install", (ev) => {
  ev.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((url) => new Request(url, { cache: "no-cache", credentials: "same-origin" })));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (ev) => {
  ev.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("dari-shell-") && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (ev) => {
  const req = ev.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  // Hash routes (#chat/3) navigate to "/"; any other navigation (/admin ...) is not the shell.
  const key = req.mode === "navigate" ? (url.pathname === "/" ? "/" : null) : (PATHS.has(url.pathname) ? url.pathname : null);
  if (key === null) return;
  ev.respondWith(networkFirst(url, key));
});

async function networkFirst(url, key) {
  const cache = await caches.open(CACHE);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), NETWORK_MS);
  try {
    // no-cache: revalidate with the server, so a deploy is seen at once, not after max-age.
    const resp = await fetch(new Request(url.pathname + url.search, { cache: "no-cache", credentials: "same-origin",
      signal: abort.signal }));
    if (resp.ok) {
      await cache.put(key, resp.clone());
      return resp;
    }
    if (resp.status < 500) return resp; // the server's own answer (a 404 is one)
    return (await cache.match(key)) || resp; // a proxy's 502 while the server is down: the shell still starts
  } catch (err) {
    const hit = await cache.match(key);
    if (hit) return hit;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
