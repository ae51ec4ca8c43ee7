"""The committed JSON schemas of the report files (docs/schemas/) are the ones the models in
automation/report.py generate; this fails when either drifts (fix: python -m automation.schemas)."""

from __future__ import annotations

import json

from automation import report, schemas

FIX = "run: .venv/bin/python -m automation.schemas"


def test_the_committed_schemas_match_the_models() -> None:
    assert schemas.drifted() == [], FIX


def test_the_schemas_require_what_the_driver_writes() -> None:
    smoke = json.loads(schemas.render(report.SmokeReportFile))
    assert smoke["$schema"] == schemas.DIALECT
    assert set(smoke["required"]) == set(report.SmokeReport(stack="s", runtime="r", started_at=0).to_dict())
    assert smoke["$defs"]["CheckResult"]["properties"]["status"]["enum"] == list(report.STATUSES)
    bench = json.loads(schemas.render(report.BenchReport))
    assert bench["properties"]["schema_version"]["const"] == report.BENCH_SCHEMA_VERSION
    assert "watch_errors" not in bench["required"] and "samples" not in bench["$defs"]["Point"]["required"]
    assert list(bench["$defs"]["Phases"]["properties"]) == list(report.BENCH_PHASES)


def test_a_drifted_or_missing_schema_is_named_and_rewritten(tmp_path, capsys) -> None:
    assert schemas.main(["--dir", str(tmp_path)]) == 0 and schemas.drifted(tmp_path) == []
    edited = json.loads((tmp_path / "bench.schema.json").read_text())
    edited["required"].remove("machine")
    (tmp_path / "bench.schema.json").write_text(json.dumps(edited))
    (tmp_path / "smoke.schema.json").unlink()
    assert schemas.drifted(tmp_path) == ["smoke.schema.json", "bench.schema.json"]
    assert schemas.main(["--dir", str(tmp_path), "--check"]) == 1
    assert "bench.schema.json drifted" in capsys.readouterr().err
    assert schemas.main(["--dir", str(tmp_path)]) == 0 and schemas.drifted(tmp_path) == []
