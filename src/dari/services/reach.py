"""Reachability: clients' reports, the server's own control probes, and incidents.

Reports carry a network (region, ASN), a random reporter id and samples; never an account id. The
network is what the client declared, or, when the operator configured MaxMind databases, what the
reporting peer's address maps to (see services/geoip.py for which wins); each sample records which. The
evaluator turns recent samples into incidents with the rules in incident_rules and keeps the
incidents table current: one open incident per region at most, closed when the region recovers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec

from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.services.core import Caller, Core, now_ms
from dari.services.geoip import GeoIP, client_only
from dari.services.incident_rules import ControlSample, Rules, Sample, evaluate
from dari.services.peer import current_peer
from dari.storage.base import Tx

log = logging.getLogger("dari.reach")
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
MAX_SKEW_MS = 24 * 3600_000


def _incident_row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "region": r[1], "asn": r[2], "class": r[3], "routes": _dec.decode(r[4]),
            "fallbacks": _dec.decode(r[5]), "reporters": r[6], "since": r[7], "opened_at": r[8],
            "closed_at": r[9], "summary": r[10], "open": r[9] is None}


_INCIDENT_COLS = "id, region, asn, class, routes, fallbacks, reporters, since, opened_at, closed_at, summary"


class Reach:
    def __init__(self, core: Core) -> None:
        self.core = core
        s = core.settings
        self.rules = Rules(window_ms=int(s.reach_window_s * 1000), recent_ms=int(s.reach_recent_s * 1000),
                           min_reporters=s.reach_min_reporters)
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []   # ("opened"|"closed", incident)
        self.ratios: dict[tuple[str, str], float] = {}
        self.downtimes: list[tuple[int, int]] = []   # when this server was not running, from its heartbeat
        self._alive_checked = False
        self.geoip = GeoIP.from_settings(s)     # ValueError: a configured database cannot be used

    # -- intake ------------------------------------------------------------------------------
    async def report(self, caller: Caller | None, p: m.ReachReport) -> dict[str, int]:
        now = now_ms()
        net = (self.geoip.resolve(p.region, p.asn, current_peer.get()) if self.geoip
               else client_only(p.region, p.asn))
        rows = []
        for smp in p.samples:
            # A queued report may be hours old; a client clock far off is pinned to arrival time.
            at = smp.at if now - MAX_SKEW_MS <= smp.at <= now + 60_000 else now
            rows.append((at, now, net.region, net.asn, net.region_source, net.asn_source, smp.route, int(smp.ok),
                         smp.stage, "ok" if smp.ok else smp.cls, p.reporter, smp.elapsed_ms,
                         _enc.encode(smp.evidence).decode()))

        def fn(tx: Tx) -> None:
            tx.executemany("INSERT INTO reach_samples (at, received_at, region, asn, region_source, asn_source,"
                           " route, ok, stage, class, reporter, elapsed_ms, evidence)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

        await self.core.db.write(fn)
        return {"accepted": len(rows)}

    async def probe(self, caller: Caller | None, p: m.ReachProbe) -> dict[str, str]:
        return {"pad": "x" * p.bytes}

    async def record_control(self, route: str, ok: bool, detail: str = "") -> None:
        await self.core.db.write(lambda tx: tx.execute(
            "INSERT INTO reach_control (at, route, ok, detail) VALUES (?, ?, ?, ?)",
            (now_ms(), route, int(ok), detail[:500])))

    # -- evaluation --------------------------------------------------------------------------
    async def evaluate_once(self, now: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        now = now or now_ms()
        since = now - self.rules.window_ms

        def load(tx: Tx) -> tuple[list[Sample], list[ControlSample]]:
            samples = [Sample(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in tx.all(
                "SELECT at, region, asn, route, ok, class, reporter FROM reach_samples WHERE at >= ?"
                " ORDER BY at DESC LIMIT 200000", (since,))]
            control = [ControlSample(r[0], r[1], bool(r[2])) for r in tx.all(
                "SELECT at, route, ok FROM reach_control WHERE at >= ?", (since,))]
            return samples, control

        samples, control = await self.core.db.read(load)
        await self._heartbeat(now)
        self._update_ratios(samples, now)
        findings = {f.region: f for f in evaluate(samples, control, now, self.rules, self.downtimes)}

        def apply(tx: Tx) -> list[tuple[str, dict[str, Any]]]:
            changes: list[tuple[str, dict[str, Any]]] = []
            open_rows = {r[1]: r for r in tx.all(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE closed_at IS NULL")}
            for region, f in findings.items():
                values = (f.cls, _enc.encode(f.routes).decode(), _enc.encode(f.fallbacks).decode(), f.reporters,
                          f.summary)
                if region in open_rows:
                    tx.execute("UPDATE incidents SET class = ?, routes = ?, fallbacks = ?, reporters = ?,"
                               " summary = ? WHERE id = ?", (*values, open_rows[region][0]))
                else:
                    iid = tx.scalar("INSERT INTO incidents (region, asn, class, routes, fallbacks, reporters,"
                                    " summary, since, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                    (region, f.asn, *values[:4], f.summary, f.since, now))
                    changes.append(("opened", _incident_row(tx.one(
                        f"SELECT {_INCIDENT_COLS} FROM incidents WHERE id = ?", (iid,)) or ())))
            for region, row in open_rows.items():
                if region not in findings:
                    tx.execute("UPDATE incidents SET closed_at = ? WHERE id = ?", (now, row[0]))
                    changes.append(("closed", _incident_row(tx.one(
                        f"SELECT {_INCIDENT_COLS} FROM incidents WHERE id = ?", (row[0],)) or ())))
            horizon = now - max(3 * self.rules.window_ms, 7 * 86400_000)
            tx.execute("DELETE FROM reach_samples WHERE at < ?", (horizon,))
            tx.execute("DELETE FROM reach_control WHERE at < ?", (horizon,))
            return changes

        changes = await self.core.db.write(apply)
        for kind, incident in changes:
            log.warning("incident %s: %s", kind, incident["summary"])
            for listener in self.listeners:
                listener(kind, incident)
        return changes

    async def _heartbeat(self, now: int) -> None:
        """Record that the server is alive; on the first evaluation after a start, a long silence
        since the last heartbeat is a downtime (the process was stopped or the machine was down)."""
        gap_ms = max(3 * self.core.settings.reach_eval_s * 1000, 5000)

        def fn(tx: Tx) -> list[tuple[int, int]]:
            last = tx.scalar("SELECT value FROM meta WHERE key = 'alive_at'")
            known = tx.scalar("SELECT value FROM meta WHERE key = 'downtimes'")
            downtimes = [tuple(x) for x in _dec.decode(known)] if known else []
            if not self._alive_checked and last is not None and now - int(last) > gap_ms:
                downtimes = [*downtimes, (int(last), now)][-20:]
                tx.execute("INSERT INTO meta (key, value) VALUES ('downtimes', ?) ON CONFLICT (key)"
                           " DO UPDATE SET value = excluded.value", (_enc.encode(downtimes).decode(),))
            tx.execute("INSERT INTO meta (key, value) VALUES ('alive_at', ?) ON CONFLICT (key)"
                       " DO UPDATE SET value = excluded.value", (str(now),))
            return [(int(a), int(b)) for a, b in downtimes]

        self.downtimes = await self.core.db.write(fn)
        self._alive_checked = True

    def _update_ratios(self, samples: list[Sample], now: int) -> None:
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for smp in samples:
            if smp.at >= now - self.rules.recent_ms:
                c = counts[(smp.region, smp.route)]
                c[0] += smp.ok
                c[1] += 1
        self.ratios = {k: ok / n for k, (ok, n) in counts.items() if n}

    async def evaluate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.core.settings.reach_eval_s)
            try:
                await self.evaluate_once()
            except DariError as exc:
                log.warning("incident evaluation skipped: %s", exc.message)

    # -- admin -------------------------------------------------------------------------------
    async def require_admin(self, caller: Caller) -> None:
        admins = {h.strip() for h in self.core.settings.admin_handles.split(",") if h.strip()}
        handle = await self.core.db.read(lambda tx: tx.scalar("SELECT handle FROM users WHERE id = ?",
                                                                (caller.user_id,)))
        if handle not in admins:
            raise DariError(ErrorCode.FORBIDDEN, "this needs an operator account (admin_handles)")

    async def admin_reach(self, caller: Caller, p: m.AdminReach) -> dict[str, Any]:
        await self.require_admin(caller)
        now = now_ms()
        start = now - int(p.minutes * 60_000)
        step = max(1, (now - start) // p.buckets)

        def fn(tx: Tx) -> dict[str, Any]:
            table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
            for region, route, ok, n, last in tx.all(
                    "SELECT region, route, ok, count(*), max(at) FROM reach_samples WHERE at >= ?"
                    " GROUP BY region, route, ok", (start,)):
                cell = table[region].setdefault(route, {"ok": 0, "fail": 0, "last_at": 0, "classes": {},
                                                         "sources": {}})
                cell["ok" if ok else "fail"] += n
                cell["last_at"] = max(cell["last_at"], last)
            for region, route, cls, n in tx.all(
                    "SELECT region, route, class, count(*) FROM reach_samples WHERE at >= ? AND ok = 0"
                    " GROUP BY region, route, class", (start,)):
                table[region][route]["classes"][cls] = n
            for region, route, source, n in tx.all(
                    "SELECT region, route, region_source, count(*) FROM reach_samples WHERE at >= ?"
                    " GROUP BY region, route, region_source", (start,)):
                table[region][route].setdefault("sources", {})[source or "client"] = n
            for routes in table.values():
                for cell in routes.values():
                    cell["ratio"] = cell["ok"] / max(1, cell["ok"] + cell["fail"])
            series: dict[str, list[list[float]]] = defaultdict(list)
            for region, route, bucket, ok, n in tx.all(
                    "SELECT region, route, (at - ?) / ?, sum(ok), count(*) FROM reach_samples WHERE at >= ?"
                    " GROUP BY region, route, (at - ?) / ? ORDER BY 3", (start, step, start, start, step)):
                series[f"{region}/{route}"].append([start + int(bucket) * step, int(ok) / int(n), int(n)])
            control = {r[0]: {"ok": bool(r[1]), "at": r[2], "detail": r[3]} for r in tx.all(
                "SELECT c.route, c.ok, c.at, c.detail FROM reach_control c WHERE c.at = (SELECT max(at) FROM"
                " reach_control x WHERE x.route = c.route) AND c.at >= ?", (start,))}
            incidents = [_incident_row(r) for r in tx.all(
                f"SELECT {_INCIDENT_COLS} FROM incidents WHERE closed_at IS NULL OR closed_at >= ? ORDER BY id",
                (start,))]
            return {"from": start, "to": now, "step_ms": step, "table": table, "series": series,
                    "control": control, "incidents": incidents}

        return await self.core.db.read(fn)

    async def admin_incidents(self, caller: Caller, p: m.AdminIncidents) -> list[dict[str, Any]]:
        await self.require_admin(caller)
        where = "WHERE closed_at IS NULL" if p.open_only else ""
        rows = await self.core.db.read(lambda tx: tx.all(
            f"SELECT {_INCIDENT_COLS} FROM incidents {where} ORDER BY id DESC LIMIT ?", (p.limit,)))
        return [_incident_row(r) for r in rows]


