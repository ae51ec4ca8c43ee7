"""Latency statistics of the bench (numpy's default percentile is the reference) and quantiles
from Prometheus histogram buckets (Prometheus' histogram_quantile is the reference)."""

from __future__ import annotations

import math
import random

import numpy
import pytest

from automation.stats import histogram_quantile, percentile, summarize


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
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
    with pytest.raises(ValueError, match="multiple of 0.001"):
        percentile([1.0, 2.0], 0.12345)


def test_summary_of_samples_and_of_nothing():
    values = [0.5, 0.1, 0.3, 2.0]
    summary = summarize(values)
    assert summary["count"] == 4 and summary["max"] == 2.0 and summary["min"] == 0.1
    assert summary["p50"] == pytest.approx(0.4)
    for key, q in (("p90", 90), ("p95", 95), ("p99", 99)):
        assert summary[key] == pytest.approx(float(numpy.percentile(values, q)), abs=1e-4)
    assert summary["mean"] == pytest.approx(0.725)
    assert summarize([]) == {"count": 0, "p50": None, "p90": None, "p95": None, "p99": None, "max": None,
                             "mean": None, "min": None}


BUCKETS = {100.0: 3.0, 250.0: 5.0, 500.0: 5.0, math.inf: 6.0}  # cumulative, like the controller's ms histograms


def test_histogram_quantile_interpolates_inside_the_bucket():
    assert histogram_quantile(0.25, BUCKETS) == pytest.approx(50.0)      # rank 1.5 of 3 in (0, 100]
    assert histogram_quantile(0.75, BUCKETS) == pytest.approx(212.5)     # rank 4.5: 100 + 150 * 1.5/2
    assert histogram_quantile(0.5, BUCKETS) == pytest.approx(100.0)      # rank 3: the top of the first bucket


def test_histogram_quantile_in_the_inf_bucket_and_without_observations():
    assert histogram_quantile(0.99, BUCKETS) == 500.0  # above the last finite bound: that bound
    assert histogram_quantile(0.5, {100.0: 0.0, math.inf: 0.0}) is None
    with pytest.raises(ValueError, match=r"\+Inf"):
        histogram_quantile(0.5, {100.0: 1.0})
