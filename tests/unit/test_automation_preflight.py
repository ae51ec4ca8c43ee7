"""Every bad state before a KIND cluster is created ends in one line that names the fix."""

from __future__ import annotations

import subprocess

import pytest

from automation import preflight
from automation.preflight import EngineState, PreflightError

GIB = preflight.GIB


def test_no_docker_client() -> None:
    with pytest.raises(PreflightError, match=r"no Docker engine.*make docker-engine"):
        preflight.check_engine(EngineState(None, False), needs_capfilter=False)


def test_engine_not_running() -> None:
    state = EngineState("/usr/bin/docker", False, error="Cannot connect to the Docker daemon")
    with pytest.raises(PreflightError, match=r"not running \(Cannot connect.*\)\. Fix: `make docker-engine`"):
        preflight.check_engine(state, needs_capfilter=False)


def test_engine_without_capfilter_on_a_host_that_needs_it() -> None:
    state = EngineState("/usr/bin/docker", True, "20.10", default_runtime="runc")
    with pytest.raises(PreflightError, match="unable to apply caps"):
        preflight.check_engine(state, needs_capfilter=True)
    preflight.check_engine(state, needs_capfilter=False)
    preflight.check_engine(EngineState("/usr/bin/docker", True, "20.10", default_runtime="agent-sandbox-runc"),
                           needs_capfilter=True)


def test_engine_state_parses_docker_info() -> None:
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, '{"ServerVersion": "20.10.24", "DockerRootDir": "/d", '
                                                       '"DefaultRuntime": "agent-sandbox-runc"}', "")
    state = preflight.engine_state("/usr/bin/docker", run=run)
    assert state == EngineState("/usr/bin/docker", True, "20.10.24", "/d", "agent-sandbox-runc")


def test_engine_state_when_daemon_is_down() -> None:
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock\n")
    state = preflight.engine_state("/usr/bin/docker", run=run)
    assert not state.answers and "Cannot connect" in state.error


def test_memory() -> None:
    preflight.check_memory(8 * GIB, nodes=2)
    with pytest.raises(PreflightError, match=r"1-node KIND cluster: 2.0 GiB available, 3.0 GiB needed"):
        preflight.check_memory(2 * GIB, nodes=1)
    with pytest.raises(PreflightError, match=r"2-node .* 4.0 GiB needed"):
        preflight.check_memory(int(3.5 * GIB), nodes=2)


def test_meminfo_parse() -> None:
    assert preflight.mem_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n") == 2048 * 1024
    with pytest.raises(PreflightError):
        preflight.mem_available("MemTotal: 1 kB\n")


def test_disk() -> None:
    preflight.check_disk(10 * GIB, "/var/lib/docker", 4 * GIB, "the KIND nodes")
    with pytest.raises(PreflightError, match=r"not enough disk for the KIND nodes: 1.0 GiB free under /var/lib/docker"):
        preflight.check_disk(1 * GIB, "/var/lib/docker", 4 * GIB, "the KIND nodes")


def test_cluster_name_not_ours_without_runsc() -> None:
    with pytest.raises(PreflightError, match=r"'demo' already exists, was not created by `make up`.*kind delete cluster --name demo"):
        preflight.check_cluster_name("demo", ["demo"], created_by_us=False, has_runsc=False)


def test_cluster_name_reuse() -> None:
    assert preflight.check_cluster_name("demo", ["demo"], created_by_us=True, has_runsc=False) is True
    assert preflight.check_cluster_name("demo", ["demo"], created_by_us=False, has_runsc=True) is True
    assert preflight.check_cluster_name("demo", ["other"], created_by_us=False, has_runsc=False) is False


def test_node_name_conflict() -> None:
    names = preflight.node_container_names("demo", workers=2)
    assert names == ["demo-control-plane", "demo-worker", "demo-worker2"]
    preflight.check_node_names(names, ["unrelated"])
    with pytest.raises(PreflightError, match=r"demo-worker are taken.*docker rm -f demo-worker"):
        preflight.check_node_names(names, ["demo-worker", "x"])


def test_capability_detection() -> None:
    full = "CapBnd:\t000001ffffffffff\n"
    assert not preflight.root_lacks_capabilities(full, last_cap=40)
    assert preflight.root_lacks_capabilities("CapBnd:\t000001fffeffffff\n", last_cap=40)


def test_cgroup_version_detection(tmp_path) -> None:
    assert preflight.host_cgroup_v1(tmp_path) is True
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert preflight.host_cgroup_v1(tmp_path) is False
