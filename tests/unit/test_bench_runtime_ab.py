"""bench/runtime_ab.py: the baseline tree, its start measurement and the pooled figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import runtime_ab


def test_the_baseline_is_the_runtime_package_at_a_revision(tmp_path: Path) -> None:
    tree = runtime_ab.baseline_tree("HEAD", tmp_path / "before")
    assert (tree / "sandbox_runtime" / "app.py").is_file()
    assert not (tree / "sandbox_runtime" / "__pycache__").exists()
    with pytest.raises(SystemExit, match="--baseline no-such-rev: git archive failed"):
        runtime_ab.baseline_tree("no-such-rev", tmp_path / "other")


def test_start_is_timed_in_a_fresh_interpreter_and_a_broken_tree_says_why(tmp_path: Path) -> None:
    tree = runtime_ab.REPO / "images" / "runtime"
    assert 0 < runtime_ab.start_seconds(tree) < 30
    broken = tmp_path / "broken" / "sandbox_runtime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "app.py").write_text("import no_such_framework\n")
    with pytest.raises(SystemExit, match="No module named 'no_such_framework'.*requirements.txt"):
        runtime_ab.start_seconds(broken.parent)


def test_pooled_takes_medians_over_rounds() -> None:
    def one(start: float, rps: float) -> dict:
        level = {"rps": rps, "p50_ms": 0.1, "runtime_cpu_us_per_request": rps / 100}
        return {"start_s": start, "c1": level, "c50": level, "execute": {"p50_ms": 2.0}}

    summary = runtime_ab.pooled([one(0.3, 100.0), one(0.1, 300.0), one(0.2, 200.0)])
    assert summary == {"start_s": 0.2, "c1_rps": 200.0, "c1_p50_ms": 0.1, "c50_rps": 200.0, "c50_cpu_us": 2.0,
                       "execute_p50_ms": 2.0}
