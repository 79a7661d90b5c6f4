"""Server-side region and ASN of reachability reports from operator-supplied MaxMind databases:
real .mmdb files written here (GeoLite2 layout), a real `dari serve`, reports sent directly and
through a real relay, and the startup errors for unusable databases."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from dari.client import Client
from dari.client.links import Route
from dari.client.reach_reports import ReportQueue
from dari.server.tls import pin_of_pem_file
from dari.services import geoip as geoip_mod
from dari.services.geoip import GeoIP, Network, resolve
from tests.conftest import PASSWORD, free_port
from tests.relayutil import relay_factory  # noqa: F401  (fixture)


def _country(code: str) -> dict[str, Any]:
    return {"country": {"iso_code": code, "names": {"en": code}}, "registered_country": {"iso_code": code},
            "continent": {"code": "AS"}}


def write_country_db(path: Path, nets: dict[str, str]) -> str:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country", languages=["en"],
                   description="dari test country database")
    for net, code in nets.items():
        w.insert_network(IPSet([net]), _country(code))
    w.to_db_file(str(path))
    return str(path)


def write_asn_db(path: Path, nets: dict[str, int]) -> str:
    w = MMDBWriter(ip_version=4, database_type="GeoLite2-ASN", languages=["en"], description="dari test ASN database")
    for net, number in nets.items():
        w.insert_network(IPSet([net]), {"autonomous_system_number": number,
                                        "autonomous_system_organization": f"Org {number}"})
    w.to_db_file(str(path))
    return str(path)


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[str, str]:
    return (write_country_db(tmp_path / "GeoLite2-Country.mmdb", {"127.0.0.0/8": "KR", "1.2.3.0/24": "JP"}),
            write_asn_db(tmp_path / "GeoLite2-ASN.mmdb", {"127.0.0.0/8": 4766, "1.2.3.0/24": 2497}))


# -- which wins ---------------------------------------------------------------------------------

def test_direct_public_peer_lookup_wins_and_the_declaration_fills_gaps() -> None:
    assert resolve("CN", "AS4134", "direct", ("KR", "AS4766")) == Network("KR", "AS4766", "geoip", "geoip")
    assert resolve("CN", "AS4134", "direct", ("KR", "")) == Network("KR", "AS4134", "geoip", "client")
    assert resolve("ZZ", "", "direct", ("", "")) == Network("ZZ", "", "none", "none")


def test_local_peer_declaration_wins_and_the_lookup_fills_gaps() -> None:
    assert resolve("CN", "AS4134", "local", ("KR", "AS4766")) == Network("CN", "AS4134", "client", "client")
    assert resolve("ZZ", "", "local", ("KR", "AS4766")) == Network("KR", "AS4766", "geoip", "geoip")
    assert resolve("CN", "", "local", ("KR", "AS4766")) == Network("CN", "AS4766", "client", "geoip")


def test_lookup_in_real_mmdb_files(dbs: tuple[str, str]) -> None:
    g = GeoIP(*dbs)
    assert g.lookup("127.0.0.1") == ("KR", "AS4766")
    assert g.lookup("::ffff:127.0.0.9") == ("KR", "AS4766")
    assert g.lookup("1.2.3.4") == ("JP", "AS2497")
    assert g.lookup("10.0.0.1") == ("", "")
    assert g.lookup("2001:4860::1") == ("", "")       # not in the v6 database; the v4-only ASN one refuses it
    assert g.lookup("?") == ("", "") and g.lookup("") == ("", "")
    assert [g.peer_kind(p) for p in ("1.2.3.4", "127.0.0.1", "10.1.2.3", "?")] == ["direct", "local", "local", "local"]
    # a direct public peer: the database wins over a declared region
    assert g.resolve("CN", "AS4134", "1.2.3.4") == Network("JP", "AS2497", "geoip", "geoip")
    # a listed relay's address describes the relay: the declaration stays, nothing is filled in
    relayed = GeoIP(*dbs, proxies="1.2.3.0/28, 2001:db8::1")
    assert relayed.peer_kind("1.2.3.4") == "proxy" and relayed.peer_kind("1.2.3.100") == "direct"
    assert relayed.resolve("CN", "AS4134", "1.2.3.4") == Network("CN", "AS4134", "client", "client")
    assert relayed.resolve("ZZ", "", "1.2.3.4") == Network("ZZ", "", "none", "none")


def test_a_replaced_database_file_is_reloaded(tmp_path: Path, dbs: tuple[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    g = GeoIP(dbs[0])
    assert g.lookup("127.0.0.1") == ("KR", "")
    monkeypatch.setattr(geoip_mod, "RECHECK_S", 0.0)
    os.replace(write_country_db(tmp_path / "new.mmdb", {"127.0.0.0/8": "JP"}), dbs[0])   # as geoipupdate does
    assert g.lookup("127.0.0.1") == ("JP", "")
    (tmp_path / "broken").write_text("not a database")
    os.replace(tmp_path / "broken", dbs[0])
    assert g.lookup("127.0.0.1") == ("JP", "")            # a bad replacement keeps the loaded one


# -- end to end ---------------------------------------------------------------------------------

async def test_reports_get_the_peer_network_direct_and_keep_the_declared_one_through_a_relay(
        server_factory, relay_factory, dbs: tuple[str, str]) -> None:  # noqa: F811
    env = {"DARI_GEOIP_COUNTRY_DB": dbs[0], "DARI_GEOIP_ASN_DB": dbs[1], "DARI_ADMIN_HANDLES": "ops",
           "DARI_REACH_WINDOW_S": "60", "DARI_REACH_RECENT_S": "3", "DARI_REACH_EVAL_S": "0.3",
           "DARI_REACH_MIN_REPORTERS": "3", "DARI_CONTROL_PROBE_S": "0.3"}
    srv = server_factory(extra_env=env, args=["--tls-self-signed", "--stream-port", str(free_port())])
    stream_port = int(srv.args[srv.args.index("--stream-port") + 1])
    pin = pin_of_pem_file(str(srv.data_dir / "tls" / "cert.pem"))
    https = f"https://127.0.0.1:{srv.port}"
    relay = relay_factory("--upstream", f"127.0.0.1:{stream_port}", "--listen", "127.0.0.1:0")

    def direct() -> Client:
        return Client(https, routes=[Route("ws", https, name="websocket", pin=pin)])

    ops = direct()
    reporters = [direct() for _ in range(3)]
    via_relay = Client(https, routes=[Route("stream", f"tls://127.0.0.1:{relay.port()}", name="relay", pin=pin)])
    try:
        await ops.signup("ops", "Operator", PASSWORD)
        queues = []
        for c in reporters:                       # direct, no region declared (ZZ)
            q = ReportQueue()
            q.add("long-poll", False, "tcp", "tcp-reset")
            q.add("websocket", True)
            await q.flush(lambda method, c=c, **params: c.call(method, **params))
            queues.append(q)
        declared = ReportQueue(region="CN", asn="AS4134")   # through the relay, declared
        declared.add("relay:r1", True)
        await declared.flush(lambda method, **params: via_relay.call(method, **params))

        db = sqlite3.connect(srv.data_dir / "dari.db")
        rows = db.execute("SELECT reporter, region, asn, region_source, asn_source FROM reach_samples").fetchall()
        by_reporter = {r[0]: r[1:] for r in rows}
        for q in queues:
            assert by_reporter[q.reporter] == ("KR", "AS4766", "geoip", "geoip")
        assert by_reporter[declared.reporter] == ("CN", "AS4134", "client", "client")

        incident = None
        for _ in range(50):
            if open_ := await ops.call("admin.incidents", open_only=True):
                incident = open_[0]
                break
            await asyncio.sleep(0.2)
        assert incident is not None, "no incident opened"
        assert (incident["region"], incident["asn"], incident["class"]) == ("KR", "AS4766", "tcp-reset")
        assert incident["routes"] == {"long-poll": "tcp-reset"} and "region KR (AS4766)" in incident["summary"]
        reach = await ops.call("admin.reach", minutes=5)
        assert reach["table"]["KR"]["long-poll"]["sources"] == {"geoip": 3}
        assert reach["table"]["CN"]["relay:r1"]["sources"] == {"client": 1}
    finally:
        for c in (ops, via_relay, *reporters):
            await c.close()


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dari.cli.main", "serve", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data")], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)


def test_unusable_databases_stop_the_server_with_a_clear_error(tmp_path: Path, dbs: tuple[str, str]) -> None:
    missing = _serve(tmp_path, {"DARI_GEOIP_COUNTRY_DB": str(tmp_path / "nope.mmdb")})
    assert missing.returncode == 2
    assert f"dari serve: geoip_country_db: {tmp_path / 'nope.mmdb'} does not exist" in missing.stderr
    (tmp_path / "asn.mmdb").write_text("this is not an mmdb\n" * 10)
    bad = _serve(tmp_path, {"DARI_GEOIP_COUNTRY_DB": dbs[0], "DARI_GEOIP_ASN_DB": str(tmp_path / "asn.mmdb")})
    assert bad.returncode == 2 and "geoip_asn_db" in bad.stderr and "is not a MaxMind DB (.mmdb) file" in bad.stderr
    proxies = _serve(tmp_path, {"DARI_GEOIP_ASN_DB": dbs[1], "DARI_GEOIP_PROXIES": "10.0.0.0/8, relay.example"})
    assert proxies.returncode == 2 and "geoip_proxies: 'relay.example' is not an address" in proxies.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + proxies.stderr
