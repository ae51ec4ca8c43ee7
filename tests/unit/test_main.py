"""The whole program per stack under mocks: what it declares, where, and in which order."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import ProgramRun, run_program
from tests.unit.conftest import PREBUILT

EXPECTED_OUTPUTS = {
    "namespace", "template", "warmPool", "warmPoolReplicas", "warmPoolAutoscaling", "sandboxPort", "routerService", "routerNamespace", "routerPort",
    "routerAuthToken", "runtimeImage", "routerImage", "runtimeClass", "kindClusterConfig", "kubeContext",
    "clusterFlavour", "imageBuild",
}


@pytest.fixture(params=["gvisor", "kata"])
def stack_run(request, gvisor_run: ProgramRun, kata_run: ProgramRun) -> ProgramRun:
    return {"gvisor": gvisor_run, "kata": kata_run}[request.param]


def test_runtime_class_per_stack(gvisor_run: ProgramRun, kata_run: ProgramRun) -> None:
    gvisor_template = gvisor_run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]
    kata_template = kata_run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]
    assert gvisor_template["runtimeClassName"] == "gvisor"
    assert kata_template["runtimeClassName"] == "kata-qemu"
    runtime_class = gvisor_run.one("kubernetes:node.k8s.io/v1:RuntimeClass")
    assert (runtime_class.k8s_name, runtime_class.inputs["handler"]) == ("gvisor", "runsc")
    assert not runtime_class.read
    kata_class = kata_run.one("kubernetes:node.k8s.io/v1:RuntimeClass")
    assert kata_class.read and kata_class.k8s_name == "kata-qemu", "kata-deploy owns the class; we only wait for it"
    assert gvisor_run.outputs["runtimeClass"] == "gvisor" and kata_run.outputs["runtimeClass"] == "kata-qemu"


def test_kata_installs_kata_deploy_and_labels_the_node(kata_run: ProgramRun) -> None:
    release = kata_run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"].endswith("/kata-deploy") and release.inputs["version"]
    assert release.inputs["namespace"] == "kube-system"
    patch = kata_run.one("kubernetes:core/v1:NodePatch")
    assert patch.k8s_name == "agent-sandbox-kata"
    assert patch.inputs["metadata"]["labels"] == {"kata-containers": "enabled"}
    assert kata_run.waits_for(release, patch)
    assert kata_run.waits_for(kata_run.one("kubernetes:node.k8s.io/v1:RuntimeClass"), release)
    assert not kata_run.of_type("kubernetes:helm.sh/v3:Release") == []
    assert kata_run.outputs["kindClusterConfig"] == ""


def test_gvisor_on_kind_exports_the_cluster_config(gvisor_run: ProgramRun) -> None:
    config = gvisor_run.outputs["kindClusterConfig"]
    assert "io.containerd.runsc.v1" in config and "containerd-shim-runsc-v1" in config
    assert not gvisor_run.of_type("kubernetes:helm.sh/v3:Release")


def test_namespaces_of_every_object(stack_run: ProgramRun) -> None:
    sandbox_ns = "agent-sandbox-demo"
    for kind in ("SandboxTemplate", "SandboxWarmPool"):
        assert stack_run.one(kind).k8s_namespace == sandbox_ns
    assert stack_run.one("kubernetes:core/v1:Namespace", sandbox_ns)
    for resource in (stack_run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment"),
                     stack_run.one("kubernetes:core/v1:Service", "sandbox-router-svc"),
                     stack_run.one("kubernetes:core/v1:Secret")):
        assert resource.k8s_namespace == "agent-sandbox-system"
    assert stack_run.outputs["namespace"] == sandbox_ns
    assert stack_run.outputs["routerNamespace"] == "agent-sandbox-system"


def test_controller_runs_with_extensions_and_the_pinned_image(stack_run: ProgramRun) -> None:
    deployment = stack_run.one("kubernetes:apps/v1:Deployment", "agent-sandbox-controller")
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    assert "--extensions" in container["args"]
    assert container["image"] == "registry.k8s.io/agent-sandbox/agent-sandbox-controller:v0.5.6"
    # storage version only, no conversion webhook (serveLegacyApiVersions off): ready on /readyz
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    crds = stack_run.of_type("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition")
    assert len(crds) == 4
    # nothing patches a caBundle into CRDs without conversion, so nothing is ignored
    assert all(r.ignore_changes == [] for r in crds)
    # the default profile (interactive): one API write less per claim, the refill 2 s after an adoption
    assert "--disable-claim-observability-annotations=true" in container["args"]
    assert "--sandbox-warm-pool-replenish-delay=2s" in container["args"]


def test_warm_pool_references_the_template(stack_run: ProgramRun) -> None:
    template = stack_run.one("SandboxTemplate")
    pool = stack_run.one("SandboxWarmPool")
    assert template.inputs["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
    assert pool.inputs["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
    assert pool.inputs["spec"]["sandboxTemplateRef"] == {"name": template.k8s_name}
    assert pool.inputs["spec"]["replicas"] == 2
    assert pool.inputs["metadata"]["annotations"] == {"pulumi.com/waitFor": "jsonpath={.status.readyReplicas}=2",
                                                      "pulumi.com/patchForce": "true"}
    assert stack_run.outputs["warmPool"] == pool.k8s_name and stack_run.outputs["template"] == template.k8s_name


def test_router_selector_labels_and_port(stack_run: ProgramRun) -> None:
    deployment = stack_run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment")
    service = stack_run.one("kubernetes:core/v1:Service", "sandbox-router-svc")
    spec = deployment.inputs["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == {"app": "sandbox-router"}
    assert spec["template"]["metadata"]["labels"]["app"] == "sandbox-router"
    assert service.inputs["spec"]["selector"] == {"app": "sandbox-router"}
    assert service.inputs["spec"]["ports"][0]["port"] == 8080 and service.inputs["spec"]["type"] == "ClusterIP"
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["runAsUser"] == 1000
    token_env = next(e for e in container["env"] if e["name"] == "ROUTER_AUTH_TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"]["name"] == "sandbox-router-auth"
    assert stack_run.outputs["routerService"] == "sandbox-router-svc" and stack_run.outputs["routerPort"] == 8080


def test_order_controller_then_template_then_pool(stack_run: ProgramRun) -> None:
    controller = stack_run.one("kubernetes:apps/v1:Deployment", "agent-sandbox-controller")
    crds = stack_run.of_type("CustomResourceDefinition")
    template = stack_run.one("SandboxTemplate")
    pool = stack_run.one("SandboxWarmPool")
    runtime_class = stack_run.one("kubernetes:node.k8s.io/v1:RuntimeClass")
    assert stack_run.waits_for(template, controller)
    assert all(stack_run.waits_for(template, crd) for crd in crds)
    assert stack_run.waits_for(template, runtime_class)
    assert stack_run.waits_for(pool, template)
    assert stack_run.waits_for(controller, stack_run.one("kubernetes:core/v1:Namespace", "agent-sandbox-system"))
    assert not stack_run.waits_for(controller, template)


def test_images_are_loaded_before_the_pods_that_use_them(stack_run: ProgramRun) -> None:
    loads = {r.name: r for r in stack_run.of_type("pulumi-python:dynamic:Resource")}
    assert set(loads) == {"images-runtime-load", "images-router-load"}
    builds = stack_run.of_type("docker:index/image:Image")
    for load in loads.values():
        image = next(b for b in builds if load.name.startswith(b.name))
        assert stack_run.waits_for(load, image)
    # The image refs carry their load: each consumer waits for exactly the image it runs.
    for consumer in (stack_run.one("SandboxTemplate"), stack_run.one("SandboxWarmPool")):
        assert stack_run.waits_for(consumer, loads["images-runtime-load"])
    router = stack_run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment")
    assert stack_run.waits_for(router, loads["images-router-load"])
    assert not stack_run.waits_for(router, loads["images-runtime-load"]), "the router must not wait for the big runtime image"


def test_images_use_content_tags_and_are_never_pulled(stack_run: ProgramRun) -> None:
    for build in stack_run.of_type("docker:index/image:Image"):
        repository, tag = build.inputs["imageName"].rsplit(":", 1)
        assert repository in ("agent-sandbox/runtime", "agent-sandbox/router")
        assert len(tag) == 12 and tag != "latest"
        assert build.inputs["skipPush"] is True
    template_container = stack_run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]["containers"][0]
    assert template_container["image"] == stack_run.outputs["runtimeImage"]
    assert template_container["imagePullPolicy"] == "Never"
    router = stack_run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment")
    assert router.inputs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_stack_outputs_are_complete(stack_run: ProgramRun) -> None:
    assert set(stack_run.outputs) == EXPECTED_OUTPUTS
    assert stack_run.outputs["kubeContext"] == {"gvisor": "kind-agent-sandbox", "kata": "agent-sandbox-kata"}[stack_run.stack]


def test_every_child_has_a_component_parent(stack_run: ProgramRun) -> None:
    top_level = [r for r in stack_run.resources if r.parent.split("::")[2] == "pulumi:pulumi:Stack"]
    assert all(r.parent for r in stack_run.resources)
    assert {r.type for r in top_level} == {
        "pulumi:providers:kubernetes", "agent-sandbox:index:SandboxImages", "agent-sandbox:index:AgentSandbox",
    }
    sandbox = stack_run.one("agent-sandbox:index:AgentSandbox")
    parts = {r.type: r for r in stack_run.resources if r.parent == sandbox.urn}
    assert set(parts) == {"agent-sandbox:index:SecureRuntime", "agent-sandbox:index:AgentSandboxController",
                          "agent-sandbox:index:SandboxPool", "agent-sandbox:index:SandboxRouter"}


def test_parts_keep_their_urns_from_stacks_made_before_the_package(stack_run: ProgramRun) -> None:
    # Stacks created before AgentSandbox existed hold the four parts at the top level, under the
    # same names; an alias to the root stack keeps them (and, through the engine, their children).
    sandbox = stack_run.one("agent-sandbox:index:AgentSandbox")
    parts = {r.name: r for r in stack_run.resources if r.parent == sandbox.urn}
    assert set(parts) == {"secure-runtime", "controller", "sandboxes", "router"}
    for part in parts.values():
        assert part.aliases == ["noParent"], part.name
    images = stack_run.one("agent-sandbox:index:SandboxImages")
    assert images.name == "images" and images.parent.split("::")[2] == "pulumi:pulumi:Stack"


def test_existing_cluster_with_prebuilt_images_needs_no_build_or_load() -> None:
    run = run_program("gvisor", {**PREBUILT, "clusterFlavour": "existing", "imageLoadStrategy": "preloaded",
                                 "manageRuntimeClass": "false", "warmPoolReplicas": "0"})
    assert not run.of_type("docker:index/image:Image") and not run.of_type("pulumi-python:dynamic:Resource")
    assert not run.of_type("RuntimeClass")
    assert run.outputs["runtimeImage"] == PREBUILT["sandboxImage"]
    pool = run.one("SandboxWarmPool")
    assert pool.inputs["spec"]["replicas"] == 0
    assert "pulumi.com/waitFor" not in pool.inputs["metadata"]["annotations"]
    assert run.outputs["kubeContext"] == ""


def test_invalid_config_stops_before_any_resource() -> None:
    with pytest.raises(Exception, match="agent-sandbox:runtime = 'gvisorr' is invalid"):
        run_program("gvisor", {"runtime": "gvisorr"})


def test_invalid_network_config_stops_before_any_resource() -> None:
    with pytest.raises(Exception, match=r"agent-sandbox:sandboxEgressAllow\[0\].cidr = '10.1.2.3/32' is invalid"):
        run_program("gvisor", {"sandboxEgress": "allowList",
                               "sandboxEgressAllow": [{"cidr": "10.1.2.3/32", "ports": [443]}]})


def test_both_stacks_fence_sandboxes_and_the_router(stack_run: ProgramRun) -> None:
    egress = stack_run.one("SandboxTemplate").inputs["spec"]["networkPolicy"]["egress"]
    assert [rule["to"][0]["ipBlock"]["cidr"] for rule in egress[:1]] == ["0.0.0.0/0"]
    assert "10.0.0.0/8" in egress[0]["to"][0]["ipBlock"]["except"]
    policy = stack_run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "sandbox-router")
    assert policy.inputs["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_kata_stack_starts_minikube_with_a_cni_that_enforces_network_policy() -> None:
    from automation.cluster import create_command
    from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
    from tests.pulumi_harness import stack_file_config

    raw = {key.split(":", 1)[1]: value for key, value in stack_file_config("kata").items()}
    command = create_command(parse_stack_config(raw, "kata"))
    # minikube's default CNI (kindnet/bridge) ignores NetworkPolicy: sandbox egress would be open.
    assert command[:2] == ["minikube", "start"] and "--cni=calico" in command


def test_image_build_mode_is_an_output() -> None:
    """`make up` may switch a run to prebuilt images; the stack's outputs show which was used."""
    assert run_program("gvisor", PREBUILT).outputs["imageBuild"] == "prebuilt"
