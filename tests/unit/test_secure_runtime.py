"""agent_sandbox_pulumi/components/secure_runtime.py."""

import pytest

from agent_sandbox_pulumi.components.secure_runtime import kata_chart_location
from tests.pulumi_harness import run_program


@pytest.mark.parametrize(("repo", "expected"), [
    ("oci://ghcr.io/kata-containers/kata-deploy-charts", ("oci://ghcr.io/kata-containers/kata-deploy-charts/kata-deploy", None)),
    ("https://charts.example.com/kata", ("kata-deploy", "https://charts.example.com/kata")),
    ("/opt/charts/kata-deploy", ("/opt/charts/kata-deploy", None)),
])
def test_chart_location(repo: str, expected) -> None:
    assert kata_chart_location(repo) == expected


def test_unmanaged_runtime_class_is_not_declared() -> None:
    run = run_program("gvisor", {"manageRuntimeClass": "false"})
    assert not run.of_type("RuntimeClass")
    assert run.one("SandboxTemplate").inputs["spec"]["podTemplate"]["spec"]["runtimeClassName"] == "gvisor"


def test_insecure_runc_stack_uses_runc_handler() -> None:
    run = run_program("gvisor", {"runtime": "runc", "allowInsecureRunc": "true"})
    assert run.one("RuntimeClass").inputs["handler"] == "runc"
    assert run.outputs["kindClusterConfig"] == ""
