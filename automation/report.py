"""Report formats of ``smoke`` and ``bench``: pydantic models of ``out/<stack>/smoke.json`` and
``bench.json`` (their JSON schemas, generated from these models, are in docs/schemas/), the check
runner that fills in a smoke check, the smoke summary, the JSON file, and the schema check that
names each problem in one line (used by the driver before it writes a report, by the tests, and
by anyone consuming the files).

Strict like the files are read: a bool is not an int, a string is not a number, every field the
driver writes is required (``watch_errors`` and a sequential point's ``samples`` may be absent),
phases are never negative, and a bench report of another ``schema_version`` is named as such
rather than half-read.
"""

from __future__ import annotations

import copy
import json
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Optional, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    create_model,
    field_validator,
    model_validator,
)

from automation.problems import READING, Rule, problem, problems

SCHEMA_VERSION = 1
"""Version of the smoke report."""
BENCH_SCHEMA_VERSION = 2
"""Version of the bench report; 2 added phases, load, capacity, concurrency and controller metrics."""
BENCH_PHASES = ("create", "bind", "ready", "sdk", "first_command")
"""The phases of one claim, in order (automation.bench.PHASES)."""
Status = Literal["pass", "fail", "skip"]
STATUSES = get_args(Status)


class Model(BaseModel):
    """Strict (a bool is no int, a string no number; an int is a number); field docstrings are the
    descriptions in the JSON schema; other keys are allowed and ignored. Every field is required
    in a file; ``builder_defaults`` are what the code that builds a report may leave out."""

    model_config = ConfigDict(strict=True, use_attribute_docstrings=True)
    builder_defaults: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_builder_defaults(cls, values: Any, info: ValidationInfo) -> Any:
        if info.context == READING or not isinstance(values, dict):
            return values
        return {**copy.deepcopy(cls.builder_defaults), **values}


# ----------------------------------------------------------------------------- smoke.json

class CheckResult(Model):
    """Outcome of one smoke check."""

    id: int
    """Number of the check in the issue's list (1..7)."""
    name: str
    status: Status
    """``pass`` | ``fail`` | ``skip`` (skip: not applicable to this stack, says why in detail)."""
    seconds: float
    detail: str
    data: dict[str, Any]
    """Evidence (observed values) that backs the verdict."""

    # A check not run yet: failed, no time, no detail, no evidence (the runner fills them in).
    builder_defaults = {"status": "fail", "seconds": 0.0, "detail": "", "data": {}}


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


class _SmokeFields(Model):
    stack: str
    runtime: str
    started_at: float
    finished_at: float
    checks: list[CheckResult]
    claim: dict[str, Any]
    """The claim used for checks 1-6: name, sandbox, pod, claim→Ready seconds."""
    schema_version: int


class SmokeReport(_SmokeFields):
    """What ``smoke`` builds and writes to ``out/<stack>/smoke.json`` (:meth:`to_dict`)."""

    # A report before its checks ran: none yet, no claim, not finished.
    builder_defaults = {"finished_at": 0.0, "checks": [], "claim": {}, "schema_version": SCHEMA_VERSION}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class SmokeReportFile(_SmokeFields):
    """``out/<stack>/smoke.json``."""

    passed: bool
    """True only if no check failed (and there was one); the exit code follows it."""

    @field_validator("passed")
    @classmethod
    def _follows_the_checks(cls, passed: bool, info: ValidationInfo) -> bool:
        checks = info.data.get("checks")
        if checks and passed != all(check.status != "fail" for check in checks):
            raise problem("disagrees with the check statuses")
        return passed


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


def validate_smoke_report(data: Any) -> list[str]:
    """Schema problems of a smoke report dict (empty list: valid)."""
    return problems(SmokeReportFile, data)


# ----------------------------------------------------------------------------- bench.json

NonNegative = Annotated[float, Field(ge=0)]
LoadAverages = Annotated[list[float], Field(min_length=3, max_length=3), Rule("be the three load averages")]
"""1, 5 and 15-minute load averages (``os.getloadavg``)."""
Levels = Annotated[list[Annotated[int, Field(ge=1)]], Rule("list positive integers")]


class Stats(Model):
    """Summary of latency samples in seconds (``automation.stats.summarize``; None without samples)."""

    count: int
    p50: Optional[float]
    p90: Optional[float]
    p95: Optional[float]
    p99: Optional[float]
    max: Optional[float]
    mean: Optional[float]
    min: Optional[float]


Phases = create_model("Phases", __base__=Model, __doc__="Seconds of each phase of one claim (None: not seen).",
                      **{phase: (Optional[NonNegative], ...) for phase in BENCH_PHASES})
