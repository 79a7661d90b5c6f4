"""Diagnosis classes reproducible on loopback, and reports turning into incidents end to end.
DNS poisoning, SNI filtering and throttling need the network-namespace lab (tests/test_lab*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3

import aiohttp
import pytest
from aiohttp import web

from dari.client import Client
from dari.client.diagnose import Target, diagnose
from dari.client.links import Route
from dari.client.reach_reports import ReportQueue
from dari.server.tls import pin_of_pem_file
from tests.conftest import PASSWORD, free_port


async def _site(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.fixture
def stream_server(server_factory):
    port = free_port()
    srv = server_factory(args=["--stream-port", str(port)])
    srv.stream_port = port
    return srv


async def test_healthy_server_is_ok_on_every_route(stream_server) -> None:
    srv = stream_server
    routes = [Route("ws", srv.url, name="websocket"), Route("longpoll", srv.url, name="long-poll"),
              Route("stream", f"tcp://127.0.0.1:{srv.stream_port}", name="stream")]
    d = await diagnose(Target(routes))
    assert d.verdict == "ok" and d.working_routes == ["websocket", "long-poll", "stream"]
    assert all(rd.throughput_kbps and rd.throughput_kbps > 0 for rd in d.routes)
    assert d.features and set(d.features.values()) == {"ok"}
    assert d.to_json()["version"] == 1


async def test_nothing_listening_is_server_down() -> None:
    port = free_port()
    d = await diagnose(Target([Route("ws", f"http://127.0.0.1:{port}", name="websocket"),
                               Route("longpoll", f"http://127.0.0.1:{port}", name="long-poll")]))
    assert d.verdict == "server-down"
    assert [rd.cls for rd in d.routes] == ["tcp-reset", "tcp-reset"]


async def test_dropped_syns_are_ip_blackhole() -> None:
    # A listener whose accept queue is full drops further SYNs, exactly as a blackholing firewall
    # does (this sandbox proxies outbound TCP, so an unroutable address would not do).
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(0)
    port = sink.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    try:
        d = await diagnose(Target([Route("ws", f"http://127.0.0.1:{port}", name="websocket")], timeout=1.0))
        assert d.routes[0].cls == "ip-blackhole" and d.routes[0].failed_stage == "tcp"
        assert d.routes[0].stages[-1].evidence["error"] == "timeout"
    finally:
        for c in (*fillers, sink):
            c.close()


async def test_wrong_key_is_tls_interception(server_factory) -> None:
    srv = server_factory(args=["--tls-self-signed"])
    good = pin_of_pem_file(str(srv.data_dir / "tls" / "cert.pem"))
    base = f"https://127.0.0.1:{srv.port}"
    d = await diagnose(Target([Route("ws", base, name="pinned", pin=good),
                               Route("ws", base, name="intercepted", pin="sha256/" + "A" * 43 + "=")]))
    by = {rd.route: rd for rd in d.routes}
    assert by["pinned"].ok and by["intercepted"].cls == "tls-interception"
    assert by["intercepted"].failed_stage == "tls"


async def test_injected_block_page_is_http_filter() -> None:
    async def blocked(request: web.Request) -> web.Response:
        return web.Response(status=403, text="<html>Access to this site is denied</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", blocked)
    runner, port = await _site(app)
    try:
        d = await diagnose(Target([Route("ws", f"http://127.0.0.1:{port}", name="websocket")]))
        rd = d.routes[0]
        assert rd.cls == "http-filter" and rd.failed_stage == "http"
        assert rd.stages[-1].evidence["status"] == 403
    finally:
        await runner.cleanup()


async def test_filtered_feature_endpoint_is_feature_block(server) -> None:
    """KakaoTalk 2014: chat spared, friend-adding cut."""
    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("friend.add"):
            assert request.transport is not None
            request.transport.abort()       # a reset, as a filtering middlebox does
            return web.Response()
        async with aiohttp.ClientSession() as http:
            async with http.request(request.method, server.url + request.path_qs, data=await request.read(),
                                    headers={"Content-Type": "application/json"}) as resp:
                return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner, port = await _site(app)
    try:
        d = await diagnose(Target([Route("longpoll", f"http://127.0.0.1:{port}", name="long-poll")]))
        assert d.features["chat"] == "ok" and d.features["friends"] == "filtered"
        assert d.routes[0].cls == "feature-block" and d.verdict == "feature-block"
    finally:
        await runner.cleanup()


async def test_stream_killed_after_first_frame_is_dpi_reset(stream_server) -> None:
    """A middlebox that lets the connection open and kills it once it sees dari's framing."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(64)
        if b'"method"' in head:
            writer.transport.abort()
            return
        writer.close()

    box = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = box.sockets[0].getsockname()[1]
    try:
        d = await diagnose(Target([Route("stream", f"tcp://127.0.0.1:{port}", name="stream"),
                                   Route("stream", f"tcp://127.0.0.1:{stream_server.stream_port}", name="direct")]))
        by = {rd.route: rd for rd in d.routes}
        assert by["stream"].cls == "dpi-reset" and by["stream"].failed_stage == "app"
        assert by["direct"].ok and d.working_routes == ["direct"]
    finally:
        box.close()


