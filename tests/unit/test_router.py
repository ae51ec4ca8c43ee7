"""components/router.py: token handling."""

from tests.pulumi_harness import run_program



def test_generated_token_is_kept_across_runs(gvisor_run) -> None:
    secret = gvisor_run.one("kubernetes:core/v1:Secret")
    assert secret.ignore_changes == ["stringData", "data"]
    assert len(secret.inputs["stringData"]["token"]) >= 32
    template = gvisor_run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment").inputs["spec"]["template"]
    assert not template["metadata"].get("annotations")


def test_configured_token_rolls_the_pods_when_changed() -> None:
    def annotations(token: str) -> dict:
        run = run_program("gvisor", {"routerAuthToken": token})
        secret = run.one("kubernetes:core/v1:Secret")
        assert secret.ignore_changes == [] and secret.inputs["stringData"]["token"] == token
        deployment = run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment")
        return deployment.inputs["spec"]["template"]["metadata"]["annotations"]

    first, second = annotations("a" * 24), annotations("b" * 24)
    assert set(first) == {"agent-sandbox/token-sha256"} and first != second


def test_replicas_follow_config() -> None:
    run = run_program("gvisor", {"routerReplicas": "3"})
    assert run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment").inputs["spec"]["replicas"] == 3


def test_router_knows_its_address_and_the_pod_cidrs() -> None:
    run = run_program("gvisor", {"routerAllowedPodCidrs": "10.244.0.0/16, fd00:10::/56"})
    container = run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment").inputs["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ROUTER_ALLOWED_POD_CIDRS"]["value"] == "10.244.0.0/16,fd00:10::/56"
    assert env["ROUTER_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
