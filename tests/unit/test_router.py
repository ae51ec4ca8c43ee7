"""agent_sandbox_pulumi/components/router.py: token handling, sandbox-only resolution (env, ServiceAccount, RBAC) and
the router's NetworkPolicy."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import ProgramRun, rules_admitting, run_program

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
ENDPOINT_SLICE = "kubernetes:discovery.k8s.io/v1:EndpointSlice"

KUBE_DNS_POD = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
SANDBOX_LABELS = {"app": "agent-sandbox-runtime"}


@pytest.fixture(params=["gvisor", "kata"])
def stack_run(request, gvisor_run: ProgramRun, kata_run: ProgramRun) -> ProgramRun:
    return {"gvisor": gvisor_run, "kata": kata_run}[request.param]


def ours(run: ProgramRun, type_: str) -> list:
    """The router's Roles/RoleBindings (the controller release brings its own)."""
    return [r for r in run.of_type(type_) if r.k8s_name == "sandbox-router-pods"]


def ns(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}


def router_pod_spec(run: ProgramRun) -> dict:
    return run.one(DEPLOYMENT, "sandbox-router-deployment").inputs["spec"]["template"]["spec"]


def router_env(run: ProgramRun) -> dict[str, dict]:
    return {e["name"]: e for e in router_pod_spec(run)["containers"][0]["env"]}


def router_policy(run: ProgramRun) -> dict:
    return run.one(NETPOL, "sandbox-router").inputs


def test_generated_token_is_kept_across_runs(gvisor_run) -> None:
    secret = gvisor_run.one("kubernetes:core/v1:Secret")
    assert secret.ignore_changes == ["stringData", "data"]
    assert len(secret.inputs["stringData"]["token"]) >= 32
    template = gvisor_run.one(DEPLOYMENT, "sandbox-router-deployment").inputs["spec"]["template"]
    assert not template["metadata"].get("annotations")


def test_configured_token_rolls_the_pods_when_changed() -> None:
    def annotations(token: str) -> dict:
        run = run_program("gvisor", {"routerAuthToken": token})
        secret = run.one("kubernetes:core/v1:Secret")
        assert secret.ignore_changes == [] and secret.inputs["stringData"]["token"] == token
        deployment = run.one(DEPLOYMENT, "sandbox-router-deployment")
        return deployment.inputs["spec"]["template"]["metadata"]["annotations"]

    first, second = annotations("a" * 24), annotations("b" * 24)
    assert set(first) == {"agent-sandbox/token-sha256"} and first != second


def test_replicas_follow_config() -> None:
    run = run_program("gvisor", {"routerReplicas": "3"})
    assert run.one(DEPLOYMENT, "sandbox-router-deployment").inputs["spec"]["replicas"] == 3


# ----------------------------------------------------------------------------- sandbox-only resolution (issue 11, item 1)

def test_router_resolves_sandbox_pods_from_a_watch_by_default(stack_run: ProgramRun) -> None:
    env = router_env(stack_run)
    assert env["ROUTER_RESOLVER"] == {"name": "ROUTER_RESOLVER", "value": "watch"}
    assert env["ROUTER_SANDBOX_NAMESPACES"] == {"name": "ROUTER_SANDBOX_NAMESPACES", "value": "agent-sandbox-demo"}
    assert env["ROUTER_SANDBOX_PORTS"] == {"name": "ROUTER_SANDBOX_PORTS", "value": "8888"}
    # Learned from the cluster's pod range instead of "any unicast address".
    assert env["ROUTER_ALLOWED_POD_CIDRS"] == {"name": "ROUTER_ALLOWED_POD_CIDRS", "value": "10.244.0.0/16"}
    assert env["ROUTER_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_router_gets_a_dedicated_service_account_with_a_token(stack_run: ProgramRun) -> None:
    account = stack_run.one(SERVICE_ACCOUNT, "sandbox-router")
    assert account.k8s_namespace == "agent-sandbox-system"
    spec = router_pod_spec(stack_run)
    assert spec["serviceAccountName"] == "sandbox-router"
    assert spec["automountServiceAccountToken"] is True
    deployment = stack_run.one(DEPLOYMENT, "sandbox-router-deployment")
    assert stack_run.waits_for(deployment, account)


def test_router_may_only_read_pods_in_the_sandbox_namespace(stack_run: ProgramRun) -> None:
    (role,) = ours(stack_run, ROLE)
    assert (role.k8s_name, role.k8s_namespace) == ("sandbox-router-pods", "agent-sandbox-demo")
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    (binding,) = ours(stack_run, ROLE_BINDING)
    assert (binding.k8s_name, binding.k8s_namespace) == ("sandbox-router-pods", "agent-sandbox-demo")
    assert binding.inputs["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                         "name": "sandbox-router-pods"}
    assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": "sandbox-router",
                                           "namespace": "agent-sandbox-system"}]
    # No cluster-wide grant to the router's account.
    cluster_bindings = stack_run.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert not [b for b in cluster_bindings if any(s.get("name") == "sandbox-router" for s in b.inputs.get("subjects") or [])]
    sandbox_namespace = stack_run.one("kubernetes:core/v1:Namespace", "agent-sandbox-demo")
    assert stack_run.waits_for(role, sandbox_namespace) and stack_run.waits_for(binding, sandbox_namespace)
    deployment = stack_run.one(DEPLOYMENT, "sandbox-router-deployment")
    assert stack_run.waits_for(deployment, binding)


