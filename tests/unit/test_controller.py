"""AgentSandboxController declared from what the manifest has: the pinned v0.5.6 release (with
its conversion webhook) and a v1.0.x-shaped one (no webhook, no v1alpha1)."""

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


def test_v056_waits_for_the_conversion_webhook(gvisor_run: ProgramRun) -> None:
    assert _controller_container(gvisor_run)["readinessProbe"]["tcpSocket"] == {"port": 9443}
    gvisor_run.one("kubernetes:core/v1:Service", "agent-sandbox-webhook-service")
    assert all(crd.ignore_changes == [CA_BUNDLE] for crd in gvisor_run.of_type(CRD_TYPE))


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

