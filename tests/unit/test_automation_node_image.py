"""The KIND node image: its cache key follows every input and only them; kubeadm's image list
maps onto our binaries; the root filesystem trim refuses anything but a bootstrapped tree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from automation import node_image
from automation.node_image import NodeImageError, NodeImageInputs, Versions

VERSIONS = Versions(kubernetes="v1.34.4", kind="v0.30.0", etcd="v3.6.16", coredns="v1.15.0",
                    coredns_build="v1.15.0-kubeadm", containerd="v2.1.4", runc="v1.3.0", crictl="v1.34.0",
                    cni_plugins="v1.7.1", kube_router="v2.1.0", pause="3.10")


def _inputs(tmp_path: Path) -> NodeImageInputs:
    bins = {}
    for name in ("kubeadm", "kubelet", "containerd", "runc"):
        path = tmp_path / "bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"binary {name}".encode())
        bins[name] = path
    cni = tmp_path / "cni" / "bridge"
    cni.parent.mkdir(parents=True, exist_ok=True)
    cni.write_bytes(b"bridge")
    base = tmp_path / "kind-files"
    (base / "usr" / "local" / "bin").mkdir(parents=True)
    (base / "usr" / "local" / "bin" / "entrypoint").write_text("#!/bin/sh\n")
    own = tmp_path / "own.yaml"
    own.write_text("cni: 1\n")
    return NodeImageInputs(versions=VERSIONS, binaries=bins, cni_plugins={"bridge": cni}, kind_base_files=base,
                           own_files=[own])


def test_key_is_stable(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    assert node_image.cache_key(inputs) == node_image.cache_key(inputs)
    assert len(node_image.cache_key(inputs)) == 12
    assert node_image.image_tag(inputs).startswith("agent-sandbox/kind-node:v1.34.4-")


@pytest.mark.parametrize("change", ["binary", "cni", "kind-file", "own-file", "version", "mode"])
def test_key_changes_with_each_input(tmp_path: Path, change: str) -> None:
    inputs = _inputs(tmp_path)
    before = node_image.cache_key(inputs)
    if change == "binary":
        inputs.binaries["kubelet"].write_bytes(b"patched kubelet")
    elif change == "cni":
        inputs.cni_plugins["bridge"].write_bytes(b"other bridge")
    elif change == "kind-file":
        (inputs.kind_base_files / "usr" / "local" / "bin" / "entrypoint").write_text("#!/bin/sh\necho\n")
    elif change == "own-file":
        inputs.own_files[0].write_text("cni: 2\n")
    elif change == "version":
        inputs = replace(inputs, versions=replace(VERSIONS, kube_router="v2.2.0"))
    elif change == "mode":
        (inputs.kind_base_files / "usr" / "local" / "bin" / "entrypoint").chmod(0o755)
    assert node_image.cache_key(inputs) != before


def test_key_ignores_paths_and_timestamps(tmp_path: Path) -> None:
    """Same content elsewhere, touched later: same key (the image is not rebuilt for nothing)."""
    a = _inputs(tmp_path / "a")
    b = _inputs(tmp_path / "b")
    import os
    os.utime(b.binaries["kubeadm"], (1, 1))
    assert node_image.cache_key(a) == node_image.cache_key(b)


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    inputs.binaries["runc"].unlink()
    assert inputs.missing() == [f"runc ({inputs.binaries['runc']})"]


def test_builder_refuses_with_missing_parts(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    inputs.binaries["containerd"].unlink()
    builder = node_image.NodeImageBuilder(inputs, tmp_path / "cache", docker="/bin/false", log=lambda _: None)
    with pytest.raises(NodeImageError, match=r"parts are missing: containerd .*make tools"):
        builder.ensure()


KUBEADM_LIST = [
    "registry.k8s.io/kube-apiserver:v1.34.4", "registry.k8s.io/kube-controller-manager:v1.34.4",
    "registry.k8s.io/kube-scheduler:v1.34.4", "registry.k8s.io/kube-proxy:v1.34.4",
    "registry.k8s.io/coredns/coredns:v1.12.1", "registry.k8s.io/pause:3.10.1", "registry.k8s.io/etcd:3.6.4-0",
]


def test_component_images_cover_kubeadm_list() -> None:
    plans = node_image.component_image_plans(KUBEADM_LIST, VERSIONS)
    tags = {tag for plan in plans for tag in plan.tags}
    assert set(KUBEADM_LIST) <= tags
    # containerd's sandbox image (kind's config) and the default CNI's image are there too
    assert "registry.k8s.io/pause:3.10" in tags
    assert "localhost/agent-sandbox/kube-router:v2.1.0" in tags
    by_binary = {plan.binary: plan for plan in plans}
    assert by_binary["kube-proxy"].needs_iptables and by_binary["kube-router"].needs_iptables
    assert not by_binary["kube-apiserver"].needs_iptables
    assert by_binary["etcd"].version == "v3.6.16"  # kubeadm's tag, our pinned build: the label says which


def test_unknown_kubeadm_image_is_an_error() -> None:
    with pytest.raises(NodeImageError, match="does not know how to make: registry.k8s.io/new-thing:1"):
        node_image.component_image_plans([*KUBEADM_LIST, "registry.k8s.io/new-thing:1"], VERSIONS)


def test_dockerfiles() -> None:
    plans = {p.binary: p for p in node_image.component_image_plans(KUBEADM_LIST, VERSIONS)}
    scratch = plans["kube-scheduler"].dockerfile("base:1")
    assert scratch.startswith("FROM scratch\nCOPY kube-scheduler /usr/local/bin/kube-scheduler\n")
    proxy = plans["kube-proxy"].dockerfile("base:1")
    assert proxy.startswith("FROM base:1\n") and "iptables-wrapper" in proxy
    assert 'ENTRYPOINT ["/coredns"]' in plans["coredns"].dockerfile("base:1")


def test_trim_refuses_non_rootfs(tmp_path: Path) -> None:
    with pytest.raises(NodeImageError, match="refusing to trim"):
        node_image._trim(tmp_path, "http://mirror/debian")


def test_debian_mirror_from_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEBIAN_MIRROR", raising=False)
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.local/debian\nSuites: bookworm\n")
    assert node_image.debian_mirror([tmp_path / "missing", deb822]) == "http://mirror.local/debian"
    classic = tmp_path / "sources.list"
    classic.write_text("deb http://other.local/debian bookworm main\n")
    assert node_image.debian_mirror([classic]) == "http://other.local/debian"
    assert node_image.debian_mirror([]) == "http://deb.debian.org/debian"


def test_versions_file_is_read() -> None:
    versions = node_image.read_versions()
    assert versions.kubernetes.startswith("v1.34.") and versions.kind == "v0.30.0"


def test_default_cni_is_a_kind_template() -> None:
    text = (node_image.FILES_DIR / "default-cni.yaml").read_text()
    assert "would you kindly template this file" in text and "{{ .PodSubnet }}" in text
    assert "--run-firewall=true" in text  # NetworkPolicy is enforced


def test_leftover_cleanup_matches_only_build_containers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind node made from the image must never be taken for a half-finished build (it once was:
    docker commit copies the build container's labels into the image)."""
    seen = []

    def run(command, **kwargs):
        seen.append(command)
        import subprocess
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(node_image.subprocess, "run", run)
    builder = node_image.NodeImageBuilder(_inputs(tmp_path), tmp_path, docker="docker", log=lambda _: None)
    builder._remove_leftovers(node_image.Steps(lambda _: None, tmp_path / "log"), "x")
    ps = seen[0]
    assert f"label={node_image.BUILD_LABEL}" in ps and f"name={node_image.BUILD_NAME_PREFIX}" in ps