def test_more_sandbox_namespaces_get_rbac_env_and_egress_each() -> None:
    run = run_program("gvisor", {"routerSandboxNamespaces": "agent-sandbox-demo,team-b"})
    assert router_env(run)["ROUTER_SANDBOX_NAMESPACES"]["value"] == "agent-sandbox-demo,team-b"
    assert sorted(r.k8s_namespace for r in ours(run, ROLE)) == ["agent-sandbox-demo", "team-b"]
    assert sorted(r.k8s_namespace for r in ours(run, ROLE_BINDING)) == ["agent-sandbox-demo", "team-b"]
    egress = router_policy(run)["spec"]["egress"]
    for namespace in ("agent-sandbox-demo", "team-b"):
        assert rules_admitting(egress, 8888, pod=(ns(namespace), SANDBOX_LABELS)) == [0]
    assert rules_admitting(egress, 8888, pod=(ns("team-c"), SANDBOX_LABELS)) == []


def test_configured_pod_cidrs_are_passed_as_given() -> None:
    run = run_program("gvisor", {"clusterPodCidrs": "10.244.0.0/16,fd00:10::/56",
                                 "routerAllowedPodCidrs": "10.244.0.0/16, fd00:10::/56"})
    assert router_env(run)["ROUTER_ALLOWED_POD_CIDRS"]["value"] == "10.244.0.0/16,fd00:10::/56"


# ----------------------------------------------------------------------------- the router's NetworkPolicy

ROUTER_POLICY_SPEC = {
    "podSelector": {"matchLabels": {"app": "sandbox-router"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{
        "from": [{"namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["agent-sandbox-demo"]}]}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }],
    "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agent-sandbox-demo"}},
                 "podSelector": {"matchLabels": {"app": "agent-sandbox-runtime"}}}],
         "ports": [{"protocol": "TCP", "port": 8888}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        # From EndpointSlice default/kubernetes (mocked: 172.18.0.2:6443, KIND's control plane).
        {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]},
    ],
}


def test_router_network_policy_is_exact(stack_run: ProgramRun) -> None:
    policy = router_policy(stack_run)
    assert policy["metadata"]["namespace"] == "agent-sandbox-system"
    assert policy["spec"] == ROUTER_POLICY_SPEC
    deployment = stack_run.one(DEPLOYMENT, "sandbox-router-deployment")
    assert stack_run.waits_for(deployment, stack_run.one(NETPOL, "sandbox-router")), "no unfenced router pod"


def test_api_server_address_is_read_from_the_cluster(stack_run: ProgramRun) -> None:
    (endpoint_slice,) = stack_run.of_type(ENDPOINT_SLICE)
    assert endpoint_slice.read and endpoint_slice.k8s_name == "default/kubernetes"
    assert stack_run.by_urn(endpoint_slice.parent).type == "agent-sandbox:index:SandboxRouter"


