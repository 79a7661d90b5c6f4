"""Calls in the censorship lab (issue 12): a caller on a network that drops every UDP packet but DNS
still talks to someone outside it, through coturn over TCP, without being told to relay. Needs root;
skips with the reason where the lab cannot run (fails instead under CI=true), like test_lab.py."""

from __future__ import annotations

import os

import pytest

from dari.bench.calls_lab import run_lab_calls
from dari.bench.turn import turnserver_path
from dari.lab.fixtures import require_lab


async def test_a_call_from_a_network_that_blocks_udp_goes_through_turn_over_tcp() -> None:
    require_lab()
    if turnserver_path() is None:
        msg = "Debian's coturn is not installed: apt-get install -y coturn"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    report = await run_lab_calls(1)
    open_net, blocked = report["phases"]["no-block"], report["phases"]["udp-block"]
    # Without the block the two clients reach each other directly...
    assert open_net["caller_paths"] == ["host"] and open_net["min_frames"] > 0, open_net
    # ...with it, the censored caller's only way is its TURN-over-TCP relay candidate, and audio
    # flows both ways all the same.
    assert blocked["runs"] == 1 and blocked["failed"] == 0 and blocked["caller_paths"] == ["relay"], blocked
    assert blocked["min_frames"] > 0, blocked
    assert report["turn_allocations"] > 0
