"""``clusterFlavour: existing`` with ``imageLoadStrategy: registry``: a cluster someone else made
(here: a KIND cluster this test creates with gVisor on its nodes) and a registry the nodes pull
from (Debian's ``docker-registry``, the CNCF distribution registry, started by this test on this
machine only). The program pushes the runtime and router images; the nodes pull them; nothing is
pulled from outside. The controller image is pushed to the same registry by the test, standing in
for the mirror such a cluster's owner keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.e2e.kind_harness import (
    CONTROLLER_ARCHIVE, CONTROLLER_LOCAL_IMAGE, Kube, Timings, config_args, docker, driver, gvisor_kind_cluster,
    kind_leftovers, require_caches,
)

STACK = "existing"
CLUSTER = "agent-sandbox-e2e-existing"
REGISTRY_PORT = 5001
REGISTRY = f"localhost:{REGISTRY_PORT}"
pytestmark = pytest.mark.timeout(2400)
REPORT = Timings("existing-cluster-registry", nodes=1)


def _registry_binary() -> str:
    found = shutil.which("docker-registry")
    if found:
        return found
    for attempt in (["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-registry"],
                    ["bash", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends docker-registry"]):
        if subprocess.run(attempt, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode == 0:
            break
    found = shutil.which("docker-registry")
    if not found:
        pytest.fail("Debian's docker-registry could not be installed (apt-get install docker-registry)")
    return found


def _start_registry(binary: str, storage: Path, address: str, log: Path) -> subprocess.Popen:
    config = storage.parent / f"config-{address.replace(':', '_')}.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "log": {"level": "warn"},
                                      "storage": {"filesystem": {"rootdirectory": str(storage)},
                                                  "delete": {"enabled": True}},
                                      "http": {"addr": address}}))
    process = subprocess.Popen([binary, "serve", str(config)], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=2).read()
            return process
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"docker-registry on {address} exited: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    process.kill()
    pytest.fail(f"docker-registry on {address} did not answer in 30 s")


@pytest.fixture(scope="module")
def existing_cluster() -> Iterator[dict[str, str]]:
    """A KIND cluster with gVisor, made the way its owner would, and a registry its nodes pull from."""
    require_caches()
    driver("down", STACK, "--forget", check=False, timeout=120)
    started = time.monotonic()
    registry_config = '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
    with gvisor_kind_cluster(CLUSTER, containerd_patches=[registry_config]) as cluster:
        gateway = docker("network", "inspect", "kind", "--format", "{{(index .IPAM.Config 0).Gateway}}").stdout.strip()
        binary = _registry_binary()
        storage = cluster.work / "storage"
        storage.mkdir()
        registries: list[subprocess.Popen] = []
        try:
            # Pushes go to localhost (the engine allows plain HTTP there); the nodes pull from the kind
            # network's gateway, both served from the same storage.
            for address in (f"127.0.0.1:{REGISTRY_PORT}", f"{gateway}:{REGISTRY_PORT}"):
                registries.append(_start_registry(binary, storage, address, cluster.work / "registry.log"))
            hosts = (f'server = "http://{gateway}:{REGISTRY_PORT}"\n\n[host."http://{gateway}:{REGISTRY_PORT}"]\n'
                     '  capabilities = ["pull", "resolve"]\n')
            docker("exec", cluster.node, "mkdir", "-p", f"/etc/containerd/certs.d/{REGISTRY}")
            subprocess.run(["docker", "exec", "-i", cluster.node, "cp", "/dev/stdin",
                            f"/etc/containerd/certs.d/{REGISTRY}/hosts.toml"], input=hosts, text=True, check=True)
            # the owner's mirror holds the controller image
            docker("load", "-i", str(CONTROLLER_ARCHIVE))
            controller = f"{REGISTRY}/agent-sandbox-controller:v0.5.6"
            docker("tag", CONTROLLER_LOCAL_IMAGE, controller)
            docker("push", controller)
            REPORT.check("existing cluster + registry made", time.monotonic() - started)
            yield {"context": cluster.context, "controller": controller, "node": cluster.node}
        finally:
            for process in registries:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def deployed(existing_cluster: dict[str, str]) -> Iterator[Kube]:
    pairs = {"kubeContext": existing_cluster["context"], "imageRegistry": f"{REGISTRY}/agent-sandbox",
             "controllerImage": existing_cluster["controller"], "imageVariant": "minimal", "warmPoolReplicas": "1",
             "routerReplicas": "1"}
    result = driver("up", STACK, *config_args(pairs), timeout=2400)
    REPORT.check("up on the existing cluster", result.elapsed)
    yield Kube(existing_cluster["context"])
    driver("down", STACK, check=False, timeout=900)


def test_images_were_pushed_by_the_program_and_pulled_by_the_node(deployed: Kube,
                                                                   existing_cluster: dict[str, str]) -> None:
    catalog = json.loads(urllib.request.urlopen(f"http://{REGISTRY}/v2/_catalog", timeout=5).read())
    assert {"agent-sandbox/runtime", "agent-sandbox/router", "agent-sandbox-controller"} <= set(catalog["repositories"])
    template = deployed.get_json("sandboxtemplates.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    image = template["items"][0]["spec"]["podTemplate"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"{REGISTRY}/agent-sandbox/runtime:")
    on_node = docker("exec", existing_cluster["node"], "crictl", "images", "-o", "json").stdout
    names = {tag for img in json.loads(on_node)["images"] for tag in img.get("repoTags") or []}
    assert image in names, f"{image} is not in the node's image store: {sorted(names)}"


def test_smoke_on_the_existing_cluster(deployed: Kube) -> None:
    result = driver("smoke", STACK, timeout=900)
    REPORT.check("smoke (existing + registry)", result.elapsed)


def test_down_leaves_the_cluster_but_nothing_of_ours(deployed: Kube) -> None:
    result = driver("down", STACK, timeout=900)
    REPORT.check("down (existing)", result.elapsed)
    for namespace in ("agent-sandbox-demo", "agent-sandbox-system"):
        assert deployed.kubectl("get", "namespace", namespace, check=False).returncode != 0
    assert deployed.kubectl("get", "nodes").returncode == 0, "down must not touch a cluster it did not make"
    assert kind_leftovers("no-such-cluster") == []
