"""The scenarios, in the order `dari bench` runs them."""

from __future__ import annotations

from dari.bench.runner import Scenario
from dari.bench.scenarios.fanout import group_fanout
from dari.bench.scenarios.idle import idle_connections
from dari.bench.scenarios.latency import dm_latency
from dari.bench.scenarios.reconnect import reconnect_storm
from dari.bench.scenarios.slow import SEND_BUFFER_FRAMES, SOCKET_SEND_BUFFER, slow_consumers
from dari.bench.scenarios.soak import soak
from dari.bench.scenarios.throughput import dm_throughput

SCENARIOS: dict[str, Scenario] = {
    "dm-latency": dm_latency,
    "dm-throughput": dm_throughput,
    "group-fanout": group_fanout,
    "idle-connections": idle_connections,
    "reconnect-storm": reconnect_storm,
    "slow-consumers": slow_consumers,
    "soak": soak,
}

# Server settings a scenario needs (environment of the local `dari serve` it starts).
SERVER_ENV: dict[str, dict[str, str]] = {
    "slow-consumers": {"DARI_SEND_BUFFER_FRAMES": str(SEND_BUFFER_FRAMES),
                       "DARI_SOCKET_SEND_BUFFER": str(SOCKET_SEND_BUFFER)},
}
