"""The page's crypto (vendored @matrix-org/olm 3.2.15 in Chromium, web/js/e2ee_olm.js and
e2ee_util.js) against the Python side's libraries (vodozemac, cryptography): the same wire format
both ways for Olm, Megolm, master-key signatures, canonical JSON, safety numbers and AES-GCM media.
This is the low-level interop the E2EE contract (docs/e2ee.md) rests on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import aiohttp
import vodozemac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from playwright.async_api import Browser, Page

from tests.conftest import ServerProcess
from tests.test_web import browser, new_page  # noqa: F401  (the fixture)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def safety_digits(user_id: int, master_key: str) -> str:
    """docs/e2ee.md, written out independently of the page's code."""
    raw = unb64(master_key)
    h = b"dari-safety-v1" + raw + str(user_id).encode()
    for _ in range(5200):
        h = hashlib.sha512(h + raw).digest()
    return "".join(f"{int.from_bytes(h[i * 5:i * 5 + 5], 'big') % 100000:05d}" for i in range(6))


async def olm_page(browser: Browser, server: ServerProcess) -> Page:  # noqa: F811
    _, page = await new_page(browser)
    await page.goto(server.url)
    await page.evaluate("""async () => {
        window.O = await import('/static/js/e2ee_olm.js');
        window.U = await import('/static/js/e2ee_util.js');
        await O.loadOlm();
    }""")
    return page


async def test_olm_and_megolm_interoperate_with_vodozemac(server: ServerProcess, browser: Browser) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http, http.get(server.url + "/static/vendor/olm/olm.wasm") as res:
        assert res.status == 200
        assert res.headers["Content-Type"] == "application/wasm"
        assert "'wasm-unsafe-eval'" in res.headers["Content-Security-Policy"]
    async with aiohttp.ClientSession() as http, http.get(server.url + "/sw.js") as res:
        worker = await res.text()
    # The service worker caches the vendored olm with the app shell (an offline page still decrypts).
    assert '"/static/vendor/olm/olm.wasm"' in worker and '"/static/vendor/olm/olm.js"' in worker
    page = await olm_page(browser, server)

    # Olm, page -> Python: the page starts a session with a one-time key of a vodozemac account.
    bob = vodozemac.Account()
    bob.generate_one_time_keys(1)
    otk = next(iter(bob.one_time_keys.values())).to_base64()
    bob.mark_keys_as_published()
    out = await page.evaluate("""([idk, otk]) => {
        window.alice = O.Account.create();
        window.sess = alice.outbound(idk, otk);
        const m1 = sess.encrypt('안녕 bob');
        return {m1, key: alice.identityKeys().curve25519};
    }""", [bob.curve25519_key.to_base64(), otk])
    assert out["m1"]["type"] == 0
    pre = vodozemac.AnyOlmMessage.from_parts(0, unb64(out["m1"]["body"])).to_pre_key()
    assert pre is not None
    bob_sess, plain = bob.create_inbound_session(vodozemac.Curve25519PublicKey.from_base64(out["key"]), pre)
    assert plain.decode() == "안녕 bob"

    # Python -> page, on the same session (a normal message once the page has heard back).
    mtype, body = bob_sess.encrypt("你好 alice".encode()).to_parts()
    got = await page.evaluate("([t, b]) => sess.decrypt(t, b)", [mtype, b64(body)])
    assert got == "你好 alice"
    m2 = await page.evaluate("() => sess.encrypt('second')")
    assert m2["type"] == 1
    assert bob_sess.decrypt(vodozemac.AnyOlmMessage.from_parts(1, unb64(m2["body"]))) == b"second"

    # Olm, Python -> page: vodozemac claims a one-time key of the page's account.
    keys = await page.evaluate("""() => {
        window.carol = O.Account.create();
        carol.generateOneTimeKeys(1);
        const otks = carol.oneTimeKeys();
        carol.markPublished();
        return {idk: carol.identityKeys().curve25519, otk: Object.values(otks)[0]};
    }""")
    dave = vodozemac.Account()
    dsess = dave.create_outbound_session(vodozemac.Curve25519PublicKey.from_base64(keys["idk"]),
                                         vodozemac.Curve25519PublicKey.from_base64(keys["otk"]))
    mtype, body = dsess.encrypt(b"room key inside").to_parts()
    got = await page.evaluate("""([key, t, b]) => {
        const s = carol.inbound(key, b);
        return s.decrypt(t, b);
    }""", [dave.curve25519_key.to_base64(), mtype, b64(body)])
    assert got == "room key inside"

    # Megolm, Python -> page.
    group = vodozemac.GroupSession()
    skey = group.session_key.to_base64()
    ct = group.encrypt('{"chat_id":5,"text":"안녕하세요","type":"text"}'.encode()).to_base64()
    got = await page.evaluate("""([k, c, sid]) => {
        window.ib = O.InboundGroup.fromKey(k);
        return {sid: ib.id(), r: ib.decrypt(c)};
    }""", [skey, ct, group.session_id])
    assert got["sid"] == group.session_id
    assert json.loads(got["r"]["plaintext"])["text"] == "안녕하세요"
    assert got["r"]["index"] == 0
    # A flipped byte fails the signature (or MAC): the page sees an error, not garbage.
    raw = bytearray(unb64(group.encrypt(b"x").to_base64()))
    raw[10] ^= 1
    err = await page.evaluate(
        "c => { try { ib.decrypt(c); return null; } catch (e) { return String(e.message || e); } }", b64(bytes(raw)))
    assert err in ("OLM.BAD_SIGNATURE", "OLM.BAD_MESSAGE_MAC")

    # Megolm, page -> Python; the exported form too (device-link transfer).
    out = await page.evaluate("""() => {
        const g = O.OutboundGroup.create();
        const key = g.sessionKey();
        const c1 = g.encrypt('{"chat_id":9,"text":"こんにちは","type":"text"}');
        const c2 = g.encrypt('two');
        const ib2 = O.InboundGroup.fromKey(key);
        return {key, c1, c2, sid: g.id(), exported: ib2.exportAt(1)};
    }""")
    inbound = vodozemac.InboundGroupSession(vodozemac.SessionKey(out["key"]))
    assert inbound.session_id == out["sid"]
    assert json.loads(inbound.decrypt(vodozemac.MegolmMessage.from_base64(out["c1"])).plaintext)["text"] == "こんにちは"
    imported = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(out["exported"]))
    dec = imported.decrypt(vodozemac.MegolmMessage.from_base64(out["c2"]))
    assert (dec.plaintext, dec.message_index) == (b"two", 1)


