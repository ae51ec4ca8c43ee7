"""The bench without a cluster: the loop with a fake pool and SDK (modes, warm/cold detection,
statistics, failures as data points, the pool restored whatever happens, concurrency bursts),
phases from timestamp and watch-event fixtures, capacity math, controller metrics, and the pure
parts of the router peer bench (bench/router_vs_go.py, bench/go_router.py)."""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from automation import bench, report
from automation.session import StackTarget

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import go_router  # noqa: E402
import router_vs_go  # noqa: E402

TARGET = StackTarget("gvisor", "demo", "pool", 2, "gvisor", "t" * 32)


# ----------------------------------------------------------------------------- fakes

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

    def wait_settled(self, namespace, name, replicas, timeout=300):
        self.settled = getattr(self, "settled", 0) + 1
        return 0.25


class FakeSdk:
    """Warm while the pool has members (sandbox named after the pool), cold otherwise. Records
    the watch events a real cluster would produce (claim seen, then bound and Ready) in
    ``events``, as ObjectWatch would. Thread-safe, for the concurrency bursts."""

    def __init__(self, pool, fail_on=None, interrupt_on=None):
        self.pool, self.deleted, self.events = pool, [], []
        self.fail_on, self.interrupt_on = fail_on, interrupt_on
        self._numbers, self._lock = itertools.count(1), threading.Lock()
        self.in_flight, self.peak = 0, 0

    def create_sandbox(self, warmpool, namespace, sandbox_ready_timeout):
        number = next(self._numbers)
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if number == self.interrupt_on:
                raise KeyboardInterrupt
            if number == self.fail_on:
                raise RuntimeError("claim timed out")
            claim = f"sandbox-claim-{number}"
            sandbox_id = f"pool-{number}" if self.pool.replicas else claim
            now = time.time()
            self.events += [claim_event(claim, now + 0.001, "ADDED"),
                            claim_event(claim, now + 0.002, bound=sandbox_id, ready=True)]
            time.sleep(0.01)  # both threads of a burst are inside at once
            run = lambda command: SimpleNamespace(exit_code=0, stdout="ready\n", stderr="")  # noqa: E731
            return SimpleNamespace(claim_name=claim, sandbox_id=sandbox_id, commands=SimpleNamespace(run=run))
        finally:
            with self._lock:
                self.in_flight -= 1

    def delete_sandbox(self, claim_name, namespace):
        self.deleted.append(claim_name)


class FakeObserver:
    def __init__(self, sdk):
        self.sdk = sdk

    def settle(self):
        pass

    def snapshot(self):
        return list(self.sdk.events)


class FakeScraper:
    """Each scrape returns one more warm observation of the controller's startup histogram."""

    source, error = "service proxy agent-sandbox-system/agent-sandbox-controller:metrics/metrics", None

    def __init__(self):
        self.count = 0

    def scrape(self):
        self.count += 1
        return bench.parse_metrics(metrics_text(self.count))


def claim_event(name, t, event_type="MODIFIED", bound=None, ready=False, annotations=None):
    return {"kind": "claim", "type": event_type, "name": name, "t": t, "created": math.floor(t), "ready": ready,
            "bound": bound, "reason": None, "annotations": annotations or {}}


def metrics_text(warm_count):
    return f"""# HELP agent_sandbox_claim_controller_startup_latency_ms Latency ...
# TYPE agent_sandbox_claim_controller_startup_latency_ms histogram
agent_sandbox_claim_controller_startup_latency_ms_bucket{{launch_type="warm",sandbox_template="python",le="100"}} {warm_count}
agent_sandbox_claim_controller_startup_latency_ms_bucket{{launch_type="warm",sandbox_template="python",le="250"}} {warm_count}
agent_sandbox_claim_controller_startup_latency_ms_bucket{{launch_type="warm",sandbox_template="python",le="+Inf"}} {warm_count}
agent_sandbox_claim_controller_startup_latency_ms_sum{{launch_type="warm",sandbox_template="python"}} {40 * warm_count}
agent_sandbox_claim_controller_startup_latency_ms_count{{launch_type="warm",sandbox_template="python"}} {warm_count}
# TYPE agent_sandbox_claim_creation_total counter
agent_sandbox_claim_creation_total{{namespace="demo",launch_type="warm",created_by="python-client"}} {warm_count}
# TYPE go_goroutines gauge
go_goroutines 42
"""


# ----------------------------------------------------------------------------- the loop

def test_warm_then_cold_with_the_pool_restored():
    pool = FakePool(replicas=2)
    sdk = FakeSdk(pool)
    data = bench.measure_modes(TARGET, pool, sdk, 3, log=lambda line: None)
    assert pool.history == [3, 0, 2]
    assert data["warm"]["warm_adopted"] == 3 and data["cold"]["warm_adopted"] == 0
    assert data["warm"]["pool_replicas"] == 3 and data["cold"]["pool_replicas"] == 0
    assert data["warm"]["claim_ready"]["count"] == 3 and data["cold"]["first_exec"]["count"] == 3
    assert len(sdk.deleted) == 6  # every claim is removed after its sample
    assert [p["concurrency"] for p in data["concurrency"]["warm"]] == [1]
    data.update(started_at=0.0, finished_at=1.0)
    assert report.validate_bench_report(data) == []