async def test_reports_open_and_close_an_incident_with_webhook(server_factory) -> None:
    hooks: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, hook_port = await _site(app)
    env = {"DARI_REACH_WINDOW_S": "60", "DARI_REACH_RECENT_S": "3", "DARI_REACH_EVAL_S": "0.3",
           "DARI_REACH_MIN_REPORTERS": "3", "DARI_CONTROL_PROBE_S": "0.3", "DARI_ADMIN_HANDLES": "ops",
           "DARI_INCIDENT_WEBHOOK": f"http://127.0.0.1:{hook_port}/hook"}
    srv = server_factory(extra_env=env)
    ops = Client(srv.url)
    reporters = [Client(srv.url) for _ in range(6)]
    try:
        await ops.signup("ops", "Operator", PASSWORD)

        async def report(i: int, region: str, ok: bool) -> None:
            q = ReportQueue(region=region, asn="AS4134" if region == "CN" else "AS4766")
            q.add("websocket", ok, "tls", "ok" if ok else "sni-filter")
            q.add("relay:r1", True)
            await q.flush(lambda method, **params: reporters[i].call(method, **params))

        for i in range(3):
            await report(i, "CN", False)
            await report(i + 3, "KR", True)
        incident = None
        for _ in range(50):
            open_ = await ops.call("admin.incidents", open_only=True)
            if open_:
                incident = open_[0]
                break
            await asyncio.sleep(0.2)
        assert incident is not None, "no incident opened"
        assert (incident["region"], incident["asn"], incident["class"]) == ("CN", "AS4134", "sni-filter")
        assert incident["routes"] == {"websocket": "sni-filter"} and incident["fallbacks"] == ["relay:r1"]
        assert incident["reporters"] == 3 and "server healthy elsewhere" in incident["summary"]
        reach = await ops.call("admin.reach", minutes=5)
        assert reach["table"]["CN"]["websocket"]["fail"] == 3 and reach["table"]["KR"]["websocket"]["ratio"] == 1
        assert reach["control"]["websocket"]["ok"] is True
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/metrics") as resp:
            metrics = await resp.text()
        assert 'dari_incidents_open{class="sni-filter",region="CN"} 1.0' in metrics
        # the block lifts: recent successes close it
        for i in range(3):
            await report(i, "CN", True)
        for _ in range(50):
            if not await ops.call("admin.incidents", open_only=True):
                break
            await asyncio.sleep(0.2)
        [closed] = await ops.call("admin.incidents")
        assert closed["closed_at"] and not closed["open"]
        for _ in range(20):
            if len(hooks) >= 2:
                break
            await asyncio.sleep(0.1)
        assert [h["event"] for h in hooks] == ["incident.opened", "incident.closed"]
        # reports carry no account: nothing links a sample to a user
        db = sqlite3.connect(srv.data_dir / "dari.db")
        cols = [r[1] for r in db.execute("PRAGMA table_info(reach_samples)")]
        assert "user_id" not in cols and "device_id" not in cols
        # a non-operator cannot read them
        with pytest.raises(Exception) as info:
            await reporters[0].call("admin.incidents")
        assert getattr(info.value, "code", None) in ("forbidden", "unauthenticated")
    finally:
        for c in (ops, *reporters):
            await c.close()
        await runner.cleanup()


async def test_client_diagnoses_a_failing_route_and_reports_it_through_a_working_one(server, tmp_path) -> None:
    dead = free_port()
    routes = [Route("ws", f"http://127.0.0.1:{dead}", name="websocket"),
              Route("longpoll", server.url, name="long-poll")]
    queue = ReportQueue(str(tmp_path / "reach.db"), region="CN", asn="AS4134")
    c = Client(server.url, routes=routes, reports=queue)
    try:
        await c.signup("diag_user", "D", PASSWORD)
        ev = await c.next_event("diagnosis", timeout=20)
        by = {r["route"]: r for r in ev.payload["routes"]}
        assert by["websocket"]["cls"] == "tcp-reset" and by["long-poll"]["ok"]
        for _ in range(50):
            if len(queue) == 0:
                break
            await asyncio.sleep(0.1)
        assert len(queue) == 0, "reports were not sent"
        db = sqlite3.connect(server.data_dir / "dari.db")
        rows = db.execute("SELECT route, ok, class, region FROM reach_samples").fetchall()
        assert ("websocket", 0, "tcp-reset", "CN") in rows and ("long-poll", 1, "ok", "CN") in rows
    finally:
        await c.close()
        with contextlib.suppress(Exception):
            queue.close()


async def test_relay_route_names_are_reported_and_a_refused_batch_does_not_stall_the_queue(server, tmp_path) -> None:
    queue = ReportQueue(str(tmp_path / "reach.db"), region="CN", asn="AS4134")
    c = Client(server.url)
    try:
        await c.signup("relay_reporter", "R", PASSWORD)
        # The SDK names relay routes for people, with spaces: the report must still be accepted.
        queue.add("relay-ws r-seoul #2", False, "tls", "tcp-reset")
        queue.add("relay r-seoul", True)
        assert await queue.flush(c.call) == 2 and len(queue) == 0
        db = sqlite3.connect(server.data_dir / "dari.db")
        rows = db.execute("SELECT route, ok FROM reach_samples").fetchall()
        assert ("relay-ws:r-seoul:2", 0) in rows and ("relay:r-seoul", 1) in rows
        # A batch the server refuses (a bad class) is dropped, and later reports still go out.
        queue.add("websocket", False, "tls", "NOT A CLASS")
        assert await queue.flush(c.call) == 0 and len(queue) == 0
        queue.add("websocket", True)
        assert await queue.flush(c.call) == 1
    finally:
        await c.close()
        queue.close()
