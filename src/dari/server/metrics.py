"""Prometheus metrics, in a registry of the server's own (several servers can share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dari.storage.base import Database

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = r = CollectorRegistry()
        self.connections = Gauge("dari_connections", "Open realtime connections", registry=r)
        self.requests = Counter("dari_requests", "Requests handled", ["transport"], registry=r)
        self.errors = Counter("dari_errors", "Error responses by code", ["code"], registry=r)
        self.messages = Counter("dari_messages", "Messages stored", registry=r)
        self.events_out = Counter("dari_events_delivered", "Event frames queued to connections", registry=r)
        self.slow_drops = Counter("dari_slow_consumer_drops", "Connections dropped for not reading", registry=r)
        self.latency = Histogram("dari_request_seconds", "Request handling time", buckets=_LATENCY_BUCKETS,
                                 registry=r)
        commits = Gauge("dari_commit_batches", "Storage commits (group commit batches)", registry=r)
        commits.set_function(lambda: db.stats["commits"])
        ops = Gauge("dari_committed_operations", "Write operations committed", registry=r)
        ops.set_function(lambda: db.stats["committed_ops"])
        biggest = Gauge("dari_commit_batch_max", "Largest group commit batch", registry=r)
        biggest.set_function(lambda: db.stats["max_batch"])
        self.reach_ratio = Gauge("dari_reach_success_ratio", "Recent success ratio reported by clients",
                                 ["region", "route"], registry=r)
        self.incidents_open = Gauge("dari_incidents_open", "Open blocking incidents", ["region", "class"],
                                    registry=r)
        self.incidents_total = Counter("dari_incidents", "Incidents opened", ["class"], registry=r)
        self._db = db

    def reach_ratios(self, ratios: dict[tuple[str, str], float]) -> None:
        self.reach_ratio.clear()
        for (region, route), ratio in ratios.items():
            self.reach_ratio.labels(region, route).set(ratio)

    def incident_changed(self, kind: str, incident: dict[str, object]) -> None:
        if kind == "opened":
            self.incidents_total.labels(str(incident["class"])).inc()

    def open_incidents(self, rows: list[tuple[str, str]]) -> None:
        self.incidents_open.clear()
        for region, cls in rows:
            self.incidents_open.labels(region, cls).inc()

    def render(self) -> bytes:
        lines = [generate_latest(self.registry).decode()]
        lines.append("# HELP dari_commit_batch_size Group commit batches by size (upper bound, power of two)")
        lines.append("# TYPE dari_commit_batch_size gauge")
        for bucket, count in sorted(self._db.batch_histogram.items()):
            lines.append(f'dari_commit_batch_size{{le="{bucket}"}} {count}')
        return ("\n".join(lines) + "\n").encode()
