"""Report formats of ``smoke`` and ``bench``: dataclasses, JSON files, a human summary and a
schema check (used by the tests and by anyone consuming ``out/<stack>/*.json``)."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

SCHEMA_VERSION = 1
"""Version of the smoke report."""
BENCH_SCHEMA_VERSION = 2
"""Version of the bench report; 2 added phases, load, capacity, concurrency and controller metrics."""
BENCH_PHASES = ("create", "bind", "ready", "sdk", "first_command")
"""The phases of one claim, in order (automation.bench.PHASES)."""
STATUSES = ("pass", "fail", "skip")


@dataclass
class CheckResult:
    """Outcome of one smoke check."""

    id: int
    """Number of the check in the issue's list (1..6)."""
    name: str
    status: str = "fail"
    """``pass`` | ``fail`` | ``skip`` (skip: not applicable to this stack, says why in detail)."""
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    """Evidence (observed values) that backs the verdict."""


def run_check(check_id: int, name: str, body: Callable[[CheckResult], None]) -> CheckResult:
    """Run ``body`` (which fills in status/detail/data) with timing; an exception is a failure."""
    result = CheckResult(id=check_id, name=name)
    started = time.monotonic()
    try:
        body(result)
    except Exception as error:  # noqa: BLE001 - a crashing check is a failed check, with its reason
        result.status = "fail"
        result.detail = f"{type(error).__name__}: {error}"
        result.data.setdefault("traceback", traceback.format_exc(limit=6))
    result.seconds = round(time.monotonic() - started, 3)
    return result


@dataclass
class SmokeReport:
    """What ``smoke`` writes to ``out/<stack>/smoke.json``."""

    stack: str
    runtime: str
    started_at: float
    finished_at: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)
    claim: dict[str, Any] = field(default_factory=dict)
    """The claim used for checks 1-6: name, sandbox, pod, claim→Ready seconds."""
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


def smoke_summary(report: SmokeReport) -> str:
    """Human summary: one line per check, then the verdict."""
    mark = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}
    lines = [f"smoke {report.stack} ({report.runtime}):"]
    for check in report.checks:
        lines.append(f"  [{mark.get(check.status, check.status)}] {check.id}. {check.name} "
                     f"({check.seconds:.2f}s){': ' + check.detail if check.detail else ''}")
    failed = [c for c in report.checks if c.status == "fail"]
    lines.append(f"result: {'PASSED' if report.passed else 'FAILED'} "
                 f"({len(report.checks) - len(failed)}/{len(report.checks)} not failed)")
    return "\n".join(lines)


