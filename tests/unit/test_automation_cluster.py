"""Cluster creation for kind/minikube stacks with a fake command runner: created only when
missing, with the generated gVisor KIND config, remembered, and deleted only if we created it."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from automation import cluster as clusters
from automation.paths import ProjectPaths
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config


class FakeRunner:
    def __init__(self, existing_kind=(), minikube_profiles=()):
        self.calls: list[list[str]] = []
        self.existing_kind, self.minikube_profiles = list(existing_kind), list(minikube_profiles)
        self.kind_config_seen = None
        self.fail_create = False
        self.kind_network_containers = "2"

    def __call__(self, command, capture_output=True, text=True):
        name = command[0].rsplit("/", 1)[-1]
        args = [name, *command[1:]]
        self.calls.append(args)
        out = ""
        if args[:3] == ["kind", "get", "clusters"]:
            out = "\n".join(self.existing_kind)
        elif args[:3] == ["minikube", "profile", "list"]:
            out = json.dumps({"invalid": [], "valid": [{"Name": p} for p in self.minikube_profiles]})
        elif args[:3] == ["kind", "create", "cluster"] and "--config" in args:
            self.kind_config_seen = open(args[args.index("--config") + 1]).read()
            if self.fail_create:
                return subprocess.CompletedProcess(command, 1, "", "ERROR: failed to create cluster: boom")
        elif args[:3] == ["docker", "network", "inspect"]:
            out = self.kind_network_containers
        return subprocess.CompletedProcess(command, 0, out, "")


@pytest.fixture
def paths(tmp_path):
    return ProjectPaths(root=tmp_path, out_dir=tmp_path / "out")


def kind_config(**extra):
    return parse_stack_config({"clusterFlavour": "kind", "clusterName": "demo", **extra}, "gvisor")


def test_existing_kind_cluster_is_reused(paths):
    runner = FakeRunner(existing_kind=["other", "demo"])
    assert clusters.ensure_cluster(kind_config(), paths, run=runner, log=lambda m: None) is False
    assert runner.calls == [["kind", "get", "clusters"]]
    assert clusters.read_record(paths, "gvisor") is None


def test_missing_kind_cluster_is_created_with_the_gvisor_config_and_remembered(paths):
    runner = FakeRunner(existing_kind=["other"])
    assert clusters.ensure_cluster(kind_config(), paths, run=runner, log=lambda m: None) is True
    create = runner.calls[-1]
    assert create[:5] == ["kind", "create", "cluster", "--name", "demo"]
    generated = yaml.safe_load(runner.kind_config_seen)
    assert generated["name"] == "demo"
    assert "io.containerd.runsc.v1" in generated["containerdConfigPatches"][0]
    assert {m["containerPath"] for m in generated["nodes"][0]["extraMounts"]} == {
        "/usr/local/bin/runsc", "/usr/local/bin/containerd-shim-runsc-v1"}
    record = clusters.read_record(paths, "gvisor")
    assert (record.flavour, record.name) == ("kind", "demo")


def test_kind_cluster_uses_the_stack_kubeconfig(paths):
    runner = FakeRunner()
    clusters.ensure_cluster(kind_config(kubeconfig="/tmp/kc"), paths, run=runner, log=lambda m: None)
    assert runner.calls[-1][-2:] == ["--kubeconfig", "/tmp/kc"]


def test_missing_minikube_profile_is_started_with_kvm2_and_containerd(paths):
    config = parse_stack_config({"clusterFlavour": "minikube", "clusterName": "kata-demo", "runtime": "kata-qemu"}, "kata")
    runner = FakeRunner(minikube_profiles=["something-else"])
    assert clusters.ensure_cluster(config, paths, run=runner, log=lambda m: None) is True
    # --cni=calico: minikube's default CNI does not enforce NetworkPolicy
    assert runner.calls[-1] == ["minikube", "start", "--driver=kvm2", "--container-runtime=containerd",
                                "--cni=calico", "--cpus=4", "--memory=8192", "--profile=kata-demo"]


def test_existing_flavour_never_runs_a_cluster_command(paths):
    config = parse_stack_config({"clusterFlavour": "existing", "imageRegistry": "r.example/x"}, "x")
    runner = FakeRunner()
    assert clusters.ensure_cluster(config, paths, run=runner, log=lambda m: None) is False
    assert runner.calls == []


def test_down_deletes_only_clusters_the_driver_created(paths):
    runner = FakeRunner()
    assert clusters.delete_created_cluster(paths, "gvisor", run=runner, log=lambda m: None) is False
    assert runner.calls == []
    clusters.ensure_cluster(kind_config(), paths, run=runner, log=lambda m: None)
    assert clusters.delete_created_cluster(paths, "gvisor", run=runner, log=lambda m: None) is True
    assert ["kind", "delete", "cluster", "--name", "demo"] in runner.calls
    assert clusters.read_record(paths, "gvisor") is None


def test_a_failing_cluster_command_reports_its_output(paths):
    def failing(command, capture_output=True, text=True):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: failed to create cluster: docker not running")

    with pytest.raises(clusters.ClusterError, match="docker not running"):
        clusters.ensure_cluster(kind_config(), paths, run=failing, log=lambda m: None)


def test_down_cluster_removes_the_kind_network_only_when_empty(paths):
    runner = FakeRunner()
    clusters.ensure_cluster(kind_config(), paths, run=runner, log=lambda m: None)
    runner.kind_network_containers = "1"  # another cluster still uses it
    clusters.delete_created_cluster(paths, "gvisor", run=runner, log=lambda m: None)
    assert ["docker", "network", "rm", "kind"] not in runner.calls
    clusters.ensure_cluster(kind_config(), paths, run=runner, log=lambda m: None)
    runner.kind_network_containers = "0"
    clusters.delete_created_cluster(paths, "gvisor", run=runner, log=lambda m: None)
    assert runner.calls[-1] == ["docker", "network", "rm", "kind"]


def test_create_kind_cluster_with_image_workers_and_resolved_runsc(paths, tmp_path):
    runner = FakeRunner()
    runsc, shim = tmp_path / "runsc", tmp_path / "shim"
    runsc.write_text(""), shim.write_text("")
    assert clusters.create_kind_cluster(kind_config(), paths, image="node:1", runsc=str(runsc), shim=str(shim),
                                        workers=1, restrict_oom_score_adj=True, run=runner, log=lambda m: None)
    create = next(c for c in runner.calls if c[:3] == ["kind", "create", "cluster"])
    assert create[create.index("--image") + 1] == "node:1"
    seen = yaml.safe_load(runner.kind_config_seen)
    assert [n["role"] for n in seen["nodes"]] == ["control-plane", "worker"]
    assert seen["nodes"][1]["extraMounts"][0]["hostPath"] == str(runsc.resolve())
    assert any("restrict_oom_score_adj" in p for p in seen["containerdConfigPatches"])
    assert clusters.read_record(paths, "gvisor").name == "demo"


def test_a_failed_kind_create_removes_its_half_made_nodes(paths):
    runner = FakeRunner()
    runner.fail_create = True
    with pytest.raises(clusters.ClusterError, match="boom"):
        clusters.create_kind_cluster(kind_config(), paths, image="node:1", runsc=None, shim=None, run=runner,
                                     log=lambda m: None)
    assert runner.calls[-1][:4] == ["kind", "delete", "cluster", "--name"]
    assert clusters.read_record(paths, "gvisor") is None


def test_lib_modules_is_created_remembered_and_removed_when_empty(paths, tmp_path):
    target = tmp_path / "lib" / "modules"
    assert clusters.ensure_lib_modules(paths, "gvisor", lib_modules=target) is True
    assert target.is_dir()
    assert clusters.ensure_lib_modules(paths, "gvisor", lib_modules=target) is False  # exists now: not ours twice
    assert clusters.remove_created_lib_modules(paths, "gvisor", log=lambda m: None) is True
    assert not target.exists()
    assert clusters.remove_created_lib_modules(paths, "gvisor", log=lambda m: None) is False


def test_lib_modules_that_gained_content_is_kept(paths, tmp_path):
    target = tmp_path / "modules"
    clusters.ensure_lib_modules(paths, "gvisor", lib_modules=target)
    (target / "6.1.0").mkdir()
    assert clusters.remove_created_lib_modules(paths, "gvisor", log=lambda m: None) is False
    assert target.is_dir()
