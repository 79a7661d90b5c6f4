"""Incident detection from reachability samples: pure functions of plain data, no I/O.

An incident opens for a region (and network) when enough distinct reporters there fail on a route
while the server's own control probes pass and other regions reach the same route. Global failure
with failing control is `server-down`, never blocking. Every reporter counts once per route, by its
latest sample in the window, so a route recovers as soon as its reporters get through again.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    at: int            # ms since the epoch, when the client observed it
    region: str        # country code (client-declared or from the operator's GeoIP database)
    asn: str
    route: str         # route label: websocket, long-poll, tls-stream, relay:NAME, obfs4:NAME ...
    ok: bool
    cls: str           # diagnosis class; "ok" for successes
    reporter: str      # a random per-install id, never an account id


@dataclass(frozen=True, slots=True)
class ControlSample:
    at: int
    route: str
    ok: bool


@dataclass(frozen=True)
class Rules:
    window_ms: int = 10 * 60_000      # how far back samples count
    recent_ms: int = 2 * 60_000       # recovery looks only at this recent part
    min_reporters: int = 3            # distinct failing reporters before anything opens
    fail_ratio: float = 0.6           # failures / samples on the route in the region
    other_ok_ratio: float = 0.8       # other regions must reach the route this well
    recover_ratio: float = 0.8

    def scaled(self, factor: float) -> Rules:
        """The same rules on a shorter clock (tests, `dari lab`): windows multiplied by factor."""
        return Rules(int(self.window_ms * factor), int(self.recent_ms * factor), self.min_reporters,
                     self.fail_ratio, self.other_ok_ratio, self.recover_ratio)


@dataclass
class Finding:
    region: str
    asn: str
    cls: str
    routes: dict[str, str]            # failing route -> its most common class
    fallbacks: list[str]              # routes that still work in the region
    reporters: int
    since: int
    summary: str = ""
    elsewhere_ok: bool = True

    @property
    def key(self) -> str:
        return self.region


@dataclass
class _RouteStats:
    """One route in one region. Each reporter counts once, by its latest sample: a phone that
    failed and then got through again is fine now, whatever it reported before."""

    latest: dict[str, Sample] = field(default_factory=dict)
    last_ok: int = 0
    failures_after_ok: list[int] = field(default_factory=list)

    @property
    def fail_reporters(self) -> set[str]:
        return {r for r, smp in self.latest.items() if not smp.ok}

    @property
    def n(self) -> int:
        return len(self.latest)

    @property
    def fails(self) -> int:
        return len(self.fail_reporters)

    @property
    def classes(self) -> Counter[str]:
        return Counter(smp.cls for smp in self.latest.values() if not smp.ok)

    @property
    def asns(self) -> Counter[str]:
        return Counter(smp.asn for smp in self.latest.values() if not smp.ok)

    @property
    def fail_ratio(self) -> float:
        return self.fails / self.n if self.n else 0.0

    def failing(self, rules: Rules) -> bool:
        return self.fails >= rules.min_reporters and self.fail_ratio >= rules.fail_ratio


def _stats(samples: Iterable[Sample], now: int, rules: Rules) -> dict[tuple[str, str], _RouteStats]:
    by: dict[tuple[str, str], _RouteStats] = defaultdict(_RouteStats)
    for s in sorted(samples, key=lambda s: s.at):
        if s.at < now - rules.window_ms:
            continue
        st = by[(s.region, s.route)]
        st.latest[s.reporter] = s
        if s.ok:
            st.last_ok = s.at
            st.failures_after_ok.clear()
        else:
            st.failures_after_ok.append(s.at)
    return by


def _control_failing(control: Iterable[ControlSample], now: int, rules: Rules) -> set[str]:
    latest: dict[str, ControlSample] = {}
    for c in control:
        if c.at >= now - rules.window_ms and (c.route not in latest or c.at >= latest[c.route].at):
            latest[c.route] = c
    return {r for r, c in latest.items() if not c.ok}


def evaluate(samples: list[Sample], control: list[ControlSample], now: int | None = None,
             rules: Rules | None = None, downtimes: list[tuple[int, int]] | None = None) -> list[Finding]:
    rules = rules or Rules()
    now = now if now is not None else int(time.time() * 1000)
    stats = _stats(samples, now, rules)
    control_bad = _control_failing(control, now, rules)
    regions = sorted({r for r, _ in stats})
    failing = {(reg, route) for (reg, route), st in stats.items() if st.failing(rules)}

    # Reports queued while our own server was not running and delivered afterwards: the failures
    # fall inside the server's downtime, so they are server-down, whoever and wherever reported
    # them (so the threshold counts reporters across all regions).
    down = [(a, b) for a, b in (downtimes or []) if b >= now - rules.window_ms]
    if down:
        latest_fails = [smp for st in stats.values() for smp in st.latest.values() if not smp.ok]
        down_reporters = {smp.reporter for smp in latest_fails}
        inside = [smp for smp in latest_fails if any(a - 5000 <= smp.at <= b + 5000 for a, b in down)]
        if len(down_reporters) >= rules.min_reporters and len(inside) == len(latest_fails):
            began = min(a for a, b in down if any(a - 5000 <= smp.at <= b + 5000 for smp in inside))
            until = max(b for a, b in down)
            down_routes = {smp.route: "server-down" for smp in inside}
            return [Finding("*", "", "server-down", dict(sorted(down_routes.items())), [], len(down_reporters), began,
                            f"server down everywhere from {_hhmm(began)} to {_hhmm(until)}"
                            " (reports delivered after it came back)", elsewhere_ok=False)]
    if not failing:
        return []

    # Everyone failing everywhere while our own probes fail: the server is down, nobody blocks it.
    all_fail = all(any((reg, route) in failing for route in {rt for g, rt in stats if g == reg}) for reg in regions)
    if control_bad and all_fail:
        fails = [st for key, st in stats.items() if key in failing]
        since = min((min(st.failures_after_ok) for st in fails if st.failures_after_ok), default=now)
        return [Finding("*", "", "server-down", {rt: "server-down" for _, rt in sorted(failing)}, [],
                        len(set().union(*(st.fail_reporters for st in fails))), since,
                        f"server down everywhere since {_hhmm(since)}; control probes fail: "
                        f"{', '.join(sorted(control_bad))}", elsewhere_ok=False)]

    findings = []
    for reg in regions:
        routes = {rt: stats[(reg, rt)] for g, rt in stats if g == reg and (g, rt) in failing}
        blocked: dict[str, _RouteStats] = {}
        for rt, st in routes.items():
            if rt in control_bad:
                continue    # our own probe of this route fails too: not a block
            others = [stats[(g, rt)] for g in regions if g != reg and (g, rt) in stats]
            n_other = sum(o.n for o in others)
            ok_other = sum(o.n - o.fails for o in others)
            if n_other and ok_other / n_other < rules.other_ok_ratio:
                continue    # failing elsewhere too: not specific to this region
            blocked[rt] = st
        if not blocked:
            continue
        classes: Counter[str] = Counter()
        asns: Counter[str] = Counter()
        reporters: set[str] = set()
        for st in blocked.values():
            classes.update(st.classes)
            asns.update(st.asns)
            reporters |= st.fail_reporters
        fallbacks = sorted(rt for g, rt in stats if g == reg and rt not in routes
                           and stats[(g, rt)].n > stats[(g, rt)].fails)
        cls = classes.most_common(1)[0][0]
        if not fallbacks and len(blocked) == len({rt for g, rt in stats if g == reg}) and len(blocked) > 1:
            cls = "shutdown" if cls in {"ip-blackhole", "shutdown", "dns-failure"} else cls
        since = min((min(st.failures_after_ok) for st in blocked.values() if st.failures_after_ok), default=now)
        per_route = {rt: st.classes.most_common(1)[0][0] for rt, st in sorted(blocked.items())}
        asn = asns.most_common(1)[0][0]
        where = f"region {reg}" + (f" ({asn})" if asn else "")
        summary = (f"{where}, since {_hhmm(since)}: " + "; ".join(f"{rt}: {c}" for rt, c in per_route.items())
                   + (f"; still working: {', '.join(fallbacks)}" if fallbacks else "; no route works")
                   + "; server healthy elsewhere")
        findings.append(Finding(reg, asn, cls, per_route, fallbacks, len(reporters), since, summary))
    return findings


def _hhmm(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))