def test_each_sequential_claim_waits_for_a_settled_namespace_unless_told_not_to():
    pool = FakePool(replicas=2)
    data = bench.measure_modes(TARGET, pool, FakeSdk(pool), 3, log=lambda line: None)
    assert pool.settled == 6
    assert data["warm"]["sequence"] == "settled" and data["warm"]["settle_seconds"] == [0.25] * 3
    pool = FakePool(replicas=2)
    data = bench.measure_modes(TARGET, pool, FakeSdk(pool), 3, log=lambda line: None, settle=False)
    assert not hasattr(pool, "settled")
    assert data["cold"]["sequence"] == "back-to-back" and data["cold"]["settle_seconds"] == []
    assert bench.settle_from_env({}) is True and bench.settle_from_env({"BENCH_SETTLE": "0"}) is False
    with pytest.raises(ValueError, match="BENCH_SETTLE='yes': expected 1"):
        bench.settle_from_env({"BENCH_SETTLE": "yes"})


def test_a_failed_claim_is_recorded_and_left_out_of_the_statistics():
    pool = FakePool()
    data = bench.measure_modes(TARGET, pool, FakeSdk(pool, fail_on=2), 3, log=lambda line: None)
    warm = data["warm"]
    assert (warm["ok"], warm["failed"]) == (2, 1)
    assert warm["claim_ready"]["count"] == 2
    assert warm["samples"][1]["error"] == "RuntimeError: claim timed out"
    assert warm["samples"][1]["phases"] == {phase: None for phase in bench.PHASES}


def test_the_pool_is_restored_even_when_interrupted():
    pool = FakePool(replicas=4)
    with pytest.raises(KeyboardInterrupt):
        bench.measure_modes(TARGET, pool, FakeSdk(pool, interrupt_on=2), 3, log=lambda line: None)
    assert pool.history == [3, 4]


def test_each_burst_after_the_first_meets_a_settled_namespace():
    pool = FakePool(replicas=2)
    capacity = {"max_sandboxes": 2, "limited_by": "cpu", "per_sandbox": {"cpu": 0.5}, "nodes": [], "error": None}
    bench.measure_modes(TARGET, pool, FakeSdk(pool), 4, log=lambda line: None, levels=(1, 2), capacity_info=capacity,
                        settle=False)
    assert bench.bursts_for(2, 4) == 2
    assert pool.settled == 2  # the second burst of each mode; sequential claims were told not to settle


def test_concurrency_levels_are_capped_by_capacity_and_run_as_bursts():
    pool = FakePool(replicas=2)
    sdk = FakeSdk(pool)
    scraper = FakeScraper()
    capacity = {"max_sandboxes": 3, "limited_by": "cpu", "per_sandbox": {"cpu": 0.5}, "nodes": [], "error": None}
    data = bench.measure_modes(TARGET, pool, sdk, 2, log=lambda line: None, observer=FakeObserver(sdk),
                               scraper=scraper, levels=(1, 2, 4, 8), capacity_info=capacity)
    curve = data["concurrency"]
    assert curve["levels"] == [1, 2] and curve["capped"] and "dropped [4, 8]" in curve["reason"]
    assert [(p["concurrency"], p["source"]) for p in curve["warm"]] == [(1, "sequential"), (2, "burst")]
    burst = curve["warm"][1]
    assert burst["pool_replicas"] == 2 and burst["warm_adopted"] == 2 and len(burst["samples"]) == 2
    assert burst["claims_per_second"] > 0 and len(burst["burst_seconds"]) == bench.bursts_for(2, 2) == 1
    assert curve["cold"][1]["pool_replicas"] == 0 and curve["cold"][1]["warm_adopted"] == 0
    assert sdk.peak == 2  # the burst's claims really were in flight together
    # warm 2, cold 0, warm burst 2, cold burst 0, restored 2
    assert pool.history == [2, 0, 2, 0, 2]
    assert pool.settled == 4  # before each sequential claim; one burst per level needs no settling between
    # phases from the fake watch events, summing to the total
    sample = data["warm"]["samples"][0]
    assert all(sample["phases"][p] is not None and sample["phases"][p] >= 0 for p in bench.PHASES)
    assert sum(sample["phases"].values()) == pytest.approx(sample["total_seconds"], abs=1e-3)
    assert data["warm"]["phases"]["create"]["count"] == 2
    # controller histograms: one more observation between the scrapes around each series
    observed = data["warm"]["controller"]["agent_sandbox_claim_controller_startup_latency_ms"][0]
    assert observed["count"] == 1 and observed["mean"] == 40.0 and observed["labels"]["launch_type"] == "warm"
    assert data["controller_metrics"]["available"] is True
    data.update(started_at=0.0, finished_at=1.0)
    assert report.validate_bench_report(data) == []


def test_concurrency_levels_from_the_environment():
    assert bench.concurrency_from_env({}) == (1, 2, 4, 8)
    assert bench.concurrency_from_env({"BENCH_CONCURRENCY": "4, 1,2"}) == (1, 2, 4)
    for bad in ("0,2", "two", ","):
        with pytest.raises(ValueError, match="BENCH_CONCURRENCY"):
            bench.concurrency_from_env({"BENCH_CONCURRENCY": bad})
    assert [bench.bursts_for(c, 10) for c in (1, 2, 4, 8, 16)] == [10, 5, 3, 2, 1]


