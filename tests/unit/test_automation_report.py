"""Report schema of smoke and bench, check timing/exception capture, summaries and the plot."""

from __future__ import annotations

import json
import time

import pytest

from automation import bench, report


def sample_report(statuses=("pass", "pass", "skip")) -> report.SmokeReport:
    smoke = report.SmokeReport(stack="gvisor", runtime="gvisor", started_at=time.time())
    for index, status in enumerate(statuses, start=1):
        smoke.checks.append(report.CheckResult(id=index, name=f"check {index}", status=status, seconds=0.1))
    smoke.claim = {"claim": "sandbox-claim-1", "sandbox": "pool-abc", "claim_ready_seconds": 0.4}
    smoke.finished_at = time.time()
    return smoke


def test_a_written_smoke_report_round_trips_and_matches_the_schema(tmp_path):
    path = report.write_json(tmp_path / "gvisor" / "smoke.json", sample_report().to_dict())
    data = json.loads(path.read_text())
    assert report.validate_smoke_report(data) == []
    assert data["passed"] is True and data["schema_version"] == report.SCHEMA_VERSION
    assert [c["status"] for c in data["checks"]] == ["pass", "pass", "skip"]


def test_one_failed_check_fails_the_report():
    smoke = sample_report(("pass", "fail"))
    assert smoke.passed is False
    assert report.validate_smoke_report(smoke.to_dict()) == []
    assert report.SmokeReport(stack="s", runtime="r", started_at=0).passed is False  # no checks, no pass


@pytest.mark.parametrize("break_it,fragment", [
    (lambda d: d.pop("stack"), "report.stack is missing"),
    (lambda d: d.update(passed="yes"), "report.passed should be bool"),
    (lambda d: d["checks"][0].update(status="ok"), "status should be one of"),
    (lambda d: d["checks"][1].pop("seconds"), "report.checks[1].seconds is missing"),
    (lambda d: d.update(passed=False), "report.passed disagrees"),
    (lambda d: d["checks"][0].update(id=True), "report.checks[0].id should be int"),
])
def test_schema_violations_are_named(break_it, fragment):
    data = sample_report().to_dict()
    break_it(data)
    assert any(fragment in problem for problem in report.validate_smoke_report(data))


def test_run_check_times_the_body_and_turns_exceptions_into_failures():
    def slow_pass(result):
        time.sleep(0.05)
        result.status = "pass"

    def crash(result):
        raise ConnectionError("router unreachable")

    passed = report.run_check(1, "slow", slow_pass)
    assert passed.status == "pass" and passed.seconds >= 0.05
    failed = report.run_check(2, "crash", crash)
    assert failed.status == "fail" and failed.detail == "ConnectionError: router unreachable"
    assert "traceback" in failed.data


def test_summary_lists_every_check_and_the_verdict():
    text = report.smoke_summary(sample_report(("pass", "fail", "skip")))
    assert "[PASS] 1. check 1" in text and "[FAIL] 2. check 2" in text and "[SKIP] 3. check 3" in text
    assert text.splitlines()[-1] == "result: FAILED (2/3 not failed)"


def bench_sample(index: int, warm: bool, base: float, ok: bool = True) -> dict:
    sample = bench.new_sample()
    requested = 1000.0 + index
    phases = {"create": 0.01, "bind": base / 2, "ready": base / 2, "sdk": 0.005, "first_command": 0.05 + index / 100}
    sample.update(claim=f"c{index}", sandbox=f"pool-{index}" if warm else f"c{index}", ok=ok, warm=warm,
                  claim_ready_seconds=round(base + 0.015, 4), first_exec_seconds=phases["first_command"],
                  total_seconds=round(sum(phases.values()), 4), requested_at=requested,
                  sdk_returned_at=requested + base + 0.015, first_result_at=requested + sum(phases.values()),
                  phases=phases, controller={"observed_to_first_ready": base / 2}, error=None if ok else "boom")
    return sample


