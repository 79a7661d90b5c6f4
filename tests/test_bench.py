"""`dari bench --quick --json`: every scenario runs against a real server and reports a complete entry
with nothing lost and nothing duplicated. Figures are not asserted: the machine decides those."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REQUIRED = ("messages_per_s", "deliveries_per_s", "resumes_per_s", "connections", "rss_kb_per_connection",
            "p50_ms", "p99_ms", "lost", "duplicated", "server_cpu_pct", "server_rss_mb", "client_cpu_pct")
SCENARIOS = ("dm-latency", "dm-throughput", "group-fanout", "idle-connections", "reconnect-storm", "slow-consumers",
             "soak")
MESSAGING = ("dm-latency", "dm-throughput", "group-fanout", "reconnect-storm", "slow-consumers", "soak")


def test_bench_quick_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    scenarios = report["scenarios"]
    assert set(scenarios) == set(SCENARIOS)
    for name, entry in scenarios.items():
        assert "error" not in entry, (name, entry.get("error"))
        for key in REQUIRED:
            assert key in entry, (name, key)
        assert entry["connections"] > 0, name
        assert entry["server_cpu_pct"] is not None and entry["server_rss_mb"] > 0, name
        assert entry["client_cpu_pct"] is not None, name
    for name in MESSAGING:
        entry = scenarios[name]
        assert entry["lost"] == 0, (name, entry)
        assert entry["duplicated"] == 0, (name, entry)
        assert entry["p50_ms"] is not None and entry["p99_ms"] >= entry["p50_ms"], name
    for name in ("dm-latency", "dm-throughput", "group-fanout"):
        assert scenarios[name]["messages_per_s"] > 0 and scenarios[name]["deliveries_per_s"] > 0, name
    assert scenarios["group-fanout"]["deliveries_per_s"] > scenarios["group-fanout"]["messages_per_s"]
    assert scenarios["reconnect-storm"]["resumes_per_s"] > 0
    assert scenarios["idle-connections"]["rss_kb_per_connection"] is not None
    slow = scenarios["slow-consumers"]
    # Every stopped reader was dropped by its send cap and came back by resuming (lost == 0 above).
    assert slow["slow_clients"] >= 1 and slow["slow_dropped"] == slow["slow_clients"] == slow["slow_reconnected"]
    assert slow["baseline_p99_ms"] is not None and slow["p99_vs_baseline"] is not None
    soak = scenarios["soak"]
    assert soak["errors"] == 0 and all(soak["actions"].values()), soak["actions"]
    assert soak["rss_growth_pct"] is not None and len(soak["rss_samples"]) >= 5


def test_bench_dm_throughput_e2ee_decrypts_everything() -> None:
    """`--e2ee`: every message crosses the server as a Megolm envelope and every receiver decrypts it."""
    proc = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "--scenario", "dm-throughput", "--quick",
                           "--e2ee", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    entry = json.loads(proc.stdout)["scenarios"]["dm-throughput"]
    assert entry["e2ee"] is True and entry["messages_per_s"] > 0 and entry["decrypted"] >= entry["acked_total"] > 0
    assert entry["lost"] == 0 and entry["duplicated"] == 0 and entry["decrypt_failures"] == 0, entry


def test_bench_rejects_unknown_scenario() -> None:
    proc = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "--scenario", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_bench_failover_quick_loses_nothing() -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "failover", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert set(report["scenarios"]) == {"failover-reset", "failover-blackhole"}
    for entry in report["scenarios"].values():
        assert entry["cuts"] == 3 and entry["lost"] == 0 and entry["duplicated"] == 0
        assert entry["p50_ms"] > 0


def test_bench_media_quick_reports_every_figure() -> None:
    done = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "media", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["integrity"]["ok"] is True, report["integrity"]
    assert report["integrity"]["checked"] > 0 and report["server_peak_rss_mb"] > 0
    scenarios = report["scenarios"]
    assert set(scenarios) == {"http-upload", "ws-upload", "http-download", "http-range-download", "thumbnails"}
    for name, entry in scenarios.items():
        assert entry["errors"] == 0 and entry["mismatches"] == 0, (name, entry["error_samples"])
        assert entry["items"] > 0 and entry["mb"] > 0 and entry["mb_per_s"] > 0, name
        for key in ("seconds", "concurrency", "item_p50_ms", "item_p99_ms", "client_cpu_pct"):
            assert entry[key] is not None, (name, key)
        assert entry["server_cpu_pct"] is not None and entry["server_rss_mb"] > 0, name
    for name in ("http-upload", "ws-upload", "thumbnails"):
        assert scenarios[name]["finish_p50_ms"] is not None, name
    assert scenarios["ws-upload"]["chunk_bytes"] > 0
    assert scenarios["http-range-download"]["requests"] > scenarios["http-range-download"]["items"]
    thumbs = scenarios["thumbnails"]
    assert thumbs["images_per_s"] > 0 and thumbs["items"] == thumbs["jpegs"] + thumbs["pngs"]
    assert thumbs["jpeg_px"] and thumbs["png_px"] and thumbs["jpeg_avg_kb"] > 0 and thumbs["png_avg_kb"] > 0


# Failed once in 4 runs in a clean-clone CI run (a chat open timed out at 60 s under load; stdout not
# kept then, now printed). One rerun until the cause is found.
@pytest.mark.flaky(reruns=1)
def test_bench_web_quick_reports_every_figure() -> None:
    """`dari bench web --quick --json` (issue 8): the long chat opens, scrolls to its first message and back,
    and the DOM and the message cache stay within the web client's bounds. Timings are not asserted."""
    import os
    import shutil

    import pytest

    if shutil.which("chromium") is None and os.environ.get("CI", "").lower() != "true":
        pytest.skip("Debian's chromium is not installed")
    done = subprocess.run([sys.executable, "-m", "dari.cli.main", "bench", "web", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300)
    # The report says which figure failed (an open that timed out is null in open_*_ms.all_ms).
    assert done.returncode == 0, (done.stderr[-2000:], done.stdout[:4000])
    r = json.loads(done.stdout)
    assert r["messages"] == 1000 and r["last_seq"] >= 1000 and r["page_errors"] == []
    assert r["last_visible"] is True
    for key in ("open_cold_ms", "open_cold_cached_ms", "open_warm_ms"):
        assert r[key]["runs"] == 3 and r[key]["timeouts"] == 0, (key, r[key])
        assert r[key]["p50_ms"] is not None and r[key]["p99_ms"] >= r[key]["p50_ms"], key
    up, down = r["scroll_up"], r["scroll_down"]
    assert up["reached_beginning"] is True and up["first_rendered_seq"] == 1, up
    assert down["reached_last"] is True, down
    for entry in (up, down):
        for key in ("ms", "frames", "fps", "max_frame_ms", "long_tasks", "long_task_ms"):
            assert entry[key] is not None, key
        assert entry["frames"] > 0
    window, cache = r["max_rendered"], r["max_cached"]
    assert window and cache and cache < r["messages"]
    dom = r["dom"]
    assert 0 < dom["max_rows_during_scroll"] <= window
    for key in ("before", "at_beginning", "after"):
        assert 0 < dom[key]["rows"] <= window, (key, dom[key])
        assert 0 < dom[key]["cached_messages"] <= cache, (key, dom[key])
        assert dom[key]["list_elements"] > dom[key]["rows"]
        assert r["heap_mb"][key] > 0
    assert dom["after"]["at_latest"] is True
