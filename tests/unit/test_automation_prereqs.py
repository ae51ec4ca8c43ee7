"""Prerequisite checks of ``up``: which tools each stack needs and the exact messages (shutil.which mocked)."""

from __future__ import annotations

import pytest

from automation import prereqs
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config

PREBUILT = {"imageBuild": "prebuilt", "sandboxImage": "a/r:1", "routerImage": "a/o:1"}


def config(**raw):
    return parse_stack_config(raw, "t")


@pytest.fixture
def nothing_installed(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)


def names(messages):
    return [m.split(" ")[1] for m in messages]


def test_kind_gvisor_needs_everything_for_kind_and_runsc(nothing_installed):
    missing = prereqs.missing_prerequisites(config(clusterFlavour="kind", runtime="gvisor"),
                                            file_exists=lambda path: False)
    assert names(missing) == ["pulumi", "kubectl", "docker", "kind", "/usr/local/bin/runsc",
                              "/usr/local/bin/containerd-shim-runsc-v1"]
    assert missing[0] == (
        "missing pulumi (command not found): needed to run the Pulumi engine for every command. "
        "Get it: `make toolchain-pulumi` (offline build into $CACHE_DIR, then `source e2e/toolchain/env.sh`) "
        "or https://www.pulumi.com/docs/install/")
    assert "missing /usr/local/bin/runsc (file not found)" in missing[4]
    assert "gvisor.dev" in missing[4]


def test_kata_on_minikube_needs_minikube_and_kvm(nothing_installed):
    missing = prereqs.missing_prerequisites(config(clusterFlavour="minikube", runtime="kata-qemu", **PREBUILT),
                                            device_usable=lambda path: False)
    assert names(missing) == ["pulumi", "kubectl", "minikube", "/dev/kvm"]
    assert "missing /dev/kvm (device not usable)" in missing[3] and "kvm group" in missing[3]


def test_existing_cluster_with_prebuilt_images_needs_only_pulumi_and_kubectl(nothing_installed):
    missing = prereqs.missing_prerequisites(config(clusterFlavour="existing", imageLoadStrategy="preloaded", **PREBUILT))
    assert names(missing) == ["pulumi", "kubectl"]


def test_docker_build_on_existing_cluster_needs_docker(nothing_installed):
    missing = prereqs.missing_prerequisites(config(clusterFlavour="existing", imageRegistry="reg.example/team"))
    assert "docker" in names(missing)


def test_nothing_missing_when_everything_is_present(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name, *args, **kwargs: f"/usr/bin/{name}")
    assert prereqs.missing_prerequisites(config(clusterFlavour="kind"), file_exists=lambda p: True) == []
    assert prereqs.missing_prerequisites(config(clusterFlavour="minikube", runtime="kata-qemu"),
                                         device_usable=lambda p: True) == []


def test_only_the_missing_tool_is_reported(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name, *args, **kwargs: None if name == "kind" else f"/bin/{name}")
    missing = prereqs.missing_prerequisites(config(clusterFlavour="kind"), file_exists=lambda p: True)
    assert names(missing) == ["kind"]
    assert "clusterFlavour=kind" in missing[0]


def test_tools_are_also_found_in_the_toolchain_cache(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "pulumi"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = prereqs.missing_prerequisites(config(clusterFlavour="existing", imageLoadStrategy="preloaded", **PREBUILT))
    assert names(missing) == ["kubectl"]
