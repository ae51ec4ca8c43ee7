"""e2e/results_page.py: the results page from the e2e reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.pulumi_harness import REPO_ROOT

SCRIPT = REPO_ROOT / "e2e" / "results_page.py"
spec = importlib.util.spec_from_file_location("results_page", SCRIPT)
results_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_page)

SECTION = {"pool_replicas": 5, "ok": 5, "failed": 0,
           "claim_ready": {"p50": 0.1, "p95": 0.5, "max": 0.6}, "first_exec": {"p50": 0.2, "p95": 0.3, "max": 0.3}}
BENCH = {"n": 5, "warm": SECTION, "cold": {**SECTION, "pool_replicas": 0, "claim_ready": {"p50": 2.5, "p95": 3, "max": 3}}}
SMOKE = {"checks": [{"id": 1, "name": "python command", "status": "pass", "seconds": 0.1, "detail": "a|b"}]}


def test_targets_get_verdicts_from_the_measurements() -> None:
    bench = {**BENCH, "warm": {**SECTION, "claim_ready": {"p50": 0.05, "p95": 0.2, "p99": 0.3, "max": 0.3},
                               "total": {"p50": 0.1, "p95": 0.4}}}
    router = {"headline": {"c50": {"ours_over_direct": 0.85, "ours_over_go": 2.5}, "c1": {"ours_added_p50_ms": 0.09}}}
    page = results_page.render(SMOKE, bench, {"up_from_empty_seconds": 100.0, "noop_up_seconds": 25.0}, "gvisor",
                               {"router": router, "cold": {"up_seconds": 3000.0, "steps": {"tools": 2000}}})
    assert "| warm claim->Ready p50 (s) | <= 0.06 | 0.050 | met | — |" in page
    assert "| warm claim->Ready p99 (s) | <= 0.25 | 0.300 | missed |" in page
    assert "| warm claim start->first result p50 (s) | <= 0.12 | 0.100 | met |" in page
    assert "| warm claim start->first result p95 (s) | <= 0.3 | 0.400 | missed |" in page
    assert "| cold claim->Ready p50 (s) | <= 1.0 | 2.500 | missed |" in page
    # higher is better for throughput ratios
    assert "| router/direct throughput c=50 | >= 0.8 | 0.850 | met |" in page
    assert "| router/Go router throughput c=50 | >= 3.0 | 2.500 | missed |" in page
    assert "| router added p50 c=1 (ms) | <= 0.1 | 0.090 | met |" in page
    assert "| up from empty caches (s) | <= 2700.0 | 3000.000 | missed |" in page
    assert "| no-op up (s) | <= 20.0 | 25.000 | missed |" in page and "| up with warm caches (s) | <= 180.0 | 100.000 | met |" in page
    assert "| 1. python command | pass | 0.1 | a/b |" in page
    assert "| tools | 2000 |" in page


def test_missing_reports_say_not_measured() -> None:
    page = results_page.render(None, None, None, "gvisor")
    assert "| no-op up (s) | <= 20.0 | — | not measured |" in page
    assert "Simulated scale" not in page and "Controller profiles" not in page


def test_breakdown_and_scale_sections_from_their_reports() -> None:
    point = {"concurrency": 1, "phases": {"bind": {"p50": 0.04}, "first_command": {"p50": 0.02}}, "total": {"p50": 0.08},
             "load_before": [0.5, 0.4, 0.3],
             "router": {"sandbox_router_route_wait_seconds": [{"labels": {"outcome": "found"}, "count": 2, "sum": 0.1}]}}
    bench = {**BENCH, "concurrency": {"warm": [point], "cold": []}}
    scale = {"levels": [{"pool": 100, "rate_per_s": 20.0, "claims": 100, "claim_to_ready_s": {"p50": 0.2, "p99": 0.9, "max": 1.0},
                         "sustained_claims_per_s": 18.5, "pool_back_after_s": 4.0,
                         "usage": {"controller": {"cores": 0.4, "rss_mib": 60.0}, "apiserver": None}}]}
    page = results_page.render(None, bench, None, "gvisor", {"scale": scale})
    assert "| warm | 1 | — | 0.040 | — | — | 0.020 | 0.080 | 2 / 0.050 | 0.500 |" in page
    assert "| 100 | 20.0 | 100 | 0.200 / 0.900 / 1.000 | 18.500 | 4.000 | 0.4 / 60.0 | — |" in page


def test_cold_split_lists_the_pod_milestones_per_concurrency() -> None:
    cold = {"concurrency": 2, "phases": {}, "total": {},
            "cold_phases": {"pod_scheduled_to_running": {"p50": 0.9}, "pod_running_to_ready": {"p50": 0.61}}}
    page = results_page.render(None, {**BENCH, "concurrency": {"warm": [], "cold": [cold]}}, None, "gvisor")
    assert "### Cold start, split at the pod's milestones (p50, s)" in page
    assert "| 2 | — | — | — | 0.900 | 0.610 | — |" in page
    # no cold points with a split: no section
    assert "Cold start, split" not in results_page.render(None, BENCH, None, "gvisor")


def test_the_first_command_split_shows_each_part_in_milliseconds() -> None:
    warm = {"concurrency": 1, "phases": {"first_command": {"p50": 0.116}}, "total": {},
            "first_command_split": {"sdk_lookup": {"p50": 0.021}, "path": {"p50": 0.0312}, "connect": {"p50": 0.0011}, "router": {"p50": 0.0002},
                                    "hop": {"p50": 0.004}, "runtime": {"p50": None}}}
    page = results_page.render(None, {**BENCH, "concurrency": {"warm": [warm], "cold": []}}, None, "gvisor")
    assert "### The first command, split along its path (p50, ms)" in page
    assert "| warm | 1 | 21.0 | 31.2 | 1.1 | 0.2 | 4.0 | — | 0.116 |" in page
    assert "split along its path" not in results_page.render(None, BENCH, None, "gvisor")


def test_cli_writes_the_page_and_copies_the_plot(tmp_path: Path) -> None:
    (tmp_path / "out" / "gvisor").mkdir(parents=True)
    (tmp_path / "out" / "gvisor" / "bench.json").write_text(json.dumps(BENCH))
    (tmp_path / "out" / "gvisor" / "bench.png").write_bytes(b"png")
    (tmp_path / "out" / "bench").mkdir()
    profiles = {"rounds": 2, "n": 6, "concurrency": "1", "candidates": {"release": {"config": {"controllerProfile": "release"}}},
                "comparison": {"release": {"warm": {}, "cold": {}}}}
    (tmp_path / "out" / "bench" / "controller_profiles.json").write_text(json.dumps(profiles))
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")],
                   check=True, capture_output=True)
    assert "Claim latency (bench, n=5)" in (tmp_path / "docs" / "results.md").read_text()
    assert (tmp_path / "docs" / "results-bench.png").read_bytes() == b"png"
    # the bench reports are kept beside the page, so a clone regenerates it without out/
    assert json.loads((tmp_path / "docs" / "controller_profiles.json").read_text()) == profiles
    (tmp_path / "out" / "bench" / "controller_profiles.json").unlink()
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")],
                   check=True, capture_output=True)
    assert "## Controller profiles" in (tmp_path / "docs" / "results.md").read_text()


def test_demand_section_from_its_report() -> None:
    wave = {"wave": 2, "n": 4, "warm": 4, "p50": 0.4, "p95": 0.6, "max": 0.7, "pool_back_s": 12.0}
    demand = {"config": {"baseline": 2, "wave": 4, "max": 6, "hold": 25, "gap": 60, "scale_down": 60},
              "load_average": [1.0, 1.0, 1.0],
              "modes": {"keda": {"waves": [wave], "pool_peak": 6, "peak_reached_s": 20.0,
                                 "back_to_baseline_s": 75.0, "up_seconds": 50.0}}}
    page = results_page.render(None, None, None, "gvisor", {"demand": demand})
    assert "## A pool that follows demand" in page
    assert "| keda | 2 | 4 / 4 | 0.400 / 0.600 / 0.700 | 12.0 |" in page
    assert "largest pool 6 (reached 20.0 s after the first burst); back to 2 75.0 s after the last release" in page
    assert "demand-pool.png" in page


def test_a_config_comparison_shows_each_candidates_config_and_pooled_figures() -> None:
    pooled = {"claim_ready": {"p50": 0.2, "p95": 0.4}, "first_exec": {"p50": 0.1, "p95": 0.2}, "total": {"p50": 0.3}}
    report = {"rounds": 2, "n": 6, "concurrency": "1",
              "candidates": {"cpu-500m": {"config": {"sandboxResources": '{"limits": {"cpu": "500m"}}'}}},
              "comparison": {"cpu-500m": {"warm": pooled, "cold": pooled, "sequence": ["settled"]}}}
    page = results_page.render(None, None, None, "gvisor", {"cpu_limit": report})
    assert "## Sandbox CPU limit (2 alternating rounds, n=6, concurrency 1, sequential claims settled)" in page
    assert ('| cpu-500m | `sandboxResources={"limits": {"cpu": "500m"}}` | 0.200 / 0.400 | 0.100 / 0.200 | 0.300 '
            '| 0.200 / 0.400 | 0.100 |') in page
    # a controller-profiles report from before config_compare.py (profile + flags)
    old = {**report, "candidates": {"latency": {"profile": "latency", "flags": ""}},
           "comparison": {"latency": {"warm": pooled, "cold": pooled}}}
    page = results_page.render(None, None, None, "gvisor", {"profiles": old})
    assert "| latency | `controllerProfile=latency` |" in page and "sequential claims back-to-back" in page


def test_the_platform_floor_sits_beside_each_target_it_bounds() -> None:
    floor = {"load_before": [1.0, 2.0, 3.0],
             "api": {"get_sandbox": {"p50_ms": 9.3, "p90_ms": 25.0, "kube-apiserver_cpu_ms": 5.75},
                     "patch_sandbox": {"p50_ms": 30.0, "p90_ms": 50.0}, "warm_path_writes": 5, "warm_path_floor_ms": 150.0},
             "cri": {"runsc": {"runp_ms": 500, "create_ms": 100, "start_ms": 400, "total_ms": 1000}, "errors": ["x"]},
             "in_sandbox_ms": {"true": 16.0, "python": 64.0, "runtime_imports": 660.0},
             "sentry_idle": {"sandboxes": 2, "median_ms_per_s": 34.0, "max_ms_per_s": 36.0}}
    first = {"n": 6, "summary": {"at-once": {"count": 6, "claim_ready_seconds": 0.17, "first_exec_seconds": 0.2,
                                             "second_exec_seconds": 0.1}}}
    idle = {"seconds": 15, "sandboxes": {"p3": {"cpu_ms_per_s": 38.0, "switches_per_s": 2177}}}
    page = results_page.render(None, None, None, "gvisor", {"floor": floor, "first_command": first, "gvisor_idle": idle})
    assert "| warm claim->Ready p50 (s) | <= 0.06 | — | not measured | 0.150 (5 serial API writes x PATCH p50) |" in page
    assert "| warm claim start->first result p50 (s) | <= 0.12 | — | not measured | 0.214 (+ python3 start in gVisor) |" in page
    assert "| cold claim->Ready p50 (s) | <= 1.0 | — | not measured | 1.000 (runsc pod + container via CRI" in page
    assert "| API GET of a Sandbox | 9.3 ms | 25.0 ms; CPU per request: kube-apiserver 5.75 ms |" in page
    assert "| CRI pod + container, runsc | 1000 ms | runp 500 + create 100 + start 400 ms |" in page
    assert "| `python3 -c pass` in a gVisor sandbox | 64.0 ms | median of 3 |" in page
    assert "| at-once | 6 | 0.170 | 0.200 | 0.100 |" in page
    assert "| p3 | 38.0 | 2177 |" in page


def test_the_router_section_states_the_cpu_budget_the_ratio_targets_imply() -> None:
    def path(rps, cpu=None, runtime=None):
        return {"rps": rps, "router_cpu_us_per_request": cpu, "runtime_cpu_us_per_request": runtime}
    level = {"connections": 50, "direct": path(10000.0, runtime=70.0), "ours": path(6000.0, 80.0, 90.0),
             "go": path(2500.0, 230.0, 140.0),
             "ours_over_direct": 0.6, "ours_over_go": 2.4, "ours_added_p50_ms": 1.5}
    page = results_page.render(None, None, None, "gvisor", {"router": {"cpus": 2, "rounds": 2, "levels": [level]}})
    assert "| 50 | 10000.0 | 6000.0 | 2500.0 | 0.6 | 2.4 | 1.5 | 80.000 / 230.000 |" in page
    assert ("behind our router the runtime costs 90 µs of CPU and our router 80 µs; behind the Go router the runtime "
            "costs 140 µs and the Go router 230 µs") in page
    assert "Bound by CPU alone ours/Go would be 2.18×; 3× needs our router at ≤ 33 µs per request" in page


def test_the_router_section_shows_both_of_our_routers_beside_upstreams() -> None:
    """Schema router_vs_go/2: the compiled router (ours), the Python one and upstream's, one row per level."""
    def path(rps, cpu=None, runtime=None):
        return {"rps": rps, "router_cpu_us_per_request": cpu, "runtime_cpu_us_per_request": runtime}
    level = {"connections": 50, "direct": path(10000.0, runtime=70.0), "ours": path(9000.0, 30.0, 60.0),
             "python": path(7000.0, 50.0, 70.0), "go": path(3000.0, 200.0, 110.0),
             "ours_over_direct": 0.9, "ours_over_go": 3.0, "ours_added_p50_ms": 0.1,
             "python_over_direct": 0.7, "python_over_go": 2.33, "python_added_p50_ms": 0.4}
    page = results_page.render(None, None, None, "gvisor", {"router": {"cpus": 2, "rounds": 2, "levels": [level]}})
    assert "| connections | direct rps | ours rps | python rps | go rps | ours/direct | ours/Go |" in page
    assert "| 50 | 10000.0 | 9000.0 | 7000.0 | 3000.0 | 0.9 | 3.0 | 0.1 | 0.7 | 2.33 | 0.4 | 30.000 / 50.000 / 200.000 |" in page


