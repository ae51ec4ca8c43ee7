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


def bench_report() -> dict:
    def samples(warm, base):
        return [{"claim": f"c{i}", "ok": i != 3, "warm": warm, "claim_ready_seconds": base + i / 10,
                 "first_exec_seconds": 0.05 + i / 100, "error": None if i != 3 else "boom"} for i in range(5)]
    return {"schema_version": report.SCHEMA_VERSION, "stack": "gvisor", "runtime": "gvisor", "n": 5,
            "warm": bench.section(samples(True, 0.3), 5, 12.0), "cold": bench.section(samples(False, 4.0), 0, 3.0)}


def test_bench_sections_count_only_successful_samples():
    data = bench_report()
    assert report.validate_bench_report(data) == []
    warm = data["warm"]
    assert (warm["ok"], warm["failed"], warm["warm_adopted"]) == (4, 1, 5)
    assert warm["claim_ready"]["count"] == 4 and warm["claim_ready"]["max"] == pytest.approx(0.7)
    assert data["cold"]["warm_adopted"] == 0
    broken = bench_report()
    broken["cold"]["samples"][0].pop("ok")
    assert report.validate_bench_report(broken) == ["report.cold.samples[0].ok is missing"]


def test_bench_summary_and_plot(tmp_path):
    data = bench_report()
    text = bench.bench_summary(data)
    assert "warm (pool 5): claim->Ready p50" in text and "cold (pool 0)" in text
    png = bench.plot_bench(data, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