def test_plan_levels_without_capacity_or_within_it():
    assert bench.plan_levels((1, 2, 4, 8), None)["capped"] is False
    assert bench.plan_levels((8, 1, 4, 2), 8) == {"levels_requested": [1, 2, 4, 8], "levels": [1, 2, 4, 8],
                                                 "capped": False, "reason": None}
    assert bench.plan_levels((1, 2), 0)["levels"] == []


def test_the_warm_pool_is_capped_to_what_fits_beside_the_claim_in_use():
    assert bench.warm_replicas_for(10, None) == (10, None)
    assert bench.warm_replicas_for(8, 9) == (8, None)
    replicas, why = bench.warm_replicas_for(10, 9)
    assert replicas == 8 and "n=10" in why and "fit 9" in why
    assert bench.warm_replicas_for(3, 1)[0] == 1  # one warm sandbox at least, the claim waits for it


def test_a_bench_larger_than_the_node_runs_with_a_smaller_pool_and_says_so():
    pool, lines = FakePool(replicas=2), []
    capacity = {"max_sandboxes": 3, "limited_by": "cpu", "per_sandbox": {"cpu": 0.5}, "nodes": [], "error": None}
    data = bench.measure_modes(TARGET, pool, FakeSdk(pool), 5, log=lines.append, capacity_info=capacity)
    assert pool.history[:2] == [2, 0]  # warm at 2 (not 5), then cold; restored to 2 after
    assert data["warm"]["pool_replicas"] == 2 and len(data["warm"]["samples"]) == 5
    assert any("capped at 2" in line for line in lines)


# ----------------------------------------------------------------------------- phases

def test_parse_time_keeps_sub_second_precision():
    assert bench.parse_time("2026-11-26T10:00:00Z") == 1795687200.0
    assert bench.parse_time("2026-11-26T10:00:00.123456789Z") == pytest.approx(1795687200.123457, abs=1e-6)
    assert bench.parse_time("2026-11-26T11:00:00.5+01:00") == pytest.approx(1795687200.5)
    for bad in ("unknown", "", None, "yesterday"):
        assert bench.parse_time(bad) is None


CLAIM_OBJECT = {
    "metadata": {"name": "sandbox-claim-1", "creationTimestamp": "2026-11-26T10:00:00Z", "annotations": {
        "agents.x-k8s.io/client-first-requested-at": "2026-11-26T10:00:00.100000+00:00",
        "agents.x-k8s.io/controller-first-observed-at": "2026-11-26T10:00:00.130Z",
        "agents.x-k8s.io/claim-first-ready-at": "2026-11-26T10:00:00.190Z"}},
    "status": {"sandbox": {"name": "pool-abc"},
               "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady"}]},
}


def test_object_event_reduces_claims_and_pods():
    event = bench.object_event("claim", "MODIFIED", CLAIM_OBJECT, 5.0)
    assert event["bound"] == "pool-abc" and event["ready"] and event["reason"] == "SandboxReady"
    assert event["annotations"]["controller_observed"] == pytest.approx(1795687200.13)
    assert event["annotations"]["webhook_observed"] is None  # v0.5.6 never sets it
    pod = {"metadata": {"name": "c1", "ownerReferences": [{"kind": "Sandbox", "name": "c1"}]},
           "spec": {"nodeName": "node-1"},
           "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"},
                                                         {"type": "Ready", "status": "False"}]}}
    reduced = bench.object_event("pod", "MODIFIED", pod, 6.0)
    assert (reduced["owner"], reduced["scheduled"], reduced["running"], reduced["ready"]) == ("c1", True, True, False)


T0 = 1795687200.0


def warm_events():
    annotations = bench.object_event("claim", "MODIFIED", CLAIM_OBJECT, 0)["annotations"]
    return [claim_event("sandbox-claim-1", T0 + 0.12, "ADDED"),
            claim_event("sandbox-claim-1", T0 + 0.18, bound="pool-abc", ready=True, annotations=annotations),
            claim_event("sandbox-claim-2", T0 + 0.15, "ADDED")]  # another claim: ignored


def test_warm_phases_from_a_timestamp_fixture():
    timeline = bench.claim_timeline("sandbox-claim-1", T0 + 0.1, T0 + 0.2, T0 + 0.45, warm_events())
    assert timeline["sandbox"] == "pool-abc" and timeline["sandbox_created_seen"] is None
    split = bench.claim_phases(timeline)
    assert split["phases"] == pytest.approx({"create": 0.02, "bind": 0.06, "ready": 0.0, "sdk": 0.02,
                                             "first_command": 0.25})
    assert split["total"] == pytest.approx(0.35) and split["clamped"] == [] and split["cold"] == {}
    assert split["controller"]["observed_to_first_ready"] == pytest.approx(0.06)
    assert split["controller"]["client_to_observed"] == pytest.approx(0.03)
    assert split["controller"]["webhook_to_first_ready"] is None