def test_the_relay_floor_sits_under_the_router_target_and_has_its_section() -> None:
    level = {"connections": 1, "direct": {"p50_ms": 0.05}, "relay": {"switches_per_request": 2.0},
             "ours": {"switches_per_request": 4.4}, "relay_added_p50_ms": 0.11, "ours_added_p50_ms": 0.1,
             "python_added_p50_ms": 0.09, "relay_over_direct": 0.4, "ours_over_direct": 0.45, "python_over_direct": 0.5}
    report = {"rounds": 3, "load_average_before": [0.1, 0, 0], "load_average_after": [1.0, 0, 0],
              "runs": [{"halt_poll_ns": 0, "levels": [level]}, {"halt_poll_ns": 200000, "levels": [level]}]}
    page = results_page.render(None, None, None, "gvisor", {"proxy_floor": report})
    assert "| router added p50 c=1 (ms) | <= 0.1 | — | not measured | 0.110 (a bare TCP relay, socat) |" in page
    assert "| 200000 | 1 | 0.050 | 0.110 | 0.100 | 0.090 | 0.400 | 0.450 | 0.500 | 4.4 / — |" in page


def test_the_cold_timeline_shows_each_step_and_its_own_share() -> None:
    report = {"n": 2, "median": {"sandbox_created": 0.33, "container_started": 0.85, "serving": 1.06, "ready_seen": 1.5,
                                 "running_seen": None},
              "samples": [{"after_pod_seen": {"sandbox_created": 0.32, "ready_seen": 1.4}},
                          {"after_pod_seen": {"sandbox_created": 0.34, "ready_seen": 1.6}}]}
    page = results_page.render(None, None, None, "gvisor", {"cold_timeline": report})
    assert "## Where a cold start goes (bench/cold_timeline.py, n=2)" in page
    assert "| pod sandbox (runsc) created | 0.330 | +0.330 | 0.320–0.340 |" in page
    assert "| runtime serving | 1.060 | +0.210 | — |" in page
    assert "| pod Ready (seen by a watch) | 1.500 | +0.440 | 1.400–1.600 |" in page
    assert "kubelet reports" not in page  # a step nobody saw is left out, not shown as zero
    assert "Where a cold start goes" not in results_page.render(None, None, None, "gvisor", {})
    assert "feature gate" not in page


def test_the_cold_timeline_puts_a_kubelet_gate_variant_beside_each_step() -> None:
    report = {"n": 1, "median": {"serving": 1.28, "ready_seen": 2.01},
              "samples": [{"after_pod_seen": {"serving": 1.28, "ready_seen": 2.01}}],
              "variants": {"kubelet EventedPLEG": {"n": 1, "median": {"serving": 1.215, "ready_seen": 2.929}}}}
    page = results_page.render(None, None, None, "gvisor", {"cold_timeline": report})
    assert "| step | median s after the pod is seen | step's own | range | kubelet EventedPLEG (median s, n=1) |" in page
    assert "| pod Ready (seen by a watch) | 2.010 | +0.730 | 2.010–2.010 | 2.929 |" in page
    assert "kubelet feature gate on" in page
