"""Latency statistics of the benchmark (p50 / p95 / max over seconds)."""

from __future__ import annotations

import math
from typing import Optional, Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile with linear interpolation between closest ranks
    (the same definition as numpy's default); raises ValueError on an empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summarize(values: Sequence[float]) -> dict[str, Optional[float]]:
    """``{count, p50, p95, max, mean, min}`` in seconds (None fields for an empty sample)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None, "mean": None, "min": None}
    return {
        "count": len(values),
        "p50": round(percentile(values, 0.50), 4),
        "p95": round(percentile(values, 0.95), 4),
        "max": round(max(values), 4),
        "mean": round(sum(values) / len(values), 4),
        "min": round(min(values), 4),
    }