def test_late_watch_events_are_clamped_so_phases_still_add_up():
    # Our watch saw Ready 30 ms after the SDK had already returned (it competes for the GIL).
    events = [claim_event("c", T0 + 0.05, "ADDED"), claim_event("c", T0 + 0.23, bound="p", ready=True)]
    split = bench.claim_phases(bench.claim_timeline("c", T0, T0 + 0.2, T0 + 0.3, events))
    assert split["clamped"] == ["ready_seen", "bound_seen"]
    assert split["phases"] == pytest.approx({"create": 0.05, "bind": 0.15, "ready": 0.0, "sdk": 0.0,
                                             "first_command": 0.1})
    assert sum(split["phases"].values()) == pytest.approx(split["total"])
    # an event stamped before the request (clock granularity) is raised to it
    early = [claim_event("c", T0 - 0.01, "ADDED"), claim_event("c", T0 + 0.1, bound="p", ready=True)]
    assert bench.claim_phases(bench.claim_timeline("c", T0, T0 + 0.2, T0 + 0.3, early))["clamped"] == ["claim_seen"]


def test_cold_phases_split_the_pod_start():
    events = [claim_event("c", T0 + 0.02, "ADDED"),
              {"kind": "sandbox", "type": "ADDED", "name": "c", "t": T0 + 2.05, "created": T0 + 2, "ready": False,
               "owner": "c"},
              claim_event("c", T0 + 2.06, bound="c"),
              {"kind": "pod", "type": "ADDED", "name": "c", "t": T0 + 2.10, "created": T0 + 2, "ready": False,
               "owner": "c", "scheduled": False, "running": False, "node": None},
              {"kind": "pod", "type": "MODIFIED", "name": "c", "t": T0 + 2.12, "created": T0 + 2, "ready": False,
               "owner": "c", "scheduled": True, "running": False, "node": "n"},
              {"kind": "pod", "type": "MODIFIED", "name": "c", "t": T0 + 2.60, "created": T0 + 2, "ready": False,
               "owner": "c", "scheduled": True, "running": True, "node": "n"},
              {"kind": "pod", "type": "MODIFIED", "name": "c", "t": T0 + 2.90, "created": T0 + 2, "ready": True,
               "owner": "c", "scheduled": True, "running": True, "node": "n"},
              claim_event("c", T0 + 2.95, bound="c", ready=True)]
    split = bench.claim_phases(bench.claim_timeline("c", T0, T0 + 3.0, T0 + 3.1, events))
    assert split["phases"] == pytest.approx({"create": 0.02, "bind": 2.04, "ready": 0.89, "sdk": 0.05,
                                             "first_command": 0.1})
    assert split["cold"] == pytest.approx({"claim_to_sandbox_created": 2.03, "sandbox_to_pod_created": 0.05,
                                           "pod_created_to_scheduled": 0.02, "pod_scheduled_to_running": 0.48,
                                           "pod_running_to_ready": 0.30, "pod_ready_to_claim_ready": 0.05})


def test_adopting_a_freshly_refilled_pool_sandbox_is_no_cold_start():
    events = [{"kind": "sandbox", "type": "ADDED", "name": "pool-new", "t": T0 - 1.0, "created": T0 - 1,
               "ready": False, "owner": None},  # created by the pool's refill before the claim
              {"kind": "pod", "type": "ADDED", "name": "pool-new", "t": T0 - 0.9, "created": T0 - 1, "ready": False,
               "owner": "pool-new", "scheduled": False, "running": False, "node": None},
              claim_event("c", T0 + 0.02, "ADDED"), claim_event("c", T0 + 0.05, bound="pool-new", ready=True),
              {"kind": "sandbox", "type": "MODIFIED", "name": "pool-new", "t": T0 + 0.04, "created": T0 - 1,
               "ready": True, "owner": "c"}]
    timeline = bench.claim_timeline("c", T0, T0 + 0.1, T0 + 0.2, events)
    assert timeline["sandbox_created_seen"] is None and timeline["pod_created_seen"] is None
    assert bench.claim_phases(timeline)["cold"] == {}


def test_without_watch_events_only_the_sdk_phases_are_known():
    split = bench.claim_phases(bench.claim_timeline("c", T0, T0 + 0.2, T0 + 0.3, []))
    assert split["phases"]["first_command"] == pytest.approx(0.1)
    assert [split["phases"][p] for p in ("create", "bind", "ready", "sdk")] == [None] * 4


# ----------------------------------------------------------------------------- capacity

@pytest.mark.parametrize("text,value", [("250m", 0.25), ("2", 2.0), ("512Mi", 512 * 2 ** 20), ("1Gi", 2 ** 30),
                                        ("1e3", 1000.0), ("1.5k", 1500.0), ("100M", 1e8), ("2E", 2e18), (3, 3.0)])
def test_parse_quantity(text, value):
    assert bench.parse_quantity(text) == pytest.approx(value)


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError, match="quantity"):
        bench.parse_quantity("12 cores")


def test_pod_requests_follow_the_scheduler():
    spec = {"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
                           {"resources": {"limits": {"cpu": "100m"}}}],  # requested at its limit
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "64Mi"}}},
                               {"restartPolicy": "Always", "resources": {"requests": {"memory": "64Mi"}}}]}
    requests = bench.pod_requests(spec, {"cpu": "50m", "memory": "20Mi"})
    assert requests["cpu"] == pytest.approx(1.05)  # init container peak 1 > 350m, + overhead
    assert requests["memory"] == pytest.approx((512 + 64 + 20) * 2 ** 20)


NODE = {"name": "node-1", "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "50Gi"},
        "labels": {"kubernetes.io/os": "linux"}, "unschedulable": False, "taints": []}


