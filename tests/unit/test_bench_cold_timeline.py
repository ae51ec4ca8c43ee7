"""bench/cold_timeline.py: the node's nanosecond stamps and the runtime's log lines turned into one
start's steps, relative to when its pod was seen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from bench import cold_timeline


def test_nanosecond_stamps_keep_their_fraction() -> None:
    assert cold_timeline.parse_time("2026-12-02T09:58:26Z") == 1796205506.0
    assert cold_timeline.parse_time("2026-12-02T09:58:26.210923400Z") == pytest.approx(1796205506.2109234, abs=1e-6)


def test_a_log_marker_is_timed_by_its_first_line() -> None:
    lines = ["2026-12-02T09:58:26.100000000Z INFO:     Started server process [1]",
             "2026-12-02T09:58:26.300000000Z INFO:     sandbox_runtime: serving 0.29 s after the server was started",
             "2026-12-02T09:58:27.000000000Z INFO:     sandbox_runtime: serving again"]
    assert cold_timeline.log_time(lines, "sandbox_runtime: serving") == pytest.approx(1796205506.3)
    assert cold_timeline.log_time(lines, "never logged") is None


def test_steps_are_relative_to_the_pod_and_in_order() -> None:
    points = {"ready_seen": 11.4, "sandbox_created": 10.326, "serving": 11.058, "running_seen": None}
    steps = cold_timeline.relative(points, 10.0)
    assert list(steps) == list(cold_timeline.STEPS)
    assert steps["sandbox_created"] == 0.326 and steps["ready_seen"] == 1.4
    assert steps["running_seen"] is None and steps["container_started"] is None


def test_a_gate_is_added_to_the_kubelet_config_keeping_the_others() -> None:
    config = "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\nfeatureGates:\n  Other: false\n"
    gated = yaml.safe_load(cold_timeline.with_gate(config, "EventedPLEG"))
    assert gated["featureGates"] == {"Other": False, "EventedPLEG": True}
    assert gated["cgroupDriver"] == "cgroupfs"
    assert yaml.safe_load(cold_timeline.with_gate("cgroupDriver: systemd\n", "X"))["featureGates"] == {"X": True}


def test_a_gate_is_on_only_when_its_metric_says_1() -> None:
    metrics = ('# TYPE kubernetes_feature_enabled gauge\n'
               'kubernetes_feature_enabled{name="EventedPLEG",stage="ALPHA"} 0\n'
               'kubernetes_feature_enabled{name="EventedPLEGX",stage="ALPHA"} 1\n')
    assert not cold_timeline.gate_on(metrics, "EventedPLEG")
    assert cold_timeline.gate_on(metrics.replace('"ALPHA"} 0', '"ALPHA"} 1', 1), "EventedPLEG")
    assert not cold_timeline.gate_on("", "EventedPLEG")


def test_a_summary_takes_each_steps_median_over_the_starts_that_have_it() -> None:
    samples = [{"after_pod_seen": dict.fromkeys(cold_timeline.STEPS, value)} for value in (1.0, 3.0, 2.0)]
    samples[0]["after_pod_seen"]["serving"] = None
    result = cold_timeline.summary(samples)
    assert result["n"] == 3 and result["median"]["ready_seen"] == 2.0 and result["median"]["serving"] == 2.5


def _pod(uid: str, running: bool = False, ready: bool = False, deleting: bool = False) -> SimpleNamespace:
    state = SimpleNamespace(running=SimpleNamespace() if running else None)
    return SimpleNamespace(
        metadata=SimpleNamespace(uid=uid, name="pool-abc", deletion_timestamp="now" if deleting else None),
        status=SimpleNamespace(container_statuses=[SimpleNamespace(state=state)],
                               conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")]))


def test_a_replacement_under_the_deleted_pods_name_is_told_apart_by_its_uid() -> None:
    seen: dict[str, dict[str, float]] = {}
    assert not cold_timeline.mark(_pod("old", running=True, ready=True), {"old"}, seen, 1.0)
    assert not cold_timeline.mark(_pod("new", deleting=True), {"old"}, seen, 1.5)
    assert seen == {}
    assert not cold_timeline.mark(_pod("new"), {"old"}, seen, 2.0)
    assert not cold_timeline.mark(_pod("new", running=True), {"old"}, seen, 3.0)
    assert cold_timeline.mark(_pod("new", running=True, ready=True), {"old"}, seen, 3.5)
    assert seen == {"pool-abc": {"added": 2.0, "running_seen": 3.0, "ready_seen": 3.5}}
