"""End-to-end encryption for the SDK (docs/e2ee.md): a pure core (no network) and a crypto store.

    codec.py     base64 without padding, canonical JSON
    keys.py      master keys, device bundles and their signatures, safety numbers
    store.py     the crypto store (SQLite): pickles, pinned contacts, the local search index
    machine.py   Olm to-device payloads, Megolm envelopes, the receiver's checks
    files.py     AES-256-GCM for media, EXIF stripping

The I/O glue that drives this over a Client lives in dari/client/e2ee_sync.py (and e2ee_link.py).
"""