def test_capacity_is_free_allocatable_over_the_template_requests():
    others = [{"node": "node-1", "requests": {"cpu": 0.85, "memory": 1.5 * 2 ** 30}},
              {"node": "elsewhere", "requests": {"cpu": 1.0}}]
    per_sandbox = {"cpu": 0.25, "memory": 512 * 2 ** 20, "ephemeral-storage": 512 * 2 ** 20}
    result = bench.capacity([NODE], others, per_sandbox)
    # cpu: (2 - 0.85) / 0.25 = 4.6 -> 4; memory: 2.5Gi / 512Mi = 5
    assert result["max_sandboxes"] == 4 and result["limited_by"] == "cpu"
    assert result["nodes"][0]["free"]["cpu"] == pytest.approx(1.15) and result["nodes"][0]["free"]["pods"] == 109


def test_capacity_respects_taints_selectors_cordons_and_the_pod_count():
    tainted = {**NODE, "name": "cp", "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}
    kata = {**NODE, "name": "kata", "labels": {"katacontainers.io/kata-runtime": "true"}}
    cordoned = {**NODE, "name": "off", "unschedulable": True}
    tiny = {**NODE, "name": "tiny", "allocatable": {**NODE["allocatable"], "pods": "3"}}
    result = bench.capacity([tainted, kata, cordoned, tiny], [], {"cpu": 0.25},
                            selector={"katacontainers.io/kata-runtime": "true"})
    why = {node["name"]: node["ineligible"] for node in result["nodes"]}
    assert why["cp"].startswith("lacks label") and why["kata"] is None and why["off"] == "cordoned"
    assert result["max_sandboxes"] == 8  # only the kata node: 2 / 0.25
    tolerated = bench.capacity([tainted], [], {"cpu": 0.25},
                               tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}])
    assert tolerated["max_sandboxes"] == 8
    by_pods = bench.capacity([tiny], [], {"cpu": 0.25})
    assert (by_pods["max_sandboxes"], by_pods["limited_by"]) == (3, "pods")


# ----------------------------------------------------------------------------- controller metrics

def test_controller_histograms_are_parsed_and_differenced():
    before, after = bench.parse_metrics(metrics_text(2)), bench.parse_metrics(metrics_text(5))
    assert "go_goroutines" not in after  # only the controller's own families
    family = after["agent_sandbox_claim_controller_startup_latency_ms"]
    series = family["series"][json.dumps({"launch_type": "warm", "sandbox_template": "python"}, sort_keys=True)]
    assert family["type"] == "histogram" and series["buckets"][math.inf] == 5 and series["sum"] == 200
    delta = bench.metrics_delta(before, after)
    row = delta["agent_sandbox_claim_controller_startup_latency_ms"][0]
    assert (row["count"], row["mean"], row["p50"], row["buckets"]["+Inf"]) == (3, 40.0, 50.0, 3)
    assert delta["agent_sandbox_claim_creation_total"][0]["increase"] == 3
    assert bench.metrics_delta(after, after) == {}  # nothing moved, nothing reported


def test_parse_metrics_handles_escaped_labels_and_timestamps():
    text = ('# TYPE agent_sandbox_claim_creation_total counter\n'
            'agent_sandbox_claim_creation_total{namespace="a\\"b",warmpool_name="x,y"} 7 1700000000000\n')
    series = bench.parse_metrics(text)["agent_sandbox_claim_creation_total"]["series"]
    assert json.loads(next(iter(series))) == {"namespace": 'a\\"b', "warmpool_name": "x,y"}
    assert next(iter(series.values()))["value"] == 7


# ----------------------------------------------------------------------------- router peers

def wrk_run(rps, p50, p99, requests=1000, cpu=None):
    return {"connections": 1, "rps": rps, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99, "non_2xx": 0,
            "socket_errors": "", "requests": requests, "router_cpu_us_per_request": cpu,
            "runtime_cpu_us_per_request": 50.0}


def peer_runs():
    return {"direct": {1: [wrk_run(10000, 0.08, 0.2), wrk_run(9000, 0.09, 0.3)],
                       50: [wrk_run(12000, 4.0, 9.0), wrk_run(11000, 4.2, 9.5)]},
            "ours": {1: [wrk_run(5000, 0.18, 0.5, cpu=90), wrk_run(4600, 0.2, 0.6, cpu=95)],
                     50: [wrk_run(8400, 6.0, 12.0, cpu=80), wrk_run(8800, 5.8, 11.0, cpu=82)]},
            "python": {1: [wrk_run(4000, 0.25, 0.7, cpu=110), wrk_run(4200, 0.24, 0.8, cpu=100)],
                       50: [wrk_run(7000, 7.0, 14.0, cpu=90), wrk_run(8000, 6.5, 13.0, cpu=95)]},
            "go": {1: [wrk_run(2500, 0.35, 1.0, cpu=250), wrk_run(2300, 0.4, 1.2, cpu=260)],
                   50: [wrk_run(2800, 18.0, 40.0, cpu=300), wrk_run(2900, 17.0, 42.0, cpu=310)]}}


