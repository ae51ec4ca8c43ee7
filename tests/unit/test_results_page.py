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
    page = results_page.render(SMOKE, BENCH, {"up_from_empty_seconds": 44.0, "noop_up_seconds": 25.0}, "local")
    assert "| warm claim->Ready p50 | 0.15 | 0.1 | met |" in page
    assert "| warm claim->Ready p95 | 0.4 | 0.5 | missed |" in page
    assert "| cold claim->Ready p50 | 2.0 | 2.5 | missed |" in page
    assert "| no-op up | 20.0 | 25.0 | missed |" in page and "| up from empty | 180.0 | 44.0 | met |" in page
    assert "| 1. python command | pass | 0.1 | a/b |" in page


def test_missing_reports_say_not_measured() -> None:
    assert "| no-op up | 20.0 | — | not measured |" in results_page.render(None, None, None, "local")


def test_cli_writes_the_page_and_copies_the_plot(tmp_path: Path) -> None:
    (tmp_path / "out" / "gvisor").mkdir(parents=True)
    (tmp_path / "out" / "gvisor" / "bench.json").write_text(json.dumps(BENCH))
    (tmp_path / "out" / "gvisor" / "bench.png").write_bytes(b"png")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")],
                   check=True, capture_output=True)
    assert "Claim latency (bench, n=5)" in (tmp_path / "docs" / "results.md").read_text()
    assert (tmp_path / "docs" / "results-bench.png").read_bytes() == b"png"
