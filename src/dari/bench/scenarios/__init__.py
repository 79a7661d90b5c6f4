"""The scenarios, in the order `dari bench` runs them."""

from __future__ import annotations

from dari.bench.runner import Scenario
from dari.bench.scenarios.fanout import group_fanout
from dari.bench.scenarios.idle import idle_connections
from dari.bench.scenarios.latency import dm_latency
from dari.bench.scenarios.reconnect import reconnect_storm
from dari.bench.scenarios.throughput import dm_throughput

SCENARIOS: dict[str, Scenario] = {
    "dm-latency": dm_latency,
    "dm-throughput": dm_throughput,
    "group-fanout": group_fanout,
    "idle-connections": idle_connections,
    "reconnect-storm": reconnect_storm,
}
