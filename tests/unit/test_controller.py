"""AgentSandboxController declared from what the manifest has: the pinned v0.5.6 release, by
default served in its storage version only (no conversion webhook), with ``serveLegacyApiVersions``
as it ships (v1alpha1 through its webhook), and a v1.0.x-shaped one (no webhook, no v1alpha1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pulumi_harness import ProgramRun, run_program

CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
CA_BUNDLE = "spec.conversion.webhook.clientConfig.caBundle"


@pytest.fixture(scope="module")
def v1_run(v1_shaped_manifest: Path) -> ProgramRun:
    return run_program("gvisor", {"controllerManifest": str(v1_shaped_manifest)})


def _controller_container(run: ProgramRun) -> dict:
    deployment = run.one(DEPLOYMENT_TYPE, "agent-sandbox-controller")
    return deployment.inputs["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def legacy_run() -> ProgramRun:
    return run_program("gvisor", {"serveLegacyApiVersions": "true"})


def test_v056_by_default_serves_v1beta1_only_without_the_conversion_webhook(gvisor_run: ProgramRun) -> None:
    container = _controller_container(gvisor_run)
    assert "--enable-webhook=false" in container["args"] and "--extensions" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    assert "webhook" not in [p["name"] for p in container["ports"]]
    assert not [s for s in gvisor_run.of_type("kubernetes:core/v1:Service") if s.k8s_name == "agent-sandbox-webhook-service"]
    crds = gvisor_run.of_type(CRD_TYPE)
    assert len(crds) == 4
    assert all(crd.inputs["spec"]["conversion"] == {"strategy": "None"} for crd in crds)
    assert all([v["name"] for v in crd.inputs["spec"]["versions"]] == ["v1beta1"] for crd in crds)
    assert all(crd.ignore_changes == [] for crd in crds)


def test_v056_with_legacy_versions_waits_for_the_conversion_webhook(legacy_run: ProgramRun) -> None:
    container = _controller_container(legacy_run)
    assert container["readinessProbe"]["tcpSocket"] == {"port": 9443}
    assert "--enable-webhook=false" not in container["args"]
    legacy_run.one("kubernetes:core/v1:Service", "agent-sandbox-webhook-service")
    crds = legacy_run.of_type(CRD_TYPE)
    assert all(crd.ignore_changes == [CA_BUNDLE] for crd in crds)
    assert all("v1alpha1" in [v["name"] for v in crd.inputs["spec"]["versions"]] for crd in crds)


def test_v1_shape_is_ready_on_readyz_not_on_the_missing_webhook_port(v1_run: ProgramRun) -> None:
    probe = _controller_container(v1_run)["readinessProbe"]
    assert probe["httpGet"] == {"path": "/readyz", "port": 8081}
    assert not [s for s in v1_run.of_type("kubernetes:core/v1:Service") if s.k8s_name == "agent-sandbox-webhook-service"]


def test_v1_shape_crds_have_no_conversion_to_ignore(v1_run: ProgramRun) -> None:
    crds = v1_run.of_type(CRD_TYPE)
    assert len(crds) == 4
    assert all(crd.ignore_changes == [] for crd in crds), "no webhook patches the CRDs, so nothing drifts"
    assert all([v["name"] for v in crd.inputs["spec"]["versions"]] == ["v1beta1"] for crd in crds)


def test_v1_shape_still_gets_a_working_pool(v1_run: ProgramRun) -> None:
    assert v1_run.one("SandboxTemplate").inputs["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
    assert v1_run.one("SandboxWarmPool").inputs["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"

