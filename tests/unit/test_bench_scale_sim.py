"""The simulated-scale bench's pure parts: KWOK's configuration and stages, the fake nodes and
the bench's objects, the open-loop schedule and the numbers (quantiles, rates, CPU from /proc)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import yaml

from tests.pulumi_harness import REPO_ROOT

_spec = importlib.util.spec_from_file_location("scale_sim", REPO_ROOT / "bench" / "scale_sim.py")
scale_sim = importlib.util.module_from_spec(_spec)
sys.modules["scale_sim"] = scale_sim
_spec.loader.exec_module(scale_sim)


def test_kwok_config_manages_only_annotated_nodes_with_our_stages() -> None:
    docs = list(yaml.safe_load_all(scale_sim.kwok_config()))
    config, *stages = docs
    assert config["kind"] == "KwokConfiguration"
    assert config["options"]["manageAllNodes"] is False
    assert config["options"]["manageNodesWithAnnotationSelector"] == "kwok.x-k8s.io/node=fake"
    by_name = {s["metadata"]["name"]: s for s in stages}
    assert set(by_name) == {"sim-node-ready", "sim-pod-ready", "sim-pod-delete"}
    assert all(s["kind"] == "Stage" and s["apiVersion"] == "kwok.x-k8s.io/v1alpha1" for s in stages)
    ready = by_name["sim-pod-ready"]["spec"]
    # a pod is made Ready once, and never while it is being deleted
    keys = {e["key"]: e["operator"] for e in ready["selector"]["matchExpressions"]}
    assert keys == {".metadata.deletionTimestamp": "DoesNotExist", ".status.podIP": "DoesNotExist"}
    assert "type: Ready" in ready["next"]["statusTemplate"] and "phase: Running" in ready["next"]["statusTemplate"]
    assert by_name["sim-pod-delete"]["spec"]["next"] == {"finalizers": {"empty": True}, "delete": True}


def test_fake_nodes_only_take_pods_that_ask_for_them() -> None:
    node = scale_sim.fake_node("kwok-sim-0")
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["spec"]["taints"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
    pod = scale_sim.sim_template("img:1")["spec"]["podTemplate"]["spec"]
    assert pod["nodeSelector"] == {"type": "kwok"} and node["metadata"]["labels"]["type"] == "kwok"
    assert pod["tolerations"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule", "operator": "Equal"}]


@pytest.mark.parametrize("pool,claims,nodes", [(10, 10, 1), (100, 100, 1), (1000, 500, 7), (1000, 1000, 9)])
def test_enough_fake_nodes_for_the_pool_and_its_refills(pool: int, claims: int, nodes: int) -> None:
    assert scale_sim.nodes_for(pool, claims=claims) == nodes


def test_claim_refers_to_its_pool() -> None:
    claim = scale_sim.sim_claim("c-1", "sim-pool-10")
    assert claim["spec"] == {"warmPoolRef": {"name": "sim-pool-10"}}
    assert claim["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"


def test_open_loop_schedule() -> None:
    assert scale_sim.schedule(4, 5) == [0, 0.25, 0.5, 0.75, 1.0]
    assert scale_sim.schedule(1, 0) == []
    with pytest.raises(ValueError):
        scale_sim.schedule(0, 3)


def test_quantiles_and_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert scale_sim.quantile(values, 0.5) == pytest.approx(50.5)
    assert scale_sim.quantile(values, 0.99) == pytest.approx(99.01)
    assert scale_sim.quantile([3.0], 0.99) == 3.0
    assert scale_sim.quantile([], 0.5) is None
    summary = scale_sim.summarize([0.3, 0.1, 0.2])
    assert summary["n"] == 3 and summary["p50"] == pytest.approx(0.2) and summary["max"] == 0.3


def test_sustained_rate_spans_first_creation_to_last_ready() -> None:
    assert scale_sim.sustained_rate([0.0, 1.0], [0.5, 2.0]) == pytest.approx(1.0)
    assert scale_sim.sustained_rate([0.0], []) is None


def test_cpu_seconds_from_a_stat_line_with_spaces_in_the_command() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30
    line = "1234 (kube apiserver) " + " ".join(fields)
    assert scale_sim.cpu_seconds(line, 100) == pytest.approx(4.0)


def test_usage_delta_in_cores_and_missing_processes() -> None:
    before = {"controller": {"cpu_s": 10.0, "rss_mib": 50}, "apiserver": {"cpu_s": 5.0, "rss_mib": 300}, "etcd": None}
    after = {"controller": {"cpu_s": 14.0, "rss_mib": 60}, "apiserver": {"cpu_s": 25.0, "rss_mib": 320}, "etcd": None}
    delta = scale_sim.usage_delta(before, after, 10.0)
    assert delta["controller"] == {"cores": 0.4, "rss_mib": 60}
    assert delta["apiserver"] == {"cores": 2.0, "rss_mib": 320}
    assert delta["etcd"] is None


def test_claim_watch_keeps_the_first_ready_time() -> None:
    watch = scale_sim.ClaimWatch(cluster=None)
    ready = {"object": {"metadata": {"name": "c"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}}
    pending = {"object": {"metadata": {"name": "d"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}}
    watch._event(pending, 1.0)
    watch._event(ready, 2.0)
    watch._event(ready, 3.0)
    assert watch.ready(["c", "d"]) == {"c": 2.0}


def test_reruns_replace_their_own_levels_and_keep_the_others() -> None:
    old = [{"pool": 10, "rate_per_s": 5.0, "x": 1}, {"pool": 1000, "rate_per_s": 25.0, "x": 2}]
    new = [{"pool": 1000, "rate_per_s": 45.0, "x": 3}, {"pool": 10, "rate_per_s": 5.0, "x": 4}]
    assert scale_sim.merged(old, new, ("pool", "rate_per_s")) == [
        {"pool": 10, "rate_per_s": 5.0, "x": 4}, {"pool": 1000, "rate_per_s": 25.0, "x": 2},
        {"pool": 1000, "rate_per_s": 45.0, "x": 3}]
    assert scale_sim.merged([{"pool": 100, "up": 1}], [{"pool": 1000, "up": 2}], ("pool",)) == [
        {"pool": 100, "up": 1}, {"pool": 1000, "up": 2}]
