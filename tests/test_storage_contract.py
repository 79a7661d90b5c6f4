"""One storage contract, run against both backends: SQLite (a temp file) and PostgreSQL (a fresh schema).

The PostgreSQL half needs the server on 127.0.0.1:5432 (override with DARI_TEST_PG_URL). Outside CI
it skips with the reason when that server is unreachable; with CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from dari.bus import Bus
from dari.client import Client
from dari.config import Settings
from dari.protocol.errors import DariError, ErrorCode
from dari.services.core import Caller
from dari.services.registry import Services
from dari.storage import Database, StoredEvent, Tx, migrations, open_database

PG_URL = os.environ.get("DARI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "correct horse battery"

# -- PostgreSQL availability and per-test schemas --------------------------------------------

_pg_state: dict[str, str | None] = {}


def _pg_unreachable() -> str | None:
    """None when PostgreSQL answers (and pg_trgm is installed), else why not. Checked once."""
    if "error" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
                # The extension is database-wide; install it once in public so every test schema
                # (search_path "<schema>, public") finds gin_trgm_ops there.
                conn.execute("SELECT pg_advisory_lock(4242)")
                try:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                finally:
                    conn.execute("SELECT pg_advisory_unlock(4242)")
            _pg_state["error"] = None
        except Exception as exc:
            _pg_state["error"] = f"{type(exc).__name__}: {exc}".strip()
    return _pg_state["error"]


def require_pg() -> None:
    error = _pg_unreachable()
    if error is None:
        return
    reason = f"PostgreSQL at {PG_URL} is unreachable ({error})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL backend tests")
    pytest.skip(reason)


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema},public', safe='')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema; the schema is dropped afterwards."""
    require_pg()
    import psycopg

    schema = f"dari_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'dari.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = open_database(db_url)
    await database.start()
    yield database
    await database.close()


# -- storage contract ---------------------------------------------------------------------------


def _insert_meta(key: str, value: str = "v") -> Callable[[Tx], int]:
    return lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


def _meta(key: str) -> Callable[[Tx], Any]:
    return lambda tx: tx.scalar("SELECT value FROM meta WHERE key = ?", (key,))


async def test_dialect_and_row_lock_suffix(db: Database, db_url: str) -> None:
    def fn(tx: Tx) -> tuple[str, str]:
        return tx.dialect, tx.for_update

    dialect, suffix = await db.write(fn)
    if db_url.startswith("sqlite:"):
        assert (dialect, suffix) == ("sqlite", "")
    else:
        assert (dialect, suffix) == ("postgresql", " FOR UPDATE")
    await db.write(_insert_meta("locked"))
    assert await db.write(lambda tx: tx.scalar(f"SELECT value FROM meta WHERE key = ?{tx.for_update}",
                                               ("locked",))) == "v"


async def test_migrations_are_idempotent(db: Database, db_url: str) -> None:
    versions = [v for v, _, _ in migrations.MIGRATIONS]
    assert await db.read(lambda tx: [r[0] for r in tx.all("SELECT version FROM schema_migrations"
                                                          " ORDER BY version")]) == versions
    assert await db.write(lambda tx: migrations.apply(tx, 0)) == []
    await db.write(_insert_meta("survives"))
    # More processes starting at once on the same database: one migrates, the others wait and
    # find nothing to do; nothing is lost.
    others = [open_database(db_url) for _ in range(3)]
    await asyncio.gather(*(o.start() for o in others))
    try:
        for other in others:
            assert await other.read(_meta("survives")) == "v"
            assert await other.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM schema_migrations")) == len(versions)
    finally:
        for other in others:
            await other.close()


async def test_write_then_read(db: Database) -> None:
    assert await db.write(_insert_meta("k", "hello")) == 1
    assert await db.read(_meta("k")) == "hello"
    assert await db.read(_meta("missing")) is None
    rows = await db.read(lambda tx: tx.all("SELECT key, value FROM meta WHERE key IN (?, ?) ORDER BY key",
                                           ("k", "missing")))
    assert rows == [("k", "hello")]


async def test_executemany_and_rowcount(db: Database) -> None:
    await db.write(lambda tx: tx.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                             [(f"m{i}", str(i)) for i in range(10)]))
    n = await db.write(lambda tx: tx.execute("UPDATE meta SET value = 'x' WHERE key LIKE 'm%'"))
    assert n == 10


