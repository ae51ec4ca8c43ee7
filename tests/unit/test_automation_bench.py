"""The bench loop with a fake pool and SDK: modes, warm/cold detection, statistics, failures
as data points, and the pool restored to its declared size whatever happens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from automation import bench, report
from automation.smoke import StackTarget

TARGET = StackTarget("gvisor", "demo", "pool", 2, "gvisor", "t" * 32)


class FakePool:
    def __init__(self, replicas=2):
        self.replicas, self.history = replicas, []

    def warm_pool(self, namespace, name):
        return {"spec": {"replicas": self.replicas}}

    def set_pool_replicas(self, namespace, name, replicas):
        self.replicas = replicas
        self.history.append(replicas)

    def wait_pool_ready(self, namespace, name, replicas, timeout=600):
        return 1.5


class FakeSdk:
    """Warm while the pool has members (sandbox named after the pool), cold otherwise."""

    def __init__(self, pool, fail_on=None, interrupt_on=None):
        self.pool, self.count, self.deleted = pool, 0, []
        self.fail_on, self.interrupt_on = fail_on, interrupt_on

    def create_sandbox(self, warmpool, namespace, sandbox_ready_timeout):
        self.count += 1
        if self.count == self.interrupt_on:
            raise KeyboardInterrupt
        if self.count == self.fail_on:
            raise RuntimeError("claim timed out")
        claim = f"sandbox-claim-{self.count}"
        sandbox_id = f"pool-{self.count}" if self.pool.replicas else claim
        run = lambda command: SimpleNamespace(exit_code=0, stdout="ready\n", stderr="")  # noqa: E731
        return SimpleNamespace(claim_name=claim, sandbox_id=sandbox_id, commands=SimpleNamespace(run=run))

    def delete_sandbox(self, claim_name, namespace):
        self.deleted.append(claim_name)


def test_warm_then_cold_with_the_pool_restored():
    pool = FakePool(replicas=2)
    sdk = FakeSdk(pool)
    data = bench.measure_modes(TARGET, pool, sdk, 3, log=lambda line: None)
    assert pool.history == [3, 0, 2]
    assert data["warm"]["warm_adopted"] == 3 and data["cold"]["warm_adopted"] == 0
    assert data["warm"]["pool_replicas"] == 3 and data["cold"]["pool_replicas"] == 0
    assert data["warm"]["claim_ready"]["count"] == 3 and data["cold"]["first_exec"]["count"] == 3
    assert len(sdk.deleted) == 6  # every claim is removed after its sample
    data.update(started_at=0.0, finished_at=1.0)
    assert report.validate_bench_report(data) == []


def test_a_failed_claim_is_recorded_and_left_out_of_the_statistics():
    pool = FakePool()
    data = bench.measure_modes(TARGET, pool, FakeSdk(pool, fail_on=2), 3, log=lambda line: None)
    warm = data["warm"]
    assert (warm["ok"], warm["failed"]) == (2, 1)
    assert warm["claim_ready"]["count"] == 2
    assert warm["samples"][1]["error"] == "RuntimeError: claim timed out"


def test_the_pool_is_restored_even_when_interrupted():
    pool = FakePool(replicas=4)
    with pytest.raises(KeyboardInterrupt):
        bench.measure_modes(TARGET, pool, FakeSdk(pool, interrupt_on=2), 3, log=lambda line: None)
    assert pool.history == [3, 4]