def test_router_peer_comparison_pairs_rounds_and_takes_medians():
    levels = router_vs_go.compare(peer_runs())
    one, fifty = levels
    assert one["ours"]["rps"] == 4800 and one["ours"]["p50_ms"] == pytest.approx(0.19)
    assert one["ours_over_direct"] == pytest.approx(0.5056, abs=1e-3)  # median of 0.5 and 0.5111
    assert fifty["ours_over_go"] == pytest.approx(statistics_median([8400 / 2800, 8800 / 2900]), abs=1e-3)
    assert one["ours_added_p50_ms"] == pytest.approx(0.105) and one["go_added_p50_ms"] == pytest.approx(0.29)
    # the Python router is measured the same way, and each of ours against the other
    assert one["python_added_p50_ms"] == pytest.approx(0.16) and one["python_over_go"] == pytest.approx(
        statistics_median([4000 / 2500, 4200 / 2300]), abs=1e-3)
    assert fifty["ours_over_python"] == pytest.approx(statistics_median([8400 / 7000, 8800 / 8000]), abs=1e-3)
    head = router_vs_go.headline(levels)
    assert set(head) == {"c1", "c50"} and head["c50"]["go_p99_ms"] == 41.0
    assert head["c50"]["python_cpu_us_per_request"] == 92.5 and head["c50"]["ours_over_python"] is not None
    met = router_vs_go.targets(levels)
    assert met == {"ours_over_direct_c50_ge_0.8": False, "ours_over_go_c50_ge_3": True,
                   "ours_added_p50_c1_le_0.1ms": False}


def statistics_median(values):
    ordered = sorted(values)
    return (ordered[0] + ordered[1]) / 2


def test_router_peer_report_validates_and_plots(tmp_path):
    levels = router_vs_go.compare(peer_runs())
    data = {"schema": router_vs_go.SCHEMA, "levels": levels, "headline": router_vs_go.headline(levels),
            "load_average_before": [1.0, 1.0, 1.0], "load_average_after": [2.0, 1.5, 1.0], "go_router": {},
            "execute": {}, "cpus": 2}
    assert router_vs_go.validate(data) == []
    png = router_vs_go.plot(data, tmp_path / "router.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data["levels"][0]["go"]["rps"] = None
    data["schema"] = "other"
    problems = router_vs_go.validate(data)
    assert "report.levels[0].go.rps should be a number" in problems and any("schema" in p for p in problems)


def test_paths_rotate_per_round_and_a_zero_denominator_gives_no_ratio():
    assert [router_vs_go.rotation(router_vs_go.PATHS, i) for i in range(3)] == [
        ["direct", "ours", "python", "go"], ["ours", "python", "go", "direct"], ["python", "go", "direct", "ours"]]
    assert router_vs_go.paired_ratio([{"rps": 5.0}], [{"rps": 0.0}]) is None


def test_both_routers_get_the_same_headers_and_ours_runs_in_dns_test_mode():
    env = router_vs_go.our_router_env(8080)
    assert env["ROUTER_RESOLVER"] == "dns" and env["ROUTER_ALLOW_LOOPBACK_POD_IP"] == "true"
    assert env["GOMAXPROCS"] == "1"  # as the Deployment sets it under its default 1-CPU limit
    headers = router_vs_go.routing_headers(9999)
    assert headers["X-Sandbox-Pod-IP"] == "127.0.0.1" and headers["X-Sandbox-Port"] == "9999"
    argv = go_router.router_command(Path("/c/sandbox-router"), 1, 2, 3)
    assert "--allow-loopback-pod-ip=true" in argv and "--http-bind-address=127.0.0.1:1" in argv
    assert "--access-log=false" in argv and all("0.0.0.0" not in a for a in argv)  # loopback only


def test_go_router_build_is_pinned_cached_and_niced(tmp_path):
    cache = tmp_path / "cache"
    assert go_router.binary_path(cache) == cache / "agent-sandbox-router" / "v0.5.6" / "bin" / "sandbox-router"
    env = go_router.go_env(cache, {"PATH": "/usr/bin", "GOFLAGS": "-mod=vendor"})
    assert env["GOFLAGS"] == "-mod=mod" and env["GOMODCACHE"] == str(cache / "go" / "mod")
    assert (env["CGO_ENABLED"], env["GOTOOLCHAIN"]) == ("0", "local")
    files = go_router.wrapper_files()
    assert "require sigs.k8s.io/agent-sandbox v0.5.6" in files["go.mod"]
    assert '_ "sigs.k8s.io/agent-sandbox/sandbox-router/cmd"' in files["tools.go"]
    tidy, build = go_router.build_commands("go", tmp_path / "out")
    assert tidy == ["go", "mod", "tidy"]
    assert build[:3] == ["nice", "-n", "10"] and build[-1] == go_router.MAIN_PACKAGE
    assert "internal/version.gitVersion=v0.5.6" in build[build.index("-ldflags") + 1]
    binary = go_router.binary_path(cache)
    wanted = go_router.stamp("go1.26.8")
    assert not go_router.is_current(binary, wanted)
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    binary.with_suffix(".stamp.json").write_text(json.dumps(wanted))
    assert go_router.is_current(binary, wanted)
    assert not go_router.is_current(binary, go_router.stamp("go1.27.0"))  # a new toolchain rebuilds


# ----------------------------------------------------------------------------- I/O against a loopback API double

class FakeKubeApi:
    """A loopback HTTP stand-in for the few API paths bench reads: lists and chunked watches of
    claims, sandboxes and pods, the controller's Service and its metrics through the service
    proxy, the pool, template, RuntimeClass, nodes and pods for the capacity."""

    def __init__(self, objects):
        import http.server
        import queue

        self.objects, self.watches, self.paths = objects, {}, []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                import urllib.parse

                path, _, query = urllib.parse.unquote(self.path).partition("?")
                api.paths.append(urllib.parse.unquote(self.path))
                if "watch=true" in query.lower():
                    stream = api.watches.setdefault(path, queue.Queue())
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while True:
                        line = stream.get()
                        if line is None:
                            break
                        data = (json.dumps(line) + "\n").encode()
                        try:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                            self.wfile.flush()
                        except OSError:
                            return
                    self.wfile.write(b"0\r\n\r\n")
                    return
                body = api.objects.get(path)
                if body is None:
                    self.send_response(404)
                    body = {"kind": "Status", "code": 404}
                else:
                    self.send_response(200)
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.server.server_port}"
        return client.ApiClient(configuration)

    def push(self, path, event_type, obj):
        import queue

        self.watches.setdefault(path, queue.Queue()).put({"type": event_type, "object": obj})

    def close(self):
        for stream in self.watches.values():
            stream.put(None)
        self.server.shutdown()