async def test_percent_and_question_mark_literals(db: Database) -> None:
    """`?` inside a string literal is not a placeholder; a literal `%` survives translation."""
    row = await db.read(lambda tx: tx.one("SELECT '100% sure?', ?, 'a''?b'", ("x?%",)))
    assert row is not None and tuple(row) == ("100% sure?", "x?%", "a'?b")


async def test_booleans_bind_into_integer_columns(db: Database) -> None:
    def fn(tx: Tx) -> Any:
        uid = tx.scalar("INSERT INTO users (handle, display_name, password_hash, created_at) VALUES"
                        " (?, ?, ?, ?) RETURNING id", ("booly", "B", "h", 1))
        tx.execute("INSERT INTO friends (user_id, friend_id, favourite, hidden, created_at) VALUES"
                   " (?, ?, ?, ?, ?)", (uid, uid, True, False, 1))
        return tx.one("SELECT favourite, hidden FROM friends WHERE user_id = ?", (uid,))

    row = await db.write(fn)
    assert row is not None and tuple(row) == (1, 0)


async def test_returning_ids(db: Database) -> None:
    def insert(handle: str) -> Callable[[Tx], int]:
        return lambda tx: int(tx.scalar(
            "INSERT INTO users (handle, display_name, password_hash, created_at) VALUES (?, ?, ?, ?)"
            " RETURNING id", (handle, handle, "h", 1)))

    first = await db.write(insert("first"))
    second = await db.write(insert("second"))
    assert isinstance(first, int) and second > first
    many = await asyncio.gather(*(db.write(insert(f"user{i}")) for i in range(20)))
    assert len(set(many)) == 20 and min(many) > second
    assert await db.read(lambda tx: tx.scalar("SELECT handle FROM users WHERE id = ?", (second,))) == "second"


