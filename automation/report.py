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


def validate_bench_report(data: Any) -> list[str]:
    """Schema problems of a bench report dict (empty list: valid)."""
    errors: list[str] = []
    _expect(errors, data, "schema_version", (int,), "report")
    _expect(errors, data, "stack", (str,), "report")
    _expect(errors, data, "n", (int,), "report")
    for mode in ("warm", "cold"):
        section = _expect(errors, data, mode, (dict,), "report")
        if section is None:
            continue
        _expect(errors, section, "pool_replicas", (int,), f"report.{mode}")
        samples = _expect(errors, section, "samples", (list,), f"report.{mode}") or []
        for index, sample in enumerate(samples):
            where = f"report.{mode}.samples[{index}]"
            _expect(errors, sample, "claim", (str,), where)
            _expect(errors, sample, "ok", (bool,), where)
            _expect(errors, sample, "warm", (bool, type(None)), where)
            _expect(errors, sample, "claim_ready_seconds", (int, float, type(None)), where)
            _expect(errors, sample, "first_exec_seconds", (int, float, type(None)), where)
        for metric in ("claim_ready", "first_exec"):
            stats = _expect(errors, section, metric, (dict,), f"report.{mode}")
            if stats is not None:
                for key in ("count", "p50", "p95", "max"):
                    _expect(errors, stats, key, (int, float, type(None)), f"report.{mode}.{metric}")
    return errors


def load_json(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None
