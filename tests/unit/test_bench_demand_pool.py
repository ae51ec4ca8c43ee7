"""bench/demand_pool.py: each mode's config passes the stack's rules, and the numbers it reports."""

from __future__ import annotations

import argparse

from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
from bench import demand_pool

ARGS = argparse.Namespace(baseline=2, wave=4, max=6, hold=25, gap=60, scale_down=60)


def _raw(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def test_each_mode_is_a_valid_stack_config_of_that_mode() -> None:
    fixed = parse_stack_config(_raw(demand_pool.mode_config("fixed", ARGS)), "gvisor")
    assert fixed.autoscaling is None and fixed.warm_pool_replicas == 2 and not fixed.install_keda
    keda = parse_stack_config(_raw(demand_pool.mode_config("keda", ARGS)), "gvisor")
    assert keda.autoscaling is not None and keda.install_keda
    assert (keda.autoscaling.min_replicas, keda.autoscaling.max_replicas, keda.autoscaling.scale_down_seconds) == (2, 6, 60)


def test_the_pool_is_back_when_it_returns_to_its_level_after_a_drop() -> None:
    samples = [{"t": t, "ready": r, "spec": s} for t, r, s in
               [(0, 2, 2), (1, 0, 2), (2, 0, 4), (5, 1, 4), (9, 2, 4), (12, 4, 4), (80, 4, 2), (81, 2, 2)]]
    assert demand_pool.back_after(samples, 0.5, 2) == 8.5
    assert demand_pool.back_after(samples, 10, 2) is None  # never dropped below 2 after t=10
    assert demand_pool.first_at(samples, 0, "spec", 4) == 2
    assert demand_pool.first_at(samples, 20, "spec", 2) == 60


def test_latency_summary() -> None:
    assert demand_pool.summarize([0.3, 0.1, 0.2, 2.0]) == {"n": 4, "p50": 0.25, "p95": 1.745, "max": 2.0}
    assert demand_pool.summarize([]) == {"n": 0, "p50": None, "p95": None, "max": None}