def bench_report() -> dict:
    def samples(warm, base):
        return [bench_sample(i, warm, base + i / 10, ok=i != 3) for i in range(5)]

    load = [0.5, 0.4, 0.3]
    data = {"schema_version": report.BENCH_SCHEMA_VERSION, "stack": "gvisor", "runtime": "gvisor", "n": 5,
            "original_pool_replicas": 2, "started_at": 1.0, "finished_at": 2.0,
            "machine": {"cpus": 2, "load_before": load, "load_after": load},
            "capacity": {"max_sandboxes": 4, "limited_by": "cpu", "per_sandbox": {"cpu": 0.25}, "nodes": [], "error": None},
            "controller_metrics": {"available": False, "source": None, "error": "not scraped"}}
    data["concurrency"] = {"levels_requested": [1, 2, 4, 8], "levels": [1, 2, 4], "capped": True, "reason": "capped: ...",
                           "warm": [], "cold": []}
    for mode, warm, base, pool in (("warm", True, 0.3, 5), ("cold", False, 4.0, 0)):
        data[mode] = {**bench.section(samples(warm, base), pool, 3.0), "concurrency": 1, "load_before": load,
                      "load_after": load, "controller": None}
        data["concurrency"][mode].append(bench.level_entry(data[mode], 1, "sequential", [], pool))
        for level in (2, 4):
            burst = [bench_sample(i, warm, base * level) for i in range(level)]
            point = {**bench.section(burst, pool and level, 1.0), "load_before": load, "load_after": load,
                     "controller": None}
            data["concurrency"][mode].append({**bench.level_entry(point, level, "burst", [base * level], pool and level),
                                              "samples": point["samples"]})
    return data


def test_bench_sections_count_only_successful_samples():
    data = bench_report()
    assert report.validate_bench_report(data) == []
    warm = data["warm"]
    assert (warm["ok"], warm["failed"], warm["warm_adopted"]) == (4, 1, 5)
    assert warm["claim_ready"]["count"] == 4 and warm["claim_ready"]["max"] == pytest.approx(0.715)
    assert warm["phases"]["bind"]["count"] == 4 and warm["phases"]["first_command"]["max"] == pytest.approx(0.09)
    assert warm["controller_phases"]["observed_to_first_ready"]["count"] == 4
    assert data["cold"]["warm_adopted"] == 0
    broken = bench_report()
    broken["cold"]["samples"][0].pop("ok")
    assert report.validate_bench_report(broken) == ["report.cold.samples[0].ok is missing"]


@pytest.mark.parametrize("break_it,fragment", [
    (lambda d: d.update(schema_version=1), "report.schema_version is 1, this driver reads 2"),
    (lambda d: d["warm"]["samples"][0]["phases"].update(bind=-0.1), "report.warm.samples[0].phases.bind is negative"),
    (lambda d: d["warm"]["samples"][1]["phases"].pop("sdk"), "report.warm.samples[1].phases.sdk is missing"),
    (lambda d: d.pop("machine"), "report.machine is missing"),
    (lambda d: d["machine"].update(load_before=[1.0]), "report.machine.load_before should be the three load averages"),
    (lambda d: d["capacity"].update(max_sandboxes="4"), "report.capacity.max_sandboxes should be int/NoneType"),
    (lambda d: d["concurrency"]["warm"][1].update(source="parallel"), "source should be 'sequential' or 'burst'"),
    (lambda d: d["concurrency"].update(levels=[0, 2]), "report.concurrency.levels should list positive integers"),
    (lambda d: d["concurrency"]["cold"][2]["samples"][0].pop("clamped"), "report.concurrency.cold[2].samples[0].clamped"),
    (lambda d: d["warm"]["phases"].pop("ready"), "report.warm.phases.ready is missing"),
    (lambda d: d["controller_metrics"].update(available="no"), "report.controller_metrics.available should be bool"),
    (lambda d: d["cold"].update(load_after=None), "report.cold.load_after should be list"),
    (lambda d: d.update(watch_errors=[3]), "report.watch_errors should list strings"),
])
def test_bench_schema_violations_are_named(break_it, fragment):
    data = bench_report()
    break_it(data)
    problems = report.validate_bench_report(data)
    assert any(fragment in problem for problem in problems), problems


def test_bench_summary_and_plot(tmp_path):
    data = bench_report()
    text = bench.bench_summary(data)
    assert "warm (pool 5): claim->Ready p50" in text and "cold (pool 0)" in text
    assert "phases p50: create 0.010s" in text and "warm vs concurrency: x1 ready p50" in text
    assert "capped: ..." in text and "load average before [0.5, 0.4, 0.3]" in text
    png = bench.plot_bench(data, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sequential_only_report_still_plots(tmp_path):
    data = bench_report()
    data["concurrency"].update(warm=[], cold=[])
    assert bench.plot_bench(data, tmp_path / "seq.png").stat().st_size > 1000
