"""agent_sandbox_pulumi/components/images.py: build, tag and load strategies."""

from __future__ import annotations

import pytest

from agent_sandbox_pulumi.components.images import load_command
from tests.pulumi_harness import run_program
from tests.unit.conftest import PREBUILT


@pytest.mark.parametrize(("strategy", "expected"), [
    ("kind", "kind load docker-image --name demo img:1"),
    ("minikube", "minikube image load --profile demo img:1"),
    ("containerd", "docker save img:1 | ctr -n k8s.io images import -"),
    ("containerd-at", "docker save img:1 | ctr --address /run/x.sock -n k8s.io images import -"),
    ("registry", None),
    ("preloaded", None),
])
def test_load_command_per_strategy(strategy: str, expected) -> None:
    address = "/run/x.sock" if strategy == "containerd-at" else None
    assert load_command(strategy.removesuffix("-at"), "demo", "img:1", address) == expected


def test_registry_strategy_pushes_under_the_registry_prefix() -> None:
    run = run_program("gvisor", {"clusterFlavour": "existing", "imageRegistry": "registry.example.com/team"})
    builds = run.of_type("docker:index/image:Image")
    assert {b.inputs["imageName"].rsplit(":", 1)[0] for b in builds} == {
        "registry.example.com/team/runtime", "registry.example.com/team/router"}
    assert all(b.inputs["skipPush"] is False for b in builds)
    assert not run.of_type("pulumi-python:dynamic:Resource")
    container = run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_prebuilt_images_are_loaded_but_not_built() -> None:
    run = run_program("gvisor", PREBUILT)
    assert not run.of_type("docker:index/image:Image")
    loads = {r.name: r for r in run.of_type("pulumi-python:dynamic:Resource")}
    assert loads["images-runtime-load"].inputs["image"] == PREBUILT["sandboxImage"]
    assert loads["images-runtime-load"].inputs["command"] == 'kind load docker-image --name agent-sandbox "$IMAGE"'


def test_variant_and_base_image_reach_the_build() -> None:
    run = run_program("gvisor", {"imageVariant": "minimal", "baseImage": "local/base:1"})
    runtime = next(b for b in run.of_type("docker:index/image:Image") if "runtime" in b.inputs["imageName"])
    assert runtime.inputs["build"]["args"] == {"BASE_IMAGE": "local/base:1", "VARIANT": "minimal"}
    default = run_program("gvisor")
    default_runtime = next(b for b in default.of_type("docker:index/image:Image") if "runtime" in b.inputs["imageName"])
    assert default_runtime.inputs["imageName"] != runtime.inputs["imageName"], "build args are part of the tag"


def test_the_compiled_router_is_built_by_default_and_python_on_request() -> None:
    """routerImplementation picks the router's build context; the compiled one has no base image."""
    def router_build(run):
        return next(b for b in run.of_type("docker:index/image:Image") if "router" in b.inputs["imageName"])

    compiled = router_build(run_program("gvisor", {"baseImage": "local/base:1"}))
    assert compiled.inputs["build"]["context"].endswith("/images/router-go")
    assert compiled.inputs["build"]["dockerfile"].endswith("/images/router-go/Dockerfile")
    assert compiled.inputs["build"]["args"] == {}, "the static binary's image has no base to pass"
    python = router_build(run_program("gvisor", {"routerImplementation": "python", "baseImage": "local/base:1"}))
    assert python.inputs["build"]["context"].endswith("/images/router")
    assert python.inputs["build"]["args"] == {"BASE_IMAGE": "local/base:1"}
    assert python.inputs["imageName"] != compiled.inputs["imageName"]


def test_prebuilt_images_are_pushed_to_the_registry_and_pulled_from_it() -> None:
    """An existing cluster with a registry: the program pushes the local images; pods use the pushed refs."""
    run = run_program("gvisor", {**PREBUILT, "clusterFlavour": "existing", "imageLoadStrategy": "registry",
                                 "imageRegistry": "localhost:5001/agent-sandbox"})
    loads = {r.name: r for r in run.of_type("pulumi-python:dynamic:Resource")}
    runtime_tag = PREBUILT["sandboxImage"].rsplit("/", 1)[-1]
    pushed = f"localhost:5001/agent-sandbox/{runtime_tag}"
    assert loads["images-runtime-load"].inputs["image"] == PREBUILT["sandboxImage"]
    assert loads["images-runtime-load"].inputs["command"] == f'docker tag "$IMAGE" {pushed} && docker push {pushed}'
    container = run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]["containers"][0]
    assert container["image"] == pushed and container["imagePullPolicy"] == "IfNotPresent"


def test_pushed_ref_keeps_name_and_tag() -> None:
    from agent_sandbox_pulumi.components.images import pushed_ref
    assert pushed_ref("reg:5000/team/", "agent-sandbox/runtime:abc") == "reg:5000/team/runtime:abc"