CLAIMS = "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/demo/sandboxclaims"
SANDBOXES = "/apis/agents.x-k8s.io/v1beta1/namespaces/demo/sandboxes"
PODS = "/api/v1/namespaces/demo/pods"


def empty_list(kind, version="1"):
    return {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": []}


@pytest.fixture
def fake_api():
    api = FakeKubeApi({
        CLAIMS: empty_list("SandboxClaimList"), SANDBOXES: empty_list("SandboxList"), PODS: empty_list("PodList"),
        "/api/v1/namespaces/agent-sandbox-system/services": {"kind": "ServiceList", "apiVersion": "v1", "items": [
            {"metadata": {"name": "agent-sandbox-webhook-service"}, "spec": {"ports": [{"name": "webhook", "port": 443}]}},
            {"metadata": {"name": "agent-sandbox-controller"}, "spec": {"ports": [{"name": "metrics", "port": 8080}]}}]},
        "/api/v1/namespaces/agent-sandbox-system/services/agent-sandbox-controller:metrics/proxy/metrics":
            metrics_text(4),
        "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/demo/sandboxwarmpools/pool":
            {"spec": {"replicas": 2, "sandboxTemplateRef": {"name": "python"}}},
        "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/demo/sandboxtemplates/python": {"spec": {"podTemplate": {
            "spec": {"runtimeClassName": "gvisor", "containers": [
                {"name": "runtime", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}]}}}},
        "/apis/node.k8s.io/v1/runtimeclasses/gvisor": {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                                       "metadata": {"name": "gvisor"}, "handler": "runsc",
                                                       "overhead": {"podFixed": {"cpu": "50m"}}},
        "/api/v1/nodes": {"kind": "NodeList", "apiVersion": "v1", "items": [
            {"metadata": {"name": "node-1", "labels": {}}, "spec": {},
             "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}]},
        "/api/v1/pods": {"kind": "PodList", "apiVersion": "v1", "items": [
            {"metadata": {"name": "router", "namespace": "agent-sandbox-system"},
             "spec": {"nodeName": "node-1", "containers": [{"name": "r", "resources": {"requests": {"cpu": "500m"}}}]}},
            {"metadata": {"name": "pool-x", "namespace": "demo"},  # the bench's own: not counted
             "spec": {"nodeName": "node-1", "containers": [{"name": "r", "resources": {"requests": {"cpu": "1"}}}]}}]},
    })
    yield api
    api.close()


def test_object_watch_records_events_with_receive_times(fake_api):
    watcher = bench.ObjectWatch(fake_api.client(), "demo").start()
    try:
        before = time.time()
        fake_api.push(CLAIMS, "ADDED", {"metadata": {"name": "c1", "resourceVersion": "2"}})
        fake_api.push(CLAIMS, "MODIFIED", CLAIM_OBJECT)
        fake_api.push(PODS, "BOOKMARK", {"metadata": {"resourceVersion": "9"}})
        fake_api.push(PODS, "ADDED", {"metadata": {"name": "pool-abc", "resourceVersion": "10"}, "spec": {},
                                      "status": {"phase": "Pending"}})
        deadline = time.monotonic() + 10
        while len(watcher.snapshot()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.settle(quiet=0.2)
    finally:
        started = time.monotonic()
        watcher.stop()
        assert time.monotonic() - started < 3  # closing the responses ends the watches at once
    events = watcher.snapshot()
    assert sorted((e["kind"], e["type"], e["name"]) for e in events) == [
        ("claim", "ADDED", "c1"), ("claim", "MODIFIED", "sandbox-claim-1"), ("pod", "ADDED", "pool-abc")]
    assert all(e["t"] >= before for e in events) and watcher.errors == []
    # each watch started from its list's resourceVersion
    assert any(p.startswith(CLAIMS) and "resourceVersion=1" in p and "watch=true" in p.lower() for p in fake_api.paths)


def test_controller_metrics_come_through_the_service_proxy(fake_api):
    scraper = bench.ControllerScraper(fake_api.client())
    families = scraper.scrape()
    assert scraper.error is None and scraper.source.startswith("service proxy agent-sandbox-system/agent-sandbox-controller:metrics")
    assert "agent_sandbox_claim_controller_startup_latency_ms" in families
    del fake_api.objects["/api/v1/namespaces/agent-sandbox-system/services/agent-sandbox-controller:metrics/proxy/metrics"]
    assert scraper.scrape() is None and "404" in scraper.error  # reported, never raised


def test_capacity_is_read_from_the_cluster(fake_api):
    from kubernetes import client

    api_client = fake_api.client()
    cluster = SimpleNamespace(client=api_client, core=client.CoreV1Api(api_client),
                              custom=client.CustomObjectsApi(api_client),
                              warm_pool=lambda ns, name: client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                                  "extensions.agents.x-k8s.io", "v1beta1", ns, "sandboxwarmpools", name))
    result = bench.measure_capacity(cluster, TARGET)
    assert result["error"] is None, result["error"]
    # (2 - 0.5 router) / (0.25 + 0.05 gVisor overhead) = 5; the pool pod in demo is the bench's own
    assert (result["max_sandboxes"], result["limited_by"], result["template"]) == (5, "cpu", "python")
    assert result["per_sandbox"]["cpu"] == pytest.approx(0.3)


def test_route_waits_from_the_router_metrics_delta() -> None:
    def exposition(found: int, found_sum: float, missing: int, connects: int) -> str:
        return (
            "# TYPE sandbox_router_route_wait_seconds histogram\n"
            f'sandbox_router_route_wait_seconds_bucket{{le="0.1",outcome="found"}} {found}\n'
            f'sandbox_router_route_wait_seconds_bucket{{le="+Inf",outcome="found"}} {found}\n'
            f'sandbox_router_route_wait_seconds_count{{outcome="found"}} {found}\n'
            f'sandbox_router_route_wait_seconds_sum{{outcome="found"}} {found_sum}\n'
            f'sandbox_router_route_wait_seconds_bucket{{le="+Inf",outcome="not_found"}} {missing}\n'
            f'sandbox_router_route_wait_seconds_count{{outcome="not_found"}} {missing}\n'
            f'sandbox_router_route_wait_seconds_sum{{outcome="not_found"}} {missing * 10.0}\n'
            "# TYPE sandbox_router_upstream_connections_opened_total counter\n"
            f"sandbox_router_upstream_connections_opened_total {connects}\n"
            "# TYPE sandbox_router_websocket_tunnels gauge\nsandbox_router_websocket_tunnels 0\n")

    before = bench.parse_metrics(exposition(1, 0.05, 0, 3), prefixes=bench.ROUTER_METRIC_PREFIXES)
    after = bench.parse_metrics(exposition(4, 0.35, 1, 9), prefixes=bench.ROUTER_METRIC_PREFIXES)
    assert "sandbox_router_websocket_tunnels" not in after
    waits = bench.route_waits(bench.metrics_delta(before, after))
    assert waits == {"found": 3, "found_mean": 0.1, "not_found": 1, "connects": 6}
    assert bench.route_waits(None) is None


def test_steal_is_the_share_of_cpu_time_other_guests_got(tmp_path):
    before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    after = [200, 0, 100, 1500, 0, 0, 0, 200, 0, 0]  # 1000 ticks: 150 stolen
    assert bench.steal_percent(before, after) == 15.0
    assert bench.steal_percent(None, after) is None and bench.steal_percent([1, 2], [3, 4]) is None
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 1 1 1 1 1 1 1 1 1\n")
    assert bench.cpu_times(str(stat)) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert bench.cpu_times(str(tmp_path / "absent")) is None


class TimedSandboxSdk:
    """One warm claim whose sandbox answers its command through a requests session, as the
    official SDK's connector does, with the router's and runtime's Server-Timing entries (or
    none)."""

    def __init__(self, server_timing):
        self.server_timing = server_timing

    def create_sandbox(self, warmpool, namespace, sandbox_ready_timeout):
        import requests

        session = requests.Session()

        def run(command):
            time.sleep(0.02)  # longer than the router said it took: the rest is the path
            response = requests.Response()
            if self.server_timing:
                response.headers["Server-Timing"] = self.server_timing
            for hook in session.hooks["response"]:
                hook(response)
            return SimpleNamespace(exit_code=0, stdout="ready\n", stderr="")

        connector = SimpleNamespace(session=session, _no_retry_session=requests.Session())
        return SimpleNamespace(claim_name="claim-1", sandbox_id="pool-1", connector=connector,
                               commands=SimpleNamespace(run=run))

    def delete_sandbox(self, claim_name, namespace):
        pass


def test_the_first_command_is_split_by_the_server_timing_of_its_response():
    sdk = TimedSandboxSdk("runtime;dur=5.000, router;dur=7.000, connect;dur=1.000;desc=new, sandbox;dur=5.500")
    sample = bench.claim_sample(sdk, TARGET)
    split = sample["first_command_split"]
    assert sample["ok"] and split["runtime"] == 0.005 and split["connect"] == 0.001 and split["pooled"] is False
    assert split["router"] == pytest.approx(0.0005) and split["hop"] == pytest.approx(0.0005)
    assert split["path"] == pytest.approx(sample["first_exec_seconds"] - 0.007, abs=1e-3)
    statistics = bench.phase_statistics([sample])
    assert statistics["first_command_split"]["runtime"]["p50"] == 0.005
    assert report.Sample.model_fields["first_command_split"].default is None


def test_a_router_without_server_timing_leaves_the_split_out():
    sample = bench.claim_sample(TimedSandboxSdk(None), TARGET)
    assert sample["ok"] and sample["first_command_split"] is None
    assert bench.phase_statistics([sample])["first_command_split"] == {}