async def test_signatures_canonical_json_safety_numbers_and_media(server: ServerProcess, browser: Browser) -> None:  # noqa: F811
    page = await olm_page(browser, server)
    seed = bytes(range(32))
    obj = {"user_id": 7, "device_id": 12, "identity_key": "idk+/", "signing_key": "sk", "alg": "dari-device-v1",
           "note": "안녕 \"q\" \n", "nested": {"b": [1, "二"], "a": None}}
    out = await page.evaluate("""([seed, obj]) => {
        const m = new O.MasterKey(new Uint8Array(seed));
        const text = U.canonicalJson(obj);
        const dev = U.deviceText(7, 12, 'idk+/', 'sk');
        return {pub: m.publicKey, text, sig: m.sign(text), dev};
    }""", [list(seed), obj])
    assert out["text"] == canonical(obj)
    assert out["dev"] == canonical({"alg": "dari-device-v1", "device_id": 12, "identity_key": "idk+/",
                                    "signing_key": "sk", "user_id": 7})
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub_raw = priv.public_key().public_bytes_raw()
    assert unb64(out["pub"]) == pub_raw
    Ed25519PublicKey.from_public_bytes(pub_raw).verify(unb64(out["sig"]), out["text"].encode())
    py_sig = b64(priv.sign("서명 test".encode()))
    ok = await page.evaluate("([k, s]) => [O.ed25519Verify(k, '서명 test', s), O.ed25519Verify(k, 'other', s)]",
                             [out["pub"], py_sig])
    assert ok == [True, False]

    # Safety numbers: the page's and an independent Python computation agree.
    other = b64(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    sn = await page.evaluate("([a, b]) => U.safetyNumber({user_id: 30, master_key: a}, {user_id: 4, master_key: b})",
                             [out["pub"], other])
    assert sn["digits"] == safety_digits(4, other) + safety_digits(30, out["pub"])
    assert len(sn["groups"]) == 12 and all(len(g) == 5 for g in sn["groups"])
    assert sn["qr"] == f"dari-verify:1:4:{other}:30:{out['pub']}"

    # AES-256-GCM media: what the page encrypts, Python decrypts (and the reverse).
    data = bytes(range(256)) * 40
    enc = await page.evaluate("""async (arr) => {
        const r = await U.encryptFile(new Uint8Array(arr));
        return {...r, data: U.b64encode(r.data)};
    }""", list(data))
    blob = unb64(enc["data"])
    assert hashlib.sha256(blob).hexdigest() == enc["blob_id"]
    assert enc["sha256"] == hashlib.sha256(data).hexdigest()
    assert AESGCM(unb64(enc["key"])).decrypt(unb64(enc["iv"]), blob, None) == data
    key, iv = AESGCM.generate_key(bit_length=256), b"\x01" * 12
    ct = AESGCM(key).encrypt(iv, "사진".encode(), None)
    back = await page.evaluate("""async ([c, k, i]) => {
        const p = await U.decryptFile(U.b64decode(c), k, i);
        let bad = null;
        const t = U.b64decode(c); t[0] ^= 1;
        try { await U.decryptFile(t, k, i); } catch (e) { bad = e.name; }
        return {text: new TextDecoder().decode(p), bad};
    }""", [b64(ct), b64(key), b64(iv)])
    assert back == {"text": "사진", "bad": "OperationError"}
    assert not page.errors  # type: ignore[attr-defined]
