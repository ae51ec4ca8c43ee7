"""KIND cluster config for gVisor."""

import yaml

from sandbox_iac.kind_config import kind_cluster_config


def test_registers_runsc_and_mounts_binaries() -> None:
    config = yaml.safe_load(kind_cluster_config("demo", "/opt/runsc", "/opt/shim"))
    assert config["name"] == "demo" and config["kind"] == "Cluster"
    assert 'runtimes.runsc]' in config["containerdConfigPatches"][0]
    assert 'runtime_type = "io.containerd.runsc.v1"' in config["containerdConfigPatches"][0]
    mounts = config["nodes"][0]["extraMounts"]
    assert {(m["hostPath"], m["containerPath"]) for m in mounts} == {
        ("/opt/runsc", "/usr/local/bin/runsc"), ("/opt/shim", "/usr/local/bin/containerd-shim-runsc-v1")}
