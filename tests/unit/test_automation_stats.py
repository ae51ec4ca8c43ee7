"""Latency statistics of the bench (numpy's default percentile is the reference)."""

from __future__ import annotations

import random

import numpy
import pytest

from automation.stats import percentile, summarize


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.95, 1.0])
def test_percentile_matches_numpy(seed, fraction):
    rng = random.Random(seed)
    values = [rng.expovariate(2.0) for _ in range(rng.randint(1, 40))]
    assert percentile(values, fraction) == pytest.approx(float(numpy.percentile(values, fraction * 100)))


def test_percentile_interpolates_between_ranks():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0], 0.95) == 10.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # order of samples does not matter


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="within 0..1"):
        percentile([1.0], 95)


def test_summary_of_samples_and_of_nothing():
    summary = summarize([0.5, 0.1, 0.3, 2.0])
    assert summary["count"] == 4 and summary["max"] == 2.0 and summary["min"] == 0.1
    assert summary["p50"] == pytest.approx(0.4)
    assert summary["p95"] == pytest.approx(float(numpy.percentile([0.5, 0.1, 0.3, 2.0], 95)), abs=1e-4)
    assert summarize([]) == {"count": 0, "p50": None, "p95": None, "max": None, "mean": None, "min": None}