def _expect(errors: list[str], data: Any, key: str, types: tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        errors.append(f"{where}.{key} is missing")
        return None
    value = data[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        errors.append(f"{where}.{key} should be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")
        return None
    return value


def validate_smoke_report(data: Any) -> list[str]:
    """Schema problems of a smoke report dict (empty list: valid)."""
    errors: list[str] = []
    _expect(errors, data, "schema_version", (int,), "report")
    _expect(errors, data, "stack", (str,), "report")
    _expect(errors, data, "runtime", (str,), "report")
    _expect(errors, data, "started_at", (int, float), "report")
    _expect(errors, data, "finished_at", (int, float), "report")
    _expect(errors, data, "claim", (dict,), "report")
    passed = _expect(errors, data, "passed", (bool,), "report")
    checks = _expect(errors, data, "checks", (list,), "report") or []
    for index, check in enumerate(checks):
        where = f"report.checks[{index}]"
        _expect(errors, check, "id", (int,), where)
        _expect(errors, check, "name", (str,), where)
        _expect(errors, check, "seconds", (int, float), where)
        _expect(errors, check, "detail", (str,), where)
        _expect(errors, check, "data", (dict,), where)
        status = _expect(errors, check, "status", (str,), where)
        if status is not None and status not in STATUSES:
            errors.append(f"{where}.status should be one of {STATUSES}, got {status!r}")
    if passed is not None and checks and passed != all(isinstance(c, dict) and c.get("status") != "fail" for c in checks):
        errors.append("report.passed disagrees with the check statuses")
    return errors


_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
_STATS_KEYS = ("count", "p50", "p90", "p95", "p99", "max", "mean", "min")


def _expect_stats(errors: list[str], data: Any, key: str, where: str) -> None:
    stats = _expect(errors, data, key, (dict,), where)
    if stats is not None:
        for name in _STATS_KEYS:
            _expect(errors, stats, name, _OPTIONAL_NUMBER, f"{where}.{key}")


def _expect_load(errors: list[str], data: Any, key: str, where: str, optional: bool = False) -> None:
    load = _expect(errors, data, key, (list, type(None)) if optional else (list,), where)
    if load is not None and (len(load) != 3 or not all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in load)):
        errors.append(f"{where}.{key} should be the three load averages, got {load!r}")


def _expect_sample(errors: list[str], sample: Any, where: str) -> None:
    _expect(errors, sample, "claim", (str,), where)
    _expect(errors, sample, "ok", (bool,), where)
    _expect(errors, sample, "warm", (bool, type(None)), where)
    _expect(errors, sample, "error", (str, type(None)), where)
    for key in ("claim_ready_seconds", "first_exec_seconds", "total_seconds", "requested_at", "sdk_returned_at",
                "first_result_at"):
        _expect(errors, sample, key, _OPTIONAL_NUMBER, where)
    phases = _expect(errors, sample, "phases", (dict,), where)
    if phases is not None:
        for phase in BENCH_PHASES:
            value = _expect(errors, phases, phase, _OPTIONAL_NUMBER, f"{where}.phases")
            if isinstance(value, _NUMBER) and value < 0:
                errors.append(f"{where}.phases.{phase} is negative ({value})")
    clamped = _expect(errors, sample, "clamped", (list,), where)
    if clamped is not None and not all(isinstance(x, str) for x in clamped):
        errors.append(f"{where}.clamped should list milestone names")
    for key in ("controller", "cold", "timeline"):
        _expect(errors, sample, key, (dict,), where)


def _expect_statistics(errors: list[str], data: Any, where: str) -> None:
    for metric in ("claim_ready", "first_exec", "total"):
        _expect_stats(errors, data, metric, where)
    phases = _expect(errors, data, "phases", (dict,), where)
    if phases is not None:
        for phase in BENCH_PHASES:
            _expect_stats(errors, phases, phase, f"{where}.phases")
    for key in ("controller_phases", "cold_phases"):
        group = _expect(errors, data, key, (dict,), where)
        for name in group or {}:
            _expect_stats(errors, group, name, f"{where}.{key}")
    for key in ("ok", "failed", "warm_adopted"):
        _expect(errors, data, key, (int,), where)
    _expect_load(errors, data, "load_before", where)
    _expect_load(errors, data, "load_after", where)
    _expect(errors, data, "controller", (dict, type(None)), where)


def validate_bench_report(data: Any) -> list[str]:
    """Schema problems of a bench report dict (empty list: valid). Strict: every field the
    driver writes is required with its type, phases are never negative, and the version must
    be BENCH_SCHEMA_VERSION (an older report is reported as such, not half-read)."""
    errors: list[str] = []
    version = _expect(errors, data, "schema_version", (int,), "report")
    if version is not None and version != BENCH_SCHEMA_VERSION:
        errors.append(f"report.schema_version is {version}, this driver reads {BENCH_SCHEMA_VERSION}")
    _expect(errors, data, "stack", (str,), "report")
    _expect(errors, data, "runtime", (str,), "report")
    _expect(errors, data, "n", (int,), "report")
    _expect(errors, data, "original_pool_replicas", (int,), "report")
    _expect(errors, data, "started_at", _NUMBER, "report")
    _expect(errors, data, "finished_at", _NUMBER, "report")
    machine = _expect(errors, data, "machine", (dict,), "report")
    if machine is not None:
        _expect(errors, machine, "cpus", (int,), "report.machine")
        _expect_load(errors, machine, "load_before", "report.machine")
        _expect_load(errors, machine, "load_after", "report.machine", optional=True)
    capacity = _expect(errors, data, "capacity", (dict,), "report")
    if capacity is not None:
        _expect(errors, capacity, "max_sandboxes", (int, type(None)), "report.capacity")
        _expect(errors, capacity, "limited_by", (str, type(None)), "report.capacity")
        _expect(errors, capacity, "per_sandbox", (dict,), "report.capacity")
        _expect(errors, capacity, "nodes", (list,), "report.capacity")
        _expect(errors, capacity, "error", (str, type(None)), "report.capacity")
    metrics = _expect(errors, data, "controller_metrics", (dict,), "report")
    if metrics is not None:
        _expect(errors, metrics, "available", (bool,), "report.controller_metrics")
        _expect(errors, metrics, "source", (str, type(None)), "report.controller_metrics")
        _expect(errors, metrics, "error", (str, type(None)), "report.controller_metrics")
    if isinstance(data, dict) and "watch_errors" in data:  # written by run_bench, absent without a watch
        watch_errors = _expect(errors, data, "watch_errors", (list,), "report")
        if watch_errors is not None and not all(isinstance(x, str) for x in watch_errors):
            errors.append("report.watch_errors should list strings")
    for mode in ("warm", "cold"):
        section = _expect(errors, data, mode, (dict,), "report")
        if section is None:
            continue
        where = f"report.{mode}"
        _expect(errors, section, "pool_replicas", (int,), where)
        _expect(errors, section, "prepare_seconds", _NUMBER, where)
        _expect_statistics(errors, section, where)
        samples = _expect(errors, section, "samples", (list,), where) or []
        for index, sample in enumerate(samples):
            _expect_sample(errors, sample, f"{where}.samples[{index}]")
    curve = _expect(errors, data, "concurrency", (dict,), "report")
    if curve is not None:
        for key in ("levels_requested", "levels"):
            levels = _expect(errors, curve, key, (list,), "report.concurrency")
            if levels is not None and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in levels):
                errors.append(f"report.concurrency.{key} should list positive integers, got {levels!r}")
        _expect(errors, curve, "capped", (bool,), "report.concurrency")
        _expect(errors, curve, "reason", (str, type(None)), "report.concurrency")
        for mode in ("warm", "cold"):
            points = _expect(errors, curve, mode, (list,), "report.concurrency") or []
            for index, point in enumerate(points):
                where = f"report.concurrency.{mode}[{index}]"
                _expect(errors, point, "concurrency", (int,), where)
                source = _expect(errors, point, "source", (str,), where)
                if source is not None and source not in ("sequential", "burst"):
                    errors.append(f"{where}.source should be 'sequential' or 'burst', got {source!r}")
                _expect(errors, point, "burst_seconds", (list,), where)
                _expect(errors, point, "claims_per_second", _OPTIONAL_NUMBER, where)
                _expect_statistics(errors, point, where)
                for sample_index, sample in enumerate(point.get("samples") or [] if isinstance(point, dict) else []):
                    _expect_sample(errors, sample, f"{where}.samples[{sample_index}]")
    return errors


def load_json(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None
