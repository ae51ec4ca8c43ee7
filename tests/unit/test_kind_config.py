"""KIND cluster config for gVisor."""

import yaml

from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config


def test_registers_runsc_and_mounts_binaries() -> None:
    config = yaml.safe_load(kind_cluster_config("demo", "/opt/runsc", "/opt/shim"))
    assert config["name"] == "demo" and config["kind"] == "Cluster"
    assert 'runtimes.runsc]' in config["containerdConfigPatches"][0]
    assert 'runtime_type = "io.containerd.runsc.v1"' in config["containerdConfigPatches"][0]
    mounts = config["nodes"][0]["extraMounts"]
    assert {(m["hostPath"], m["containerPath"]) for m in mounts} == {
        ("/opt/runsc", "/usr/local/bin/runsc"), ("/opt/shim", "/usr/local/bin/containerd-shim-runsc-v1")}


def test_workers_get_the_same_mounts_and_subnets_are_explicit() -> None:
    config = yaml.safe_load(kind_cluster_config("demo", "/opt/runsc", "/opt/shim", workers=1))
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    assert config["nodes"][0]["extraMounts"] == config["nodes"][1]["extraMounts"]
    assert config["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/16"}


def test_restrict_oom_score_patch_only_when_asked() -> None:
    plain = yaml.safe_load(kind_cluster_config("demo"))
    assert not any("restrict_oom_score_adj" in p for p in plain["containerdConfigPatches"])
    restricted = yaml.safe_load(kind_cluster_config("demo", restrict_oom_score_adj=True))
    assert any("restrict_oom_score_adj = true" in p for p in restricted["containerdConfigPatches"])


def test_cgroupfs_driver_on_cgroup_v1_hosts() -> None:
    """runsc on cgroup v1 understands only cgroupfs paths: kubelet and runc switch to that driver."""
    config = yaml.safe_load(kind_cluster_config("demo", cgroupfs_driver=True))
    assert any("SystemdCgroup = false" in p for p in config["containerdConfigPatches"])
    assert yaml.safe_load(config["kubeadmConfigPatches"][0]) == {
        "kind": "KubeletConfiguration", "apiVersion": "kubelet.config.k8s.io/v1beta1", "cgroupDriver": "cgroupfs"}
    assert "kubeadmConfigPatches" not in yaml.safe_load(kind_cluster_config("demo"))