def test_router_reaches_sandbox_pods_dns_and_the_api_server_only(stack_run: ProgramRun) -> None:
    egress = router_policy(stack_run)["spec"]["egress"]
    # The SSRF targets of the review: the API server through its ClusterIP, kubelets, other pods.
    assert rules_admitting(egress, 443, ip="10.96.0.1") == []
    assert rules_admitting(egress, 443, ip="10.96.0.10") == []
    assert rules_admitting(egress, 10250, ip="172.18.0.2") == []
    assert rules_admitting(egress, 80, ip="169.254.169.254") == []
    assert rules_admitting(egress, 443, ip="93.184.216.34") == []
    assert rules_admitting(egress, 6443, ip="172.18.0.2") == [2]
    assert rules_admitting(egress, 8888, pod=(ns("agent-sandbox-demo"), SANDBOX_LABELS)) == [0]
    assert rules_admitting(egress, 9000, pod=(ns("agent-sandbox-demo"), SANDBOX_LABELS)) == []
    assert rules_admitting(egress, 8888, pod=(ns("agent-sandbox-demo"), {"app": "other"})) == []
    assert rules_admitting(egress, 8888, pod=(ns("default"), SANDBOX_LABELS)) == []
    assert rules_admitting(egress, 53, "UDP", pod=KUBE_DNS_POD) == [1]
    assert rules_admitting(egress, 9153, pod=KUBE_DNS_POD) == []
    assert rules_admitting(egress, 53, "UDP", ip="8.8.8.8") == []


def test_router_ingress_is_8080_from_clients_but_never_from_sandboxes(stack_run: ProgramRun) -> None:
    ingress = router_policy(stack_run)["spec"]["ingress"]
    client = ({"kubernetes.io/metadata.name": "ci"}, {"app": "agent"})
    assert rules_admitting(ingress, 8080, pod=client, peers_key="from") == [0]
    assert rules_admitting(ingress, 9090, pod=client, peers_key="from") == []
    sandbox = (ns("agent-sandbox-demo"), SANDBOX_LABELS)
    assert rules_admitting(ingress, 8080, pod=sandbox, peers_key="from") == []


def test_configured_api_server_endpoints_replace_the_read_and_nodes_may_call_in() -> None:
    run = run_program("gvisor", {"apiServerEndpoints": "192.168.49.2:8443,[fd00::2]:8443",
                                 "clusterNodeCidrs": "192.168.49.0/24", "clusterDnsAddresses": "169.254.20.10"})
    assert not run.of_type(ENDPOINT_SLICE)
    spec = router_policy(run)["spec"]
    assert spec["egress"][2] == {"to": [{"ipBlock": {"cidr": "192.168.49.2/32"}}, {"ipBlock": {"cidr": "fd00::2/128"}}],
                                 "ports": [{"protocol": "TCP", "port": 8443}]}
    assert spec["egress"][1]["to"][1] == {"ipBlock": {"cidr": "169.254.20.10/32"}}
    assert rules_admitting(spec["egress"], 53, "UDP", ip="169.254.20.10") == [1]
    assert rules_admitting(spec["egress"], 8443, ip="192.168.49.3") == []
    assert spec["ingress"][0]["from"][1:] == [{"ipBlock": {"cidr": "192.168.49.0/24"}}]
    assert rules_admitting(spec["ingress"], 8080, ip="192.168.49.1", peers_key="from") == [0]


def test_router_token_output_comes_from_the_stored_data() -> None:
    """stringData is not echoed back by the provider: on a later `up` it would be this run's
    generated (and ignored) token, not the one the pods read. The output decodes `data`."""
    import base64

    from agent_sandbox_pulumi.components.router import _token_from_data
    from agent_sandbox_pulumi.sandbox_iac import constants

    stored = {constants.ROUTER_TOKEN_SECRET_KEY: base64.b64encode(b"the-stored-token").decode()}
    assert _token_from_data(stored) == "the-stored-token"
    assert _token_from_data(None) == "" and _token_from_data({}) == ""


# ----------------------------------------------------------------------------- GOMAXPROCS follows the CPU limit

def test_the_compiled_router_runs_as_many_go_threads_as_its_cpu_limit_allows(stack_run: ProgramRun) -> None:
    assert router_env(stack_run)["GOMAXPROCS"] == {"name": "GOMAXPROCS", "value": "1"}  # the default limit: 1 CPU
    limits = router_pod_spec(stack_run)["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == "1"


@pytest.mark.parametrize("limit, expected", [("1", "1"), ("500m", "1"), ("1500m", "1"), (3, "3"), ("2.9", "2"),
                                             (None, None), ("", None), ("0", None), ("lots", None), (True, None)])
def test_gomaxprocs_is_the_whole_cores_of_the_limit(limit, expected) -> None:  # type: ignore[no-untyped-def]
    from agent_sandbox_pulumi.components.router import gomaxprocs_for

    assert gomaxprocs_for(limit) == expected