PhaseStats = create_model("PhaseStats", __base__=Model, __doc__="Statistics of each phase.",
                          **{phase: (Stats, ...) for phase in BENCH_PHASES})


class Sample(Model):
    """One claim: its timings on the driver's clock, its phases and where they came from."""

    claim: str
    ok: bool
    warm: Optional[bool]
    """Whether the claim adopted a warm sandbox."""
    error: Optional[str]
    claim_ready_seconds: Optional[float]
    first_exec_seconds: Optional[float]
    total_seconds: Optional[float]
    requested_at: Optional[float]
    sdk_returned_at: Optional[float]
    first_result_at: Optional[float]
    phases: Phases  # type: ignore[valid-type]
    clamped: Annotated[list[str], Rule("list milestone names")]
    """Watch milestones moved into [requested, next milestone]."""
    controller: dict[str, Any]
    cold: dict[str, Any]
    timeline: dict[str, Any]
    first_command_split: Optional[dict[str, Any]] = None
    """The first command's latency split along its path (automation.server_timing; None: the
    router wrote no Server-Timing, or a report from before it did)."""


class Statistics(Model):
    """What a series of claims measured (only successful samples count toward the figures)."""

    claim_ready: Stats
    first_exec: Stats
    total: Stats
    phases: PhaseStats  # type: ignore[valid-type]
    controller_phases: dict[str, Stats]
    cold_phases: dict[str, Stats]
    first_command_split: dict[str, Stats] = {}
    """Statistics of each part of the first command's split (empty: not measured)."""
    ok: int
    failed: int
    warm_adopted: int
    load_before: LoadAverages
    load_after: LoadAverages
    steal_percent: Optional[float] = None
    """CPU time the hypervisor gave to other guests during the series, % (None: unknown, or a
    report from before it was recorded)."""
    controller: Optional[dict[str, Any]]
    """What the controller's histograms observed during the series (None: not scraped)."""
    router: Optional[dict[str, Any]] = None
    """What the router's own metrics observed during the series: route waits (requests that came
    before the watch knew their sandbox), upstream connections opened and errors (None: not
    scraped, or a report from before the router was scraped)."""


class Section(Statistics):
    """The sequential claims of one mode (warm or cold)."""

    pool_replicas: int
    prepare_seconds: float
    samples: list[Sample]
    sequence: Literal["settled", "back-to-back"] = "back-to-back"
    """settled: each claim waited for a quiet namespace (pool refilled, nothing starting or
    terminating) first; back-to-back: each met the previous claim's refill or teardown."""
    settle_seconds: list[float] = []
    """How long each settled claim waited for the quiet namespace (not part of its latency)."""


class Point(Statistics):
    """One point of the latency-vs-concurrency curve."""

    concurrency: int
    source: Literal["sequential", "burst"]
    burst_seconds: list[float]
    claims_per_second: Optional[float]
    samples: list[Sample] = []
    """A burst's samples (a sequential point's are in its section)."""


class Machine(Model):
    cpus: int
    load_before: LoadAverages
    load_after: Optional[LoadAverages]


class Capacity(Model):
    """How many sandboxes the cluster can hold at once for the pool's template."""

    max_sandboxes: Optional[int]
    limited_by: Optional[str]
    per_sandbox: dict[str, Any]
    nodes: list[Any]
    error: Optional[str]


class ControllerMetrics(Model):
    available: bool
    source: Optional[str]
    error: Optional[str]


class Concurrency(Model):
    levels_requested: Levels
    levels: Levels
    capped: bool
    reason: Optional[str]
    warm: list[Point]
    cold: list[Point]


class BenchReport(Model):
    """``out/<stack>/bench.json``."""

    schema_version: int = Field(json_schema_extra={"const": BENCH_SCHEMA_VERSION})
    stack: str
    runtime: str
    n: int
    original_pool_replicas: int
    started_at: float
    finished_at: float
    machine: Machine
    capacity: Capacity
    controller_metrics: ControllerMetrics
    watch_errors: Annotated[list[str], Rule("list strings")] = []
    """The first 20 errors of the watches (absent when bench ran without them)."""
    warm: Section
    cold: Section
    concurrency: Concurrency

    @field_validator("schema_version")
    @classmethod
    def _this_version(cls, version: int) -> int:
        if version != BENCH_SCHEMA_VERSION:
            raise problem(f"is {version}, this driver reads {BENCH_SCHEMA_VERSION}")
        return version


def validate_bench_report(data: Any) -> list[str]:
    """Schema problems of a bench report dict (empty list: valid)."""
    return problems(BenchReport, data)
