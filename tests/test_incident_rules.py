"""Incident rules on plain data: the right region and class, no incident for the control region,
server-down only when our own probes fail, recovery closes."""

from __future__ import annotations

from dari.services.incident_rules import ControlSample, Rules, Sample, evaluate

NOW = 1_800_000_000_000
RULES = Rules(window_ms=60_000, recent_ms=15_000, min_reporters=3)


def samples(region: str, route: str, ok: bool, cls: str, reporters: int, start: int = 50_000, asn: str = "AS1"
            ) -> list[Sample]:
    return [Sample(NOW - start + i * 1000, region, asn, route, ok, "ok" if ok else cls, f"{region}-{i}")
            for i in range(reporters)]


def healthy_control() -> list[ControlSample]:
    return [ControlSample(NOW - 5000, r, True) for r in ("websocket", "long-poll", "relay:r1")]


def test_regional_block_opens_with_region_class_since_and_fallbacks() -> None:
    data = (samples("KR", "websocket", True, "ok", 5, start=59_000)          # earlier success in CN
            + samples("CN", "websocket", True, "ok", 1, start=58_000)
            + samples("CN", "websocket", False, "sni-filter", 4, start=40_000, asn="AS4134")
            + samples("CN", "relay:r1", True, "ok", 4, start=30_000)
            + samples("KR", "websocket", True, "ok", 5, start=20_000))
    [f] = evaluate(data, healthy_control(), NOW, RULES)
    assert f.region == "CN" and f.asn == "AS4134" and f.cls == "sni-filter"
    assert f.routes == {"websocket": "sni-filter"}
    assert f.fallbacks == ["relay:r1"]
    assert f.since == NOW - 40_000
    assert f.reporters == 4
    assert "region CN (AS4134)" in f.summary and "relay:r1" in f.summary


def test_too_few_reporters_open_nothing() -> None:
    data = samples("CN", "websocket", False, "tcp-reset", 2) + samples("KR", "websocket", True, "ok", 5)
    assert evaluate(data, healthy_control(), NOW, RULES) == []


def test_failure_everywhere_with_failing_control_is_server_down() -> None:
    data = (samples("CN", "websocket", False, "tcp-reset", 4) + samples("KR", "websocket", False, "tcp-reset", 4))
    control = [ControlSample(NOW - 3000, "websocket", False)]
    [f] = evaluate(data, control, NOW, RULES)
    assert f.region == "*" and f.cls == "server-down"
    # ...and with healthy control and everyone failing, it is not reported as a block of one region
    assert all(f.region != "KR" or f.cls != "server-down" for f in evaluate(data, healthy_control(), NOW, RULES))


def test_failing_in_every_region_with_ok_control_is_not_a_regional_block() -> None:
    data = (samples("CN", "websocket", False, "tcp-reset", 4) + samples("KR", "websocket", False, "tcp-reset", 4))
    assert evaluate(data, healthy_control(), NOW, RULES) == []


def test_control_failing_on_a_route_is_not_a_block() -> None:
    data = samples("CN", "websocket", False, "tcp-reset", 4) + samples("KR", "websocket", True, "ok", 4)
    control = [ControlSample(NOW - 3000, "websocket", False)]
    assert evaluate(data, control, NOW, RULES) == []


def test_recovery_closes() -> None:
    data = (samples("CN", "websocket", False, "dns-poison", 5, start=50_000)
            + samples("CN", "websocket", True, "ok", 4, start=10_000)
            + samples("KR", "websocket", True, "ok", 5))
    assert evaluate(data, healthy_control(), NOW, RULES) == []


def test_every_route_down_without_fallback_is_shutdown() -> None:
    data = (samples("CN", "websocket", False, "ip-blackhole", 4) + samples("CN", "relay:r1", False, "ip-blackhole", 4)
            + samples("KR", "websocket", True, "ok", 4) + samples("KR", "relay:r1", True, "ok", 4))
    [f] = evaluate(data, healthy_control(), NOW, RULES)
    assert f.cls == "shutdown" and f.fallbacks == [] and set(f.routes) == {"websocket", "relay:r1"}


def test_failures_inside_our_downtime_are_server_down_not_a_block() -> None:
    data = (samples("CN", "websocket", False, "tcp-reset", 3, start=40_000)
            + samples("KR", "websocket", False, "tcp-reset", 3, start=40_000))
    [f] = evaluate(data, healthy_control(), NOW, RULES, downtimes=[(NOW - 45_000, NOW - 30_000)])
    assert f.region == "*" and f.cls == "server-down" and "reports delivered after" in f.summary
    # the same failures while we were up are no server-down
    assert all(f.cls != "server-down" for f in evaluate(data, healthy_control(), NOW, RULES, downtimes=[]))
