"""bench/config_compare.py (and controller_profiles.py on top of it): candidates from the command
line, the pooled comparison, the summary's ratios, and that the stack is put back."""

from __future__ import annotations

import pytest

from bench import config_compare, controller_profiles


def _report(warm_p50: float, cold_p50: float, sequence: str = "settled") -> dict:
    stats = lambda p50: {"p50": p50, "p95": p50 * 2}  # noqa: E731
    return {"machine": {"load_before": [1.0, 1.0, 1.0]},
            "warm": {"claim_ready": stats(warm_p50), "first_exec": stats(0.1), "total": stats(0.2), "sequence": sequence},
            "cold": {"claim_ready": stats(cold_p50), "first_exec": stats(0.1), "total": stats(2.0)}}


def test_a_candidate_is_a_name_then_key_value_words() -> None:
    candidate = config_compare.parse_candidate(["cpu-2", 'sandboxResources={"limits": {"cpu": "2"}}', "warmPoolReplicas=3"])
    assert candidate.name == "cpu-2"
    assert candidate.config == {"sandboxResources": '{"limits": {"cpu": "2"}}', "warmPoolReplicas": "3"}
    with pytest.raises(SystemExit, match="--candidate x: 'oops' is not KEY=VALUE"):
        config_compare.parse_candidate(["x", "oops"])


def test_rounds_pool_to_the_median_and_the_summary_shows_ratios_to_the_first() -> None:
    table = config_compare.comparison({"a": [_report(0.2, 2.0), _report(0.4, 3.0)], "b": [_report(0.1, 1.0)]},
                                      {"a": [40.0, 41.0], "b": [39.0]})
    assert table["a"]["warm"]["claim_ready"] == {"p50": pytest.approx(0.3), "p95": pytest.approx(0.6),
                                                "rounds_p50": [0.2, 0.4]}
    assert table["a"]["deploy_seconds"] == [40.0, 41.0] and table["a"]["sequence"] == ["settled"]
    lines = config_compare.summary_lines("title", table)
    assert lines[0] == "title"
    assert "warm claim_ready 0.1s (0.33x)" in lines[2] and "cold claim_ready 1.0s (0.40x)" in lines[2]


def test_the_stack_ends_with_the_candidates_keys_unset_or_on_the_restore_candidate(monkeypatch, tmp_path) -> None:
    deployed, benched = [], []
    monkeypatch.setattr(config_compare, "REPO", tmp_path)
    monkeypatch.setattr(config_compare, "deploy", lambda stack, config: deployed.append(dict(config)) or 1.0)

    def fake_run(command, env=None, check=True):
        benched.append(env)
        report = tmp_path / "out" / "gvisor" / "bench.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(__import__("json").dumps(_report(0.1 * len(benched), 2.0)))
        import os
        os.utime(report, (1e9 + len(benched), 1e9 + len(benched)))
        return 0
    monkeypatch.setattr(config_compare, "run", fake_run)
    candidates = [config_compare.Candidate("a", {"k": "1"}), config_compare.Candidate("b", {"k": "2", "j": "x"})]
    report = config_compare.compare("gvisor", candidates, report_name="t", rounds=2, n=3)
    assert deployed == [{"k": "1"}, {"k": "2", "j": "x"}, {"k": "1"}, {"k": "2", "j": "x"}, {"j": "", "k": ""}]
    assert benched == [{"BENCH_CONCURRENCY": "1"}] * 4
    assert report["comparison"]["a"]["warm"]["claim_ready"]["rounds_p50"] == [pytest.approx(0.1), pytest.approx(0.3)]
    assert (tmp_path / "out" / "bench" / "t.json").is_file() and len(list((tmp_path / "out" / "bench" / "t").iterdir())) == 4


def test_controller_profiles_are_candidates_with_their_flags_reset() -> None:
    chosen = controller_profiles.candidates("release,latency", '{"x": "1"}')
    assert [c.name for c in chosen] == ["release", "latency", "custom"]
    assert chosen[1].config == {"controllerProfile": "latency", "controllerFlags": ""}
    assert chosen[2].config == {"controllerProfile": "release", "controllerFlags": '{"x": "1"}'}
