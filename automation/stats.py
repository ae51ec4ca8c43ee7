"""Statistics of the bench: percentiles of latency samples (``statistics.quantiles``, inclusive,
i.e. numpy's default linear definition), summaries in seconds, and quantile estimates from
Prometheus histogram buckets (the controller's own latency metrics)."""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Optional, Sequence

# Percentiles are cut on a 0.1 % grid: every figure the bench reports (p50, p90, p95, p99,
# p99.9) lies on it, so statistics.quantiles gives each exactly.
_GRID = 1000


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0..1, a multiple of 0.001) percentile with linear interpolation between
    closest ranks (``statistics.quantiles(method="inclusive")``, the same definition as numpy's
    default); raises ValueError on an empty sample or an unsupported fraction."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    step = round(fraction * _GRID)
    if not math.isclose(step, fraction * _GRID, abs_tol=1e-6):
        raise ValueError(f"fraction must be a multiple of {1 / _GRID}, got {fraction}")
    ordered = sorted(values)
    if step == 0 or len(ordered) == 1:
        return ordered[0]
    if step == _GRID:
        return ordered[-1]
    return statistics.quantiles(ordered, n=_GRID, method="inclusive")[step - 1]


def summarize(values: Sequence[float]) -> dict[str, Optional[float]]:
    """``{count, p50, p90, p95, p99, max, mean, min}`` in seconds (None fields for an empty
    sample)."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p95": None, "p99": None, "max": None, "mean": None, "min": None}
    return {
        "count": len(values),
        "p50": round(percentile(values, 0.50), 4),
        "p90": round(percentile(values, 0.90), 4),
        "p95": round(percentile(values, 0.95), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
        "min": round(min(values), 4),
    }


def histogram_quantile(fraction: float, buckets: Mapping[float, float]) -> Optional[float]:
    """Quantile estimate from cumulative histogram buckets ``{upper bound: count}`` (``+Inf``
    included), interpolating linearly inside the bucket as Prometheus' ``histogram_quantile``
    does; None without observations. A quantile in the ``+Inf`` bucket returns the highest finite
    bound (all one can say is "above it")."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        raise ValueError("histogram buckets need a +Inf bucket")
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = fraction * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