async def test_failing_op_rolls_back_alone(db: Database) -> None:
    def failing(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('bad', 'half-stored')")
        raise DariError(ErrorCode.INVALID_PARAMS, "no")

    def sql_error(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('bad2', 'half-stored')")
        tx.execute("SELECT * FROM no_such_table")

    results = await asyncio.gather(
        *(db.write(_insert_meta(f"ok{i}")) for i in range(5)), db.write(failing), db.write(sql_error),
        *(db.write(_insert_meta(f"ok{i}")) for i in range(5, 10)), return_exceptions=True)
    assert results[:5] == [1] * 5 and results[7:] == [1] * 5
    assert isinstance(results[5], DariError) and results[5].code == ErrorCode.INVALID_PARAMS
    assert isinstance(results[6], Exception) and not isinstance(results[6], DariError)
    keys = await db.read(lambda tx: sorted(r[0] for r in tx.all("SELECT key FROM meta")))
    assert keys == sorted(f"ok{i}" for i in range(10))
    # The writer is still healthy afterwards.
    assert await db.write(_insert_meta("after")) == 1


async def test_unique_violation_is_a_clean_error(db: Database) -> None:
    await db.write(_insert_meta("dup"))
    results = await asyncio.gather(db.write(_insert_meta("dup")), db.write(_insert_meta("fine")),
                                   return_exceptions=True)
    err = results[0]
    assert isinstance(err, DariError) and err.code == ErrorCode.CONFLICT, repr(err)
    assert not err.retryable
    assert results[1] == 1
    assert await db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM meta WHERE key IN ('dup', 'fine')")) == 2


async def test_events_reach_on_commit_in_commit_order(db: Database) -> None:
    seen: list[StoredEvent] = []
    db.on_commit = seen.extend

    def op(i: int) -> Callable[[Tx], list[int]]:
        def fn(tx: Tx) -> list[int]:
            a = tx.emit("t.first", {"i": i}, recipients=[1], user_id=1, now=i)
            b = tx.emit("t.second", {"i": i}, recipients=[1, 2], chat_id=None, user_id=1, now=i)
            return [a.id, b.id]

        return fn

    def failing(tx: Tx) -> None:
        tx.emit("t.never", {}, recipients=[1], user_id=1)
        raise DariError(ErrorCode.CONFLICT, "rolled back")

    jobs = [db.write(op(i)) for i in range(100)]
    jobs.insert(50, db.write(failing))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    returned = [eid for r in results if isinstance(r, list) for eid in r]
    ids = [e.id for e in seen]
    assert all(a < b for a, b in itertools.pairwise(ids)), "ids must increase in commit order"
    assert sorted(returned) == ids
    assert "t.never" not in {e.type for e in seen}
    # Within one op, its events keep their order; every op's pair is adjacent.
    for k in range(0, len(seen), 2):
        assert (seen[k].type, seen[k + 1].type) == ("t.first", "t.second")
        assert seen[k].payload == seen[k + 1].payload
    stored = await db.read(lambda tx: [int(r[0]) for r in tx.all("SELECT id FROM events ORDER BY id")])
    assert stored == ids


async def test_concurrent_writes_are_group_committed(db: Database) -> None:
    await asyncio.gather(*(db.write(_insert_meta(f"g{i}")) for i in range(300)))
    assert db.stats["max_batch"] > 1
    assert db.stats["commits"] < db.stats["committed_ops"]
    assert await db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM meta WHERE key LIKE 'g%'")) == 300


async def test_read_sees_committed_writes_only(db: Database) -> None:
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('pending', 'x')")
        loop.call_soon_threadsafe(gate.set)
        import time

        time.sleep(0.3)

    task = asyncio.ensure_future(db.write(slow))
    await gate.wait()
    assert await db.read(_meta("pending")) is None
    await task
    assert await db.read(_meta("pending")) == "x"


# -- services on both backends ----------------------------------------------------------------


class Svc:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def call(self, caller: Caller | None, method: str, **params: Any) -> Any:
        # Through JSON, as a client sees it (sync payloads are raw JSON).
        return msgspec.json.decode(msgspec.json.encode(await self.s.call(caller, method, params)))

    async def signup(self, handle: str, name: str | None = None) -> Caller:
        res = await self.call(None, "account.signup", handle=handle, display_name=name or handle.title(),
                              password=PASSWORD, device_name="phone")
        return Caller(res["user"]["user_id"], res["device_id"])


def make_settings() -> Settings:
    return Settings(argon2_time_cost=1, argon2_memory_kib=8192)


@pytest.fixture
async def svc(db_url: str) -> AsyncIterator[Svc]:
    services = Services(make_settings(), open_database(db_url), Bus())
    await services.start()
    yield Svc(services)
    await services.close()


async def _pair(svc: Svc) -> tuple[Caller, Caller, int]:
    alice = await svc.signup("alice")
    bob = await svc.signup("bob")
    await svc.call(alice, "friend.add", handle="bob")
    chat = await svc.call(alice, "chat.open_direct", user_id=bob.user_id)
    return alice, bob, int(chat["chat_id"])


async def test_signup_login_and_duplicate_handle(svc: Svc) -> None:
    alice = await svc.signup("alice")
    with pytest.raises(DariError) as exc:
        await svc.signup("alice")
    assert exc.value.code == ErrorCode.CONFLICT
    res = await svc.call(None, "account.login", handle="alice", password=PASSWORD, device_name="PC")
    assert res["user"]["user_id"] == alice.user_id and res["device_id"] != alice.device_id
    with pytest.raises(DariError) as exc:
        await svc.call(None, "account.login", handle="alice", password="wrong password!")
    assert exc.value.code == ErrorCode.UNAUTHENTICATED
    caller = await svc.s.accounts.authenticate(res["token"])
    assert caller.user_id == alice.user_id
    devices = await svc.call(alice, "device.list")
    assert sorted(d["name"] for d in devices) == ["PC", "phone"]


async def test_friends_and_direct_chat(svc: Svc) -> None:
    alice, bob, chat_id = await _pair(svc)
    friends = await svc.call(alice, "friend.list")
    assert [f["user"]["handle"] for f in friends] == ["bob"]
    await svc.call(alice, "friend.update", user_id=bob.user_id, favourite=True)
    again = await svc.call(bob, "chat.open_direct", user_id=alice.user_id)
    assert again["chat_id"] == chat_id  # one 1:1 chat per pair
    await svc.call(bob, "friend.block", user_id=alice.user_id)
    # Withheld from the blocker, shown to the sender as sent and unread (KakaoTalk reveals no block).
    sent = await svc.call(alice, "message.send", chat_id=chat_id, client_id="c1", text="hi")
    assert sent["unread"] == 1
    mine = await svc.call(alice, "message.history", chat_id=chat_id)
    assert [m["text"] for m in mine["messages"]][-1] == "hi" and mine["messages"][-1]["unread"] == 1
    theirs = await svc.call(bob, "message.history", chat_id=chat_id)
    assert "hi" not in [m["text"] for m in theirs["messages"]]
    listed = {c["chat_id"]: c for c in await svc.call(bob, "chat.list")}[chat_id]
    assert listed["unread"] == 0 and (listed["last_message"] or {}).get("text") != "hi"


async def test_send_is_idempotent_by_client_id(svc: Svc) -> None:
    alice, _bob, chat_id = await _pair(svc)
    first = await svc.call(alice, "message.send", chat_id=chat_id, client_id="same", text="once")
    retry = await svc.call(alice, "message.send", chat_id=chat_id, client_id="same", text="once")
    assert retry["seq"] == first["seq"] and retry["created_at"] == first["created_at"]
    # Retries racing each other (same batch or not) still store one row.
    racing = await asyncio.gather(*(svc.call(alice, "message.send", chat_id=chat_id, client_id="race",
                                             text="raced") for _ in range(10)))
    assert len({r["seq"] for r in racing}) == 1
    count = await svc.s.core.db.read(lambda tx: tx.scalar(
        "SELECT COUNT(*) FROM messages WHERE sender_id = ? AND client_id IN ('same', 'race')", (alice.user_id,)))
    assert count == 2
    other = await svc.call(alice, "chat.create_group", title="g", member_ids=[])
    with pytest.raises(DariError) as exc:
        await svc.call(alice, "message.send", chat_id=other["chat_id"], client_id="same", text="elsewhere")
    assert exc.value.code == ErrorCode.CONFLICT


async def test_seq_is_gap_free_under_200_concurrent_sends(svc: Svc) -> None:
    alice, bob, _ = await _pair(svc)
    carol = await svc.signup("carol")
    group = await svc.call(alice, "chat.create_group", title="busy", member_ids=[bob.user_id, carol.user_id])
    chat_id = group["chat_id"]
    senders = [alice, bob, carol]
    sent = await asyncio.gather(*(svc.call(senders[i % 3], "message.send", chat_id=chat_id, client_id=f"c{i}",
                                           text=f"message {i}") for i in range(200)))
    seqs = sorted(m["seq"] for m in sent)
    assert len(set(seqs)) == 200
    detail = await svc.call(alice, "chat.get", chat_id=chat_id)
    last = detail["last_seq"]
    every = []
    before = None
    while True:
        page = await svc.call(alice, "message.history", chat_id=chat_id, limit=200,
                              **({"before_seq": before} if before else {}))
        every = [m["seq"] for m in page["messages"]] + every
        if not page["has_more"]:
            break
        before = page["messages"][0]["seq"]
    assert every == list(range(1, last + 1))  # gap-free, system messages included
    assert set(seqs) <= set(every)


async def test_history_pages_backwards(svc: Svc) -> None:
    alice, _bob, chat_id = await _pair(svc)
    for i in range(25):
        await svc.call(alice, "message.send", chat_id=chat_id, client_id=f"h{i}", text=f"h{i}")
    page = await svc.call(alice, "message.history", chat_id=chat_id, limit=10)
    assert [m["text"] for m in page["messages"]] == [f"h{i}" for i in range(15, 25)] and page["has_more"]
    page2 = await svc.call(alice, "message.history", chat_id=chat_id, limit=10,
                           before_seq=page["messages"][0]["seq"])
    assert [m["text"] for m in page2["messages"]] == [f"h{i}" for i in range(5, 15)] and page2["has_more"]
    page3 = await svc.call(alice, "message.history", chat_id=chat_id, limit=10,
                           before_seq=page2["messages"][0]["seq"])
    assert [m["text"] for m in page3["messages"] if m["kind"] == "text"] == [f"h{i}" for i in range(5)]
    assert not page3["has_more"]


SEARCH_TEXTS = [
    "Hello World from dari",
    "안녕하세요 여러분 반갑습니다",
    "我们明天去北京吃烤鸭",
    "今日は東京に行きます",
    "100% sure about it",
    "snake_case names",
    "snakeXcase names",
]


@pytest.mark.parametrize(("query", "expected"), [
    ("World", ["Hello World from dari"]),
    ("hello", ["Hello World from dari"]),          # case-insensitive, as SQLite's trigram FTS is
    ("안녕", ["안녕하세요 여러분 반갑습니다"]),           # two Korean syllables: shorter than a trigram
    ("반갑습니다", ["안녕하세요 여러분 반갑습니다"]),
    ("북경", []),
    ("北京", ["我们明天去北京吃烤鸭"]),
    ("明天去北京", ["我们明天去北京吃烤鸭"]),
    ("東京", ["今日は東京に行きます"]),
    ("東京に行", ["今日は東京に行きます"]),
    ("0% s", ["100% sure about it"]),              # a literal %, not a wildcard
    ("e_c", ["snake_case names"]),                 # a literal _, not a wildcard
    ("%", ["100% sure about it"]),
])
async def test_search_latin_and_cjk(svc: Svc, query: str, expected: list[str]) -> None:
    alice, _bob, chat_id = await _pair(svc)
    for i, text in enumerate(SEARCH_TEXTS):
        await svc.call(alice, "message.send", chat_id=chat_id, client_id=f"s{i}", text=text)
    hits = await svc.call(alice, "message.search", query=query)
    assert sorted(h["text"] for h in hits) == expected
    outsider = await svc.signup("mallory")
    assert await svc.call(outsider, "message.search", query=query) == []


async def test_search_skips_unsent_and_sees_edits(svc: Svc) -> None:
    alice, _bob, chat_id = await _pair(svc)
    a = await svc.call(alice, "message.send", chat_id=chat_id, client_id="a", text="first draft 초안")
    b = await svc.call(alice, "message.send", chat_id=chat_id, client_id="b", text="regretted 후회")
    await svc.call(alice, "message.edit", chat_id=chat_id, seq=a["seq"], text="final version 최종본")
    await svc.call(alice, "message.unsend", chat_id=chat_id, seq=b["seq"])
    assert await svc.call(alice, "message.search", query="draft") == []
    assert [h["seq"] for h in await svc.call(alice, "message.search", query="최종본")] == [a["seq"]]
    assert await svc.call(alice, "message.search", query="후회") == []


async def test_read_pointer_and_unread_counts(svc: Svc) -> None:
    alice, bob, chat_id = await _pair(svc)
    sent = [await svc.call(alice, "message.send", chat_id=chat_id, client_id=f"r{i}", text=f"r{i}")
            for i in range(3)]
    assert all(m["unread"] == 1 for m in sent)
    chats = {c["chat_id"]: c for c in await svc.call(bob, "chat.list")}
    assert chats[chat_id]["unread"] == 3 and chats[chat_id]["last_message"]["text"] == "r2"
    await svc.call(bob, "chat.read", chat_id=chat_id, seq=sent[1]["seq"])
    chats = {c["chat_id"]: c for c in await svc.call(bob, "chat.list")}
    assert chats[chat_id]["unread"] == 1
    page = await svc.call(alice, "message.history", chat_id=chat_id)
    assert [m["unread"] for m in page["messages"] if m["kind"] == "text"] == [0, 0, 1]
    alice_chats = {c["chat_id"]: c for c in await svc.call(alice, "chat.list")}
    assert alice_chats[chat_id]["unread"] == 0


async def test_sync_replays_after_a_cursor_in_order(svc: Svc) -> None:
    alice, bob, chat_id = await _pair(svc)
    start = await svc.call(bob, "sync.events", cursor=0, limit=1000)
    cursor = start["cursor"]
    for i in range(30):
        await svc.call(alice, "message.send", chat_id=chat_id, client_id=f"y{i}", text=f"y{i}")
    got: list[dict[str, Any]] = []
    while True:
        batch = await svc.call(bob, "sync.events", cursor=cursor, limit=7)
        got.extend(batch["events"])
        cursor = batch["cursor"]
        if not batch["has_more"]:
            break
    cursors = [e["cursor"] for e in got]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    texts = [e["payload"]["text"] for e in got if e["event"] == "message.new"]
    assert texts == [f"y{i}" for i in range(30)]
    again = await svc.call(bob, "sync.events", cursor=cursor)
    assert again["events"] == []


# -- PostgreSQL only: several nodes on one database, failures ---------------------------------


async def test_two_nodes_gap_free_seq_and_event_prefix(pg_url: str) -> None:
    """Two "nodes" (two databases + service stacks) on one schema, concurrent senders.

    Into one shared chat, per-chat seq stays gap-free (G3). Into chats of their own, the nodes do
    not contend for a row lock, so without a cluster-wide order on event ids one node could commit
    ids above ones the other has not committed yet; a device polling the log would move its cursor
    past them and never see them (G4). What the poller saw must equal the full log, in order.
    """
    nodes = [Svc(Services(make_settings(), open_database(pg_url), Bus())) for _ in range(2)]
    for node in nodes:
        await node.s.start()
    try:
        a, b = nodes
        alice = await a.signup("alice")
        bob = await b.signup("bob")
        carol = await b.signup("carol")
        shared = (await a.call(alice, "chat.create_group", title="shared",
                               member_ids=[bob.user_id, carol.user_id]))["chat_id"]
        chat_a = (await a.call(alice, "chat.create_group", title="a", member_ids=[bob.user_id]))["chat_id"]
        chat_b = (await b.call(carol, "chat.create_group", title="b", member_ids=[bob.user_id]))["chat_id"]
        start = (await b.call(bob, "sync.events", cursor=0, limit=1000))["cursor"]
        stop = asyncio.Event()
        polled: list[int] = []

        async def poll() -> None:
            cursor = start
            while True:
                done = stop.is_set()
                batch = await b.call(bob, "sync.events", cursor=cursor, limit=1000)
                polled.extend(e["cursor"] for e in batch["events"])
                cursor = batch["cursor"]
                if done and not batch["has_more"]:
                    return

        poller = asyncio.ensure_future(poll())

        async def sender(node: Svc, who: Caller, chat_id: int, tag: str, n: int) -> list[int]:
            out = await asyncio.gather(*(node.call(who, "message.send", chat_id=chat_id, client_id=f"{tag}{i}",
                                                   text=f"{tag}{i}") for i in range(n)))
            return [m["seq"] for m in out]

        for _round in range(3):
            results = await asyncio.gather(
                sender(a, alice, shared, f"sa{_round}-", 60), sender(b, carol, shared, f"sc{_round}-", 60),
                sender(a, alice, chat_a, f"a{_round}-", 100), sender(b, carol, chat_b, f"b{_round}-", 100))
            assert len(set(results[0]) | set(results[1])) == 120
        stop.set()
        await poller
        for chat_id in (shared, chat_a, chat_b):
            rows = await a.s.core.db.read(lambda tx, c=chat_id: [r[0] for r in tx.all(
                "SELECT seq FROM messages WHERE chat_id = ? ORDER BY seq", (c,))])
            assert rows == list(range(1, len(rows) + 1))
        everything: list[int] = []
        cursor = start
        while True:
            batch = await a.call(bob, "sync.events", cursor=cursor, limit=1000)
            everything.extend(e["cursor"] for e in batch["events"])
            cursor = batch["cursor"]
            if not batch["has_more"]:
                break
        assert len(everything) >= 3 * 320
        missed = sorted(set(everything) - set(polled))
        assert not missed, f"the live poller skipped {len(missed)} events that committed late"
        assert polled == everything
        assert a.s.core.db.stats["max_batch"] > 1 and b.s.core.db.stats["max_batch"] > 1
    finally:
        for node in nodes:
            await node.s.close()


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that a test can cut and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.writers -= {writer, up_w}


async def test_postgres_outage_gives_retryable_error_and_recovers(pg_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(pg_url)
    proxy = TcpProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    await proxy.start()
    url = pg_url.replace(f":{info.get('port') or 5432}/", f":{proxy.port}/", 1)
    assert url != pg_url
    svc = Svc(Services(make_settings(), open_database(url), Bus()))
    await svc.s.start()
    try:
        alice, _bob, chat_id = await _pair(svc)
        ok = await svc.call(alice, "message.send", chat_id=chat_id, client_id="before", text="before")
        await proxy.cut()
        for attempt in ("during1", "during2"):
            with pytest.raises(DariError) as exc:
                await asyncio.wait_for(svc.call(alice, "message.send", chat_id=chat_id, client_id=attempt,
                                                text=attempt), 15)
            assert exc.value.code == ErrorCode.UNAVAILABLE and exc.value.retryable
            assert "PostgreSQL" in exc.value.message and "retry" in exc.value.message
        with pytest.raises(DariError) as exc:
            await asyncio.wait_for(svc.call(alice, "message.history", chat_id=chat_id), 15)
        assert exc.value.code == ErrorCode.UNAVAILABLE
        await proxy.start()  # PostgreSQL is back: the service resumes by itself
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                retried = await svc.call(alice, "message.send", chat_id=chat_id, client_id="during1",
                                         text="during1")
                break
            except DariError as err:
                assert err.code == ErrorCode.UNAVAILABLE
                assert asyncio.get_running_loop().time() < deadline, "did not recover"
                await asyncio.sleep(0.2)
        assert retried["seq"] == ok["seq"] + 1  # nothing half-stored during the outage
        page = await svc.call(alice, "message.history", chat_id=chat_id)
        assert [m["text"] for m in page["messages"] if m["kind"] == "text"] == ["before", "during1"]
        assert svc.s.core.db.stats["reconnects"] >= 1
    finally:
        await svc.s.close()
        if proxy.server is not None:
            await proxy.cut()


async def test_serve_on_postgresql_send_and_receive(pg_url: str, server_factory: Callable[..., Any]) -> None:
    srv = server_factory(args=["--database", pg_url])
    clients: list[Client] = []
    try:
        for name in ("alice", "bob"):
            c = Client(srv.url)
            await c.signup(f"{name}_{uuid.uuid4().hex[:6]}", name.title(), PASSWORD, device_name="test")
            await c.wait_live()
            clients.append(c)
        alice, bob = clients
        await alice.call("friend.add", handle=bob.user["handle"])
        chat = await alice.call("chat.open_direct", user_id=bob.user["user_id"])
        sent = await alice.send_message(chat["chat_id"], "안녕 from PostgreSQL")
        got = await bob.next_event("message.new")
        assert got.payload["text"] == "안녕 from PostgreSQL" and got.payload["seq"] == sent["seq"]
        hits = await bob.call("message.search", query="PostgreSQL")
        assert [h["seq"] for h in hits] == [sent["seq"]]
    finally:
        for c in clients:
            await c.close()
    assert srv.stop() == 0
    assert "database postgresql://" in srv.log()


async def test_system_messages_keep_their_structured_event(svc: Svc) -> None:
    alice, bob, _ = await _pair(svc)
    carol = await svc.signup("carol")
    group = await svc.call(alice, "chat.create_group", title="Trio", member_ids=[bob.user_id])
    gid = group["chat_id"]
    await svc.call(bob, "chat.invite", chat_id=gid, user_ids=[carol.user_id])
    await svc.call(alice, "chat.rename", chat_id=gid, title="Quartet")
    await svc.call(alice, "chat.remove_member", chat_id=gid, user_id=carol.user_id)
    page = await svc.call(bob, "message.history", chat_id=gid)
    events = [(m["system"], m["text"]) for m in page["messages"] if m["kind"] == "system"]
    a, b, c = ({"id": u.user_id, "name": n} for u, n in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")))
    assert events == [
        ({"event": "group_created", "actor": a, "title": "Trio", "users": [b]},
         "Alice created the group \u201cTrio\u201d"),
        ({"event": "members_invited", "actor": b, "users": [c]}, "Bob invited Carol"),
        ({"event": "chat_renamed", "actor": a, "title": "Quartet"}, "Alice renamed the chat to \u201cQuartet\u201d"),
        ({"event": "member_removed", "actor": a, "users": [c]}, "Alice removed Carol"),
    ]
    assert all(m["attachment"] is None for m in page["messages"])
    listed = {ch["chat_id"]: ch for ch in await svc.call(bob, "chat.list")}[gid]
    assert listed["last_message"]["system"] == events[-1][0]
    replay = await svc.call(bob, "sync.events", cursor=0, limit=1000)
    replayed = [e["payload"]["system"] for e in replay["events"]
                if e["event"] == "message.new" and e["payload"]["kind"] == "system"]
    assert replayed == [e for e, _ in events]
