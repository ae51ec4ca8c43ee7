"""components.keda and the autoscaled pool: the vendored KEDA release, the images it runs, and
what AgentSandbox declares with ``warmPoolAutoscaling: keda`` (under mocks)."""

from __future__ import annotations

import pytest

from agent_sandbox_pulumi.components.agent_sandbox import AgentSandbox, validated_settings
from agent_sandbox_pulumi.components.keda import API_SERVICE_CA_PATHS, VENDORED_MANIFEST, keda_objects
from agent_sandbox_pulumi.sandbox_iac import versions
from agent_sandbox_pulumi.sandbox_iac.autoscaling import WARM_POOL_LABEL
from agent_sandbox_pulumi.sandbox_iac.config import ComponentInputError
from tests.pulumi_harness import ProgramRun, run_callable

IMAGES = {"runtime_image": "registry.example/runtime:1.0", "router_image": "registry.example/router:1.0"}
KEDA_CRDS = {"scaledobjects.keda.sh", "scaledjobs.keda.sh", "triggerauthentications.keda.sh",
             "clustertriggerauthentications.keda.sh", "cloudeventsources.eventing.keda.sh",
             "clustercloudeventsources.eventing.keda.sh"}


def _images(objects: list[dict]) -> dict[str, tuple[str, str]]:
    return {o["metadata"]["name"]: (c["image"], c["imagePullPolicy"])
            for o in objects if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]}


def test_the_vendored_release_is_the_operator_and_metrics_server_without_webhooks() -> None:
    assert VENDORED_MANIFEST.is_file() and versions.KEDA_VERSION in str(VENDORED_MANIFEST)
    objects = keda_objects({})
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {name for kind, name in kinds if kind == "CustomResourceDefinition"} == KEDA_CRDS
    assert {name for kind, name in kinds if kind == "Deployment"} == {"keda-operator", "keda-metrics-apiserver"}
    assert ("APIService", "v1beta1.external.metrics.k8s.io") in kinds
    assert not any("Webhook" in kind for kind, _ in kinds)
    assert _images(objects) == {"keda-operator": (versions.KEDA_OPERATOR_IMAGE, "IfNotPresent"),
                                "keda-metrics-apiserver": (versions.KEDA_METRICS_IMAGE, "IfNotPresent")}


def test_local_images_replace_the_releases() -> None:
    objects = keda_objects({"operator_image": "localhost/keda:v2.21.0",
                            "metrics_image": "localhost/keda-metrics-apiserver:v2.21.0", "image_pull_policy": "Never"})
    assert _images(objects) == {"keda-operator": ("localhost/keda:v2.21.0", "Never"),
                                "keda-metrics-apiserver": ("localhost/keda-metrics-apiserver:v2.21.0", "Never")}


def declare(args: dict) -> ProgramRun:
    return run_callable(lambda: AgentSandbox("agent-sandbox", {**IMAGES, **args}), project="consumer")


def test_an_autoscaled_pool_has_no_declared_size_and_a_scaled_object_after_keda() -> None:
    run = declare({"warm_pool_autoscaling": "keda", "warm_pool_min_replicas": 0, "warm_pool_max_replicas": 6.0,
                   "install_keda": True, "image_pull_policy": "Never"})
    pool = run.one("SandboxWarmPool")
    assert "replicas" not in pool.inputs["spec"]
    assert "pulumi.com/waitFor" not in pool.inputs["metadata"]["annotations"]
    scaled = run.one("ScaledObject")
    assert scaled.inputs["apiVersion"] == versions.KEDA_API_VERSION
    assert scaled.k8s_namespace == pool.k8s_namespace and scaled.k8s_name == pool.k8s_name
    assert scaled.inputs["spec"]["scaleTargetRef"]["name"] == pool.k8s_name
    assert (scaled.inputs["spec"]["minReplicaCount"], scaled.inputs["spec"]["maxReplicaCount"]) == (0, 6)
    assert scaled.inputs["spec"]["triggers"][0]["metadata"]["podSelector"].endswith(f"!{WARM_POOL_LABEL}")
    operator = run.one("kubernetes:apps/v1:Deployment", "keda-operator")
    assert operator.inputs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    # KEDA (its CRD, its operator) exists before the ScaledObject; the pool before it too
    assert run.waits_for(scaled, operator) and run.waits_for(scaled, pool)
    assert run.waits_for(scaled, run.one("CustomResourceDefinition", "scaledobjects.keda.sh"))
    api_service = run.one("APIService", "v1beta1.external.metrics.k8s.io")
    assert api_service.ignore_changes == API_SERVICE_CA_PATHS


def test_keda_in_the_cluster_already_means_only_the_scaled_object() -> None:
    run = declare({"warm_pool_autoscaling": "keda"})
    assert run.one("ScaledObject") and not run.of_type("keda:Keda") and not run.of_type("APIService")
    assert run.one("ScaledObject").inputs["spec"]["minReplicaCount"] == 1


def test_component_inputs_refuse_a_fixed_size_with_autoscaling() -> None:
    with pytest.raises(ComponentInputError, match="warmPoolReplicas is a fixed pool size"):
        validated_settings({**IMAGES, "warm_pool_autoscaling": "keda", "warm_pool_replicas": 5})
    assert validated_settings({**IMAGES, "warm_pool_autoscaling": "keda", "warm_pool_min_replicas": 0}).warm_pool_floor == 0
