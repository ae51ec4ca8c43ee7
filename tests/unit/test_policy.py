"""The policy pack without the Pulumi CLI: a table of violating resources (each rejected by the
expected policy with the expected message) and the project's own stacks (accepted), with the
real properties obtained by running ``__main__.py`` under Pulumi mocks.

``policy/__main__.py`` is never imported here: constructing a PolicyPack blocks forever."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import policies
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_template_spec, warm_pool_spec
from tests import pulumi_harness

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_TYPE = "kubernetes:extensions.agents.x-k8s.io/v1beta1:SandboxTemplate"
POOL_TYPE = "kubernetes:extensions.agents.x-k8s.io/v1beta1:SandboxWarmPool"
SANDBOX_TYPE = "kubernetes:agents.x-k8s.io/v1beta1:Sandbox"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
SERVICE_TYPE = "kubernetes:core/v1:Service"
NETPOL_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PREBUILT = {"imageBuild": "prebuilt", "sandboxImage": "agent-sandbox/runtime:0123456789ab",
            "routerImage": "agent-sandbox/router:0123456789ab"}
POLICIES_BY_NAME = {p.name: p for p in policies.RESOURCE_POLICIES}


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], False, [], PolicyCustomTimeouts(0, 0, 0), [])


def engine_props(props: dict[str, Any]) -> Any:
    """Properties as the engine hands them to a policy: secrets unwrapped, unknowns guarded."""
    return unknown_checking_proxy(deserialize_properties(copy.deepcopy(props)))


def violations(resource_type: str, props: dict[str, Any],
               config: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, list[str]]:
    """{policy name: messages} of every resource policy that rejects the resource."""
    found: dict[str, list[str]] = {}
    as_engine = engine_props(props)
    for policy in policies.RESOURCE_POLICIES:
        messages: list[str] = []
        args = ResourceValidationArgs(resource_type, as_engine, f"urn:pulumi:t::p::{resource_type}::x",
                                      "x", _opts(), None, (config or {}).get(policy.name) or {})
        policy.validate(args, lambda message, urn=None: messages.append(message))
        if messages:
            found[policy.name] = messages
    return found


def stack_violations(resources: list[tuple[str, dict[str, Any]]],
                     config: Optional[dict[str, Any]] = None) -> list[str]:
    policy_resources = [
        PolicyResource(rtype, engine_props(props), f"urn:pulumi:t::p::{rtype}::r{i}", f"r{i}", _opts(), None, None, [], {})
        for i, (rtype, props) in enumerate(resources)
    ]
    messages: list[str] = []
    policies.STACK_POLICY.validate(StackValidationArgs(policy_resources, config or {}),
                                   lambda message, urn=None: messages.append(message))
    return messages


# ----------------------------------------------------------------------------- good baselines

CONFIG = parse_stack_config(PREBUILT, "test")


def good_template() -> dict[str, Any]:
    spec = sandbox_template_spec(CONFIG, PREBUILT["sandboxImage"])
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
            "metadata": {"name": CONFIG.template_name, "namespace": CONFIG.sandbox_namespace}, "spec": spec}


def good_pool() -> dict[str, Any]:
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": CONFIG.warm_pool_name, "namespace": CONFIG.sandbox_namespace},
            "spec": warm_pool_spec(CONFIG)}


def good_router() -> dict[str, Any]:
    container = {
        "name": "router", "image": PREBUILT["routerImage"],
        "env": [{"name": "ROUTER_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "sandbox-router-auth", "key": "token"}}},
                {"name": "ROUTER_RESOLVER", "value": "watch"},
                {"name": "ROUTER_ALLOWED_POD_CIDRS", "value": "10.244.0.0/16"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "sandbox-router-deployment", "namespace": "agent-sandbox-system"},
            "spec": {"selector": {"matchLabels": {"app": "sandbox-router"}},
                     "template": {"metadata": {"labels": {"app": "sandbox-router"}},
                                  "spec": {"containers": [container]}}}}


def good_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "sandbox-router-svc", "namespace": "agent-sandbox-system"},
            "spec": {"type": "ClusterIP", "selector": {"app": "sandbox-router"}, "ports": [{"port": 8080}]}}


def good_router_policy() -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "sandbox-router", "namespace": "agent-sandbox-system"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "sandbox-router"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}],
                "egress": [
                    {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agent-sandbox-demo"}},
                             "podSelector": {"matchLabels": {"app": "agent-sandbox-runtime"}}}],
                     "ports": [{"protocol": "TCP", "port": 8888}]},
                    {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                    {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]},
                ],
            }}


def internet_rule(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["networkPolicy"]["egress"][0]


def drop_except(props: dict[str, Any], peer: int, cidr: str) -> None:
    block = internet_rule(props)["to"][peer]["ipBlock"]
    block["except"] = [c for c in block["except"] if c != cidr]


def router_netpol_egress(props: dict[str, Any]) -> list[dict[str, Any]]:
    return props["spec"]["egress"]


def router_env_of(props: dict[str, Any]) -> list[dict[str, Any]]:
    return props["spec"]["template"]["spec"]["containers"][0]["env"]


def container_of(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["podTemplate"]["spec"]["containers"][0]


def pod_of(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["podTemplate"]["spec"]


def mutated(base: Callable[[], dict[str, Any]], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    props = base()
    change(props)
    return props


# ----------------------------------------------------------------------------- the violation table

VIOLATIONS: list[tuple[str, str, dict[str, Any], str, str]] = [
    # (case id, resource type, props, expected policy, expected message fragment)
    ("runtime-class-missing", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).pop("runtimeClassName")),
     "sandbox-runtime-class", "runtimeClassName is not set"),
    ("runtime-class-runc", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(runtimeClassName="runc")),
     "sandbox-runtime-class", "is 'runc': no isolation"),
    ("runtime-class-unknown", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(runtimeClassName="crun")),
     "sandbox-runtime-class", "'crun', which is not an allowed isolating runtime"),
    ("privileged", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p)["securityContext"].update(privileged=True)),
     "sandbox-no-privileged", "is privileged"),
    ("privilege-escalation", SANDBOX_TYPE,
     mutated(good_template, lambda p: container_of(p)["securityContext"].update(allowPrivilegeEscalation=True)),
     "sandbox-no-privileged", "allowPrivilegeEscalation: true"),
    ("host-network", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(hostNetwork=True)),
     "sandbox-no-host-namespaces", "hostNetwork is true"),
    ("host-pid", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(hostPID=True)),
     "sandbox-no-host-namespaces", "hostPID is true"),
    ("host-ipc", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(hostIPC=True)),
     "sandbox-no-host-namespaces", "hostIPC is true"),
    ("host-port", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p)["ports"][0].update(hostPort=8888)),
     "sandbox-no-host-ports", "maps hostPort 8888"),
    ("host-path", TEMPLATE_TYPE,
     mutated(good_template, lambda p: pod_of(p)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}})),
     "sandbox-no-host-paths", "volume 'docker' is a hostPath (/var/run)"),
    ("capability-added", TEMPLATE_TYPE,
     mutated(good_template, lambda p: container_of(p)["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
     "sandbox-capabilities", "adds capabilities ['NET_ADMIN']"),
    ("drop-all-missing", TEMPLATE_TYPE,
     mutated(good_template, lambda p: container_of(p)["securityContext"]["capabilities"].update(drop=["NET_RAW"])),
     "sandbox-capabilities", "does not drop ALL capabilities"),
    ("token-automount-unset", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).pop("automountServiceAccountToken")),
     "sandbox-no-service-account-token", "automountServiceAccountToken is not false"),
    ("token-automount-true", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p).update(automountServiceAccountToken=True)),
     "sandbox-no-service-account-token", "could read a service-account token"),
    ("token-projected", TEMPLATE_TYPE, mutated(good_template, lambda p: pod_of(p)["volumes"].append(
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}})),
     "sandbox-no-service-account-token", "volume 'tok' projects a serviceAccountToken"),
    ("no-cpu-limit", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p)["resources"]["limits"].pop("cpu")),
     "sandbox-resource-limits", "has no cpu limit"),
    ("no-limits", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p)["resources"].pop("limits")),
     "sandbox-resource-limits", "has no cpu and memory limit"),
    ("root-user", TEMPLATE_TYPE, mutated(good_template, lambda p: (
        pod_of(p)["securityContext"].pop("runAsNonRoot"), container_of(p)["securityContext"].pop("runAsNonRoot"))),
     "sandbox-run-as-non-root", "does not set runAsNonRoot: true"),
    ("run-as-uid-0", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p)["securityContext"].update(runAsUser=0)),
     "sandbox-run-as-non-root", "sets runAsUser: 0"),
    ("egress-to-metadata", TEMPLATE_TYPE, mutated(good_template, lambda p: p["spec"]["networkPolicy"]["egress"][0]["to"][0]
                                                  ["ipBlock"].update({"except": ["10.0.0.0/8"]})),
     "sandbox-network-policy", "includes the metadata address 169.254.169.254"),
    ("egress-allow-all", TEMPLATE_TYPE, mutated(good_template, lambda p: p["spec"]["networkPolicy"]["egress"].append(
        {"ports": [{"port": 80, "protocol": "TCP"}]})),
     "sandbox-network-policy", "egress[2] has no 'to', so it allows every destination"),
    # Issue 11, item 5: the template's egress never reaches cluster, private or reserved ranges.
    ("egress-private-range", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 0, "10.0.0.0/8")),
     "sandbox-network-policy", "ipBlock 0.0.0.0/0 allows 10.0.0.0/8 (private"),
    ("egress-this-network", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 0, "0.0.0.0/8")),
     "sandbox-network-policy", "allows 0.0.0.0/8"),
    ("egress-benchmark-range", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 0, "198.18.0.0/15")),
     "sandbox-network-policy", "allows 198.18.0.0/15"),
    ("egress-ipv6-ula", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 1, "fc00::/7")),
     "sandbox-network-policy", "ipBlock ::/0 allows fc00::/7"),
    ("egress-nat64", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 1, "64:ff9b::/96")),
     "sandbox-network-policy", "allows 64:ff9b::/96"),
    ("egress-6to4", TEMPLATE_TYPE, mutated(good_template, lambda p: drop_except(p, 1, "2002::/16")),
     "sandbox-network-policy", "allows 2002::/16"),
    ("egress-public-dns", TEMPLATE_TYPE, mutated(good_template, lambda p: internet_rule(p).pop("ports", None)),
     "sandbox-network-policy", "opens port 53"),
    ("egress-public-resolver", TEMPLATE_TYPE, mutated(good_template, lambda p: p["spec"]["networkPolicy"]["egress"].append(
        {"to": [{"ipBlock": {"cidr": "8.8.8.8/32"}}], "ports": [{"protocol": "UDP", "port": 53}]})),
     "sandbox-network-policy", "opens port 53 to 8.8.8.8/32"),
    ("egress-cluster-pods", TEMPLATE_TYPE, mutated(good_template, lambda p: p["spec"]["networkPolicy"]["egress"].append(
        {"to": [{"namespaceSelector": {}, "podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]})),
     "sandbox-network-policy", "egress[2].to[0] selects pods"),
    ("bad-management", TEMPLATE_TYPE, mutated(good_template, lambda p: p["spec"].update(networkPolicyManagement="Off")),
     "sandbox-network-policy", "networkPolicyManagement is 'Off'"),
    ("netpol-metadata", NETPOL_TYPE, {"metadata": {"name": "open"}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}]}},
     "network-policy-metadata-egress", "ipBlock 169.254.0.0/16 includes the metadata address"),
    ("router-root", DEPLOYMENT_TYPE, mutated(good_router, lambda p: p["spec"]["template"]["spec"]["containers"][0]
                                             ["securityContext"].pop("runAsNonRoot")),
     "router-non-root", "router Deployment sandbox-router-deployment: containers[0] (router) does not set runAsNonRoot"),
    ("router-no-probes", DEPLOYMENT_TYPE, mutated(good_router, lambda p: p["spec"]["template"]["spec"]["containers"][0]
                                                  .pop("livenessProbe")),
     "router-probes", "has no livenessProbe"),
    ("router-no-token", DEPLOYMENT_TYPE, mutated(good_router, lambda p: router_env_of(p).pop(0)),
     "router-auth-token", "has no ROUTER_AUTH_TOKEN"),
    ("router-unauthenticated", DEPLOYMENT_TYPE, mutated(good_router, lambda p: p["spec"]["template"]["spec"]
                                                        ["containers"][0]["env"].append(
                                                            {"name": "ALLOW_UNAUTHENTICATED_ROUTER", "value": "true"})),
     "router-auth-token", "ALLOW_UNAUTHENTICATED_ROUTER=true"),
    # Issue 11, item 1: the router resolves sandboxes only and is fenced by its own NetworkPolicy.
    ("router-resolver-unset", DEPLOYMENT_TYPE, mutated(good_router, lambda p: router_env_of(p).pop(1)),
     "router-sandbox-only", "does not set ROUTER_RESOLVER=watch"),
    ("router-any-address", DEPLOYMENT_TYPE, mutated(good_router, lambda p: router_env_of(p).pop(2)),
     "router-sandbox-only", "has no ROUTER_ALLOWED_POD_CIDRS"),
    ("router-netpol-range", NETPOL_TYPE, mutated(good_router_policy, lambda p: router_netpol_egress(p).append(
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 443}]})),
     "router-network-policy", "egress[3].to[0] ipBlock 10.0.0.0/8 is a range"),
    ("router-netpol-all-ports", NETPOL_TYPE, mutated(good_router_policy, lambda p: router_netpol_egress(p)[0].pop("ports")),
     "router-network-policy", "egress[0] opens every port"),
    ("router-netpol-all-pods", NETPOL_TYPE, mutated(good_router_policy, lambda p: router_netpol_egress(p)[0]["to"][0]
                                                    .update(namespaceSelector={})),
     "router-network-policy", "egress[0].to[0] selects pods of every namespace"),
    ("router-netpol-own-namespace", NETPOL_TYPE, mutated(good_router_policy, lambda p: router_netpol_egress(p)[0]["to"][0]
                                                         .pop("namespaceSelector")),
     "router-network-policy", "selects pods of the router's own namespace"),
    ("router-netpol-ingress-only", NETPOL_TYPE, mutated(good_router_policy, lambda p: p["spec"].update(
        policyTypes=["Ingress"])),
     "router-network-policy", "does not restrict Egress"),
    ("router-loadbalancer", SERVICE_TYPE, mutated(good_service, lambda p: p["spec"].update(type="LoadBalancer")),
     "router-not-exposed", "is of type LoadBalancer"),
    ("router-nodeport", SERVICE_TYPE, mutated(good_service, lambda p: p["spec"].update(type="NodePort")),
     "router-not-exposed", "is of type NodePort"),
    ("image-latest", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p).update(image="agent-sandbox/runtime:latest")),
     "images-pinned", "uses the mutable tag 'latest'"),
    ("image-tagless", DEPLOYMENT_TYPE, mutated(good_router, lambda p: p["spec"]["template"]["spec"]["containers"][0]
                                               .update(image="registry.local:5000/router")),
     "images-pinned", "has no tag, which means ':latest'"),
    ("image-latest-main", TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p).update(
        image="us-central1-docker.pkg.dev/k8s-staging-images/agent-sandbox/python-runtime-sandbox:latest-main")),
     "images-pinned", "mutable tag 'latest-main'"),
    ("pool-too-big", POOL_TYPE, mutated(good_pool, lambda p: p["spec"].update(replicas=500)),
     "warm-pool-max-replicas", "spec.replicas 500 exceeds the maximum 20"),
]


@pytest.mark.parametrize("case,resource_type,props,policy_name,fragment", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violating_resource_is_rejected_by_the_expected_policy(case, resource_type, props, policy_name, fragment):
    found = violations(resource_type, props)
    assert set(found) == {policy_name}, f"{case}: expected only {policy_name}, got {found}"
    assert any(fragment in message for message in found[policy_name]), found[policy_name]
    # Every message explains the risk and the fix, not just the rule.
    assert all("Fix:" in message for message in found[policy_name])


def test_table_is_large_and_covers_every_resource_policy():
    assert len(VIOLATIONS) >= 15
    assert {v[3] for v in VIOLATIONS} == set(POLICIES_BY_NAME)


@pytest.mark.parametrize("resource_type,base", [
    (TEMPLATE_TYPE, good_template), (SANDBOX_TYPE, good_template), (POOL_TYPE, good_pool),
    (DEPLOYMENT_TYPE, good_router), (SERVICE_TYPE, good_service), (NETPOL_TYPE, good_router_policy),
])
def test_hardened_baselines_are_accepted(resource_type, base):
    assert violations(resource_type, base()) == {}


def test_policy_config_relaxes_only_what_it_names():
    runc = mutated(good_template, lambda p: pod_of(p).update(runtimeClassName="runc"))
    assert violations(TEMPLATE_TYPE, runc, {"sandbox-runtime-class": {"allowInsecureRunc": True}}) == {}
    kata = mutated(good_template, lambda p: pod_of(p).update(runtimeClassName="kata-clh"))
    assert violations(TEMPLATE_TYPE, kata) == {}
    assert "sandbox-runtime-class" in violations(TEMPLATE_TYPE, kata, {
        "sandbox-runtime-class": {"allowedRuntimeClasses": ["gvisor"]}})
    lb = mutated(good_service, lambda p: p["spec"].update(type="LoadBalancer"))
    assert violations(SERVICE_TYPE, lb, {"router-not-exposed": {"allowRouterExposure": True}}) == {}
    pool = mutated(good_pool, lambda p: p["spec"].update(replicas=30))
    assert violations(POOL_TYPE, pool, {"warm-pool-max-replicas": {"maxReplicas": 50}}) == {}
    assert "warm-pool-max-replicas" in violations(POOL_TYPE, pool, {"warm-pool-max-replicas": {"maxReplicas": 5}})


def test_template_egress_policy_knows_the_cluster_ranges_from_its_config():
    config = parse_stack_config({**PREBUILT, "clusterPodCidrs": "11.0.0.0/16"}, "test")
    template = {**good_template(), "spec": sandbox_template_spec(config, PREBUILT["sandboxImage"])}
    assert violations(TEMPLATE_TYPE, template) == {}
    leaky = mutated(lambda: copy.deepcopy(template), lambda p: drop_except(p, 0, "11.0.0.0/16"))
    assert violations(TEMPLATE_TYPE, leaky) == {}  # 11/16 is public unicast unless the pack is told otherwise
    found = violations(TEMPLATE_TYPE, leaky, {"sandbox-network-policy": {"clusterCidrs": ["11.0.0.0/16"]}})
    assert set(found) == {"sandbox-network-policy"}
    assert any("allows 11.0.0.0/16 (a cluster range" in m for m in found["sandbox-network-policy"])


@pytest.mark.parametrize("raw", [
    {"sandboxEgress": "none"},
    {"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "0.0.0.0/0", "ports": [443]},
                                                          {"cidr": "2a04:4e42::/32", "ports": ["8000-8100"]}]},
    {"clusterDnsAddresses": "169.254.20.10,10.96.0.10"},
])
def test_every_egress_mode_the_program_renders_passes(raw):
    config = parse_stack_config({**PREBUILT, **raw}, "test")
    template = {**good_template(), "spec": sandbox_template_spec(config, PREBUILT["sandboxImage"])}
    assert violations(TEMPLATE_TYPE, template) == {}


def test_digest_pinned_latest_and_registry_ports_are_understood():
    digest = "agent-sandbox/runtime:latest@sha256:" + "a" * 64
    assert violations(TEMPLATE_TYPE, mutated(good_template, lambda p: container_of(p).update(image=digest))) == {}
    assert policies.image_tag("registry.local:5000/team/img") == (None, None)
    assert policies.image_tag("registry.local:5000/team/img:1.2") == ("1.2", None)


def test_unmanaged_policy_defaults_and_unrelated_resources():
    omitted = mutated(good_template, lambda p: p["spec"].pop("networkPolicy"))
    assert violations(TEMPLATE_TYPE, omitted) == {}  # the controller's default policy excludes 169.254.0.0/16
    other = {"metadata": {"name": "web"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                                                "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}}
    assert violations(DEPLOYMENT_TYPE, other) == {}  # router rules apply to the router only


def test_unknown_values_during_preview_raise_for_the_engine_to_report():
    props = mutated(good_template, lambda p: pod_of(p).update(runtimeClassName=UNKNOWN_STRING_VALUE))
    args = ResourceValidationArgs(TEMPLATE_TYPE, engine_props(props), "urn", "x", _opts(), None, {})
    with pytest.raises(UnknownValueError):
        POLICIES_BY_NAME["sandbox-runtime-class"].validate(args, lambda m, u=None: None)


# ----------------------------------------------------------------------------- stack policy

def good_stack() -> list[tuple[str, dict[str, Any]]]:
    return [(TEMPLATE_TYPE, good_template()), (POOL_TYPE, good_pool()),
            (DEPLOYMENT_TYPE, good_router()), (SERVICE_TYPE, good_service()), (NETPOL_TYPE, good_router_policy())]


def test_stack_policy_accepts_a_complete_stack():
    assert stack_violations(good_stack()) == []


@pytest.mark.parametrize("case,change,fragment", [
    ("template-without-pool", lambda rs: [r for r in rs if r[0] != POOL_TYPE],
     "SandboxTemplate python-sandbox-template is not referenced by any SandboxWarmPool"),
    ("pool-to-unknown-template", lambda rs: rs + [(POOL_TYPE, mutated(good_pool, lambda p: (
        p["metadata"].update(name="other"), p["spec"]["sandboxTemplateRef"].update(name="ghost"))))],
     "references SandboxTemplate 'ghost', which this stack does not declare"),
    ("no-router-deployment", lambda rs: [r for r in rs if r[0] != DEPLOYMENT_TYPE], "The stack has no router Deployment"),
    ("no-router-service", lambda rs: [r for r in rs if r[0] != SERVICE_TYPE], "The stack has no router Service"),
    ("no-router-netpol", lambda rs: [r for r in rs if r[0] != NETPOL_TYPE],
     "The stack has no NetworkPolicy for the router pods"),
    ("router-netpol-elsewhere", lambda rs: [r for r in rs if r[0] != NETPOL_TYPE] + [(NETPOL_TYPE, mutated(
        good_router_policy, lambda p: p["metadata"].update(namespace="default")))],
     "The stack has no NetworkPolicy for the router pods"),
    ("unmanaged-without-netpol", lambda rs: [(t, mutated(lambda: p, lambda x: x["spec"].update(
        networkPolicyManagement="Unmanaged")) if t == TEMPLATE_TYPE else p) for t, p in rs],
     "networkPolicyManagement: Unmanaged but the stack declares no NetworkPolicy"),
])
def test_stack_policy_rejects_incomplete_stacks(case, change, fragment):
    messages = stack_violations(change(good_stack()))
    assert any(fragment in m for m in messages), messages
    assert all("Fix:" in m for m in messages)


def test_stack_policy_accepts_unmanaged_template_with_explicit_policy():
    resources = [(t, mutated(lambda: p, lambda x: x["spec"].update(networkPolicyManagement="Unmanaged"))
                  if t == TEMPLATE_TYPE else p) for t, p in good_stack()]
    netpol = {"metadata": {"name": "sandboxes", "namespace": CONFIG.sandbox_namespace},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": []}}
    assert stack_violations(resources + [(NETPOL_TYPE, netpol)]) == []


def test_stack_policy_tolerates_unknown_names():
    resources = good_stack()
    resources[0][1]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    resources[1][1]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    assert stack_violations(resources) == []


# ----------------------------------------------------------------------------- the project's own stacks

@pytest.fixture(scope="module")
def gvisor_prebuilt_run():
    return pulumi_harness.run_program("gvisor", PREBUILT)


@pytest.fixture(scope="module")
def existing_prebuilt_run():
    return pulumi_harness.run_program("existing", {**PREBUILT, "imageRegistry": "localhost:5001/agent-sandbox"})


@pytest.fixture(params=["gvisor_run", "kata_run", "gvisor_prebuilt_run", "existing_prebuilt_run"])
def program_run(request):
    """The project's stacks as their stack files declare them (images built with pulumi-docker),
    gvisor with prebuilt image refs and the local e2e stack (existing cluster, preloaded images);
    the first two come from conftest."""
    return request.getfixturevalue(request.param)


def test_project_stack_passes_every_resource_policy(program_run):
    custom = [r for r in program_run.resources if r.custom]
    assert any(policies.SANDBOX_TEMPLATE_TYPE.match(r.type) for r in custom), "the program declares a SandboxTemplate"
    rejected = {r.urn: v for r in custom if (v := violations(r.type, r.inputs))}
    assert rejected == {}


def test_project_stack_passes_the_stack_policy(program_run):
    resources = [(r.type, r.inputs) for r in program_run.resources if r.custom]
    assert stack_violations(resources) == []


def test_project_runc_stack_is_rejected_unless_the_policy_allows_it():
    run = pulumi_harness.run_program("gvisor", {**PREBUILT, "runtime": "runc", "allowInsecureRunc": "true"})
    template = next(r for r in run.resources if policies.SANDBOX_TEMPLATE_TYPE.match(r.type))
    assert set(violations(template.type, template.inputs)) == {"sandbox-runtime-class"}
    assert violations(template.type, template.inputs, {"sandbox-runtime-class": {"allowInsecureRunc": True}}) == {}


# ----------------------------------------------------------------------------- the pack itself

def test_pack_entry_point_serves_every_policy_as_mandatory():
    """Checked from the source: importing __main__ would start the (blocking) PolicyPack."""
    tree = ast.parse((REPO_ROOT / "policy" / "__main__.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PolicyPack"]
    assert len(calls) == 1
    keywords = {k.arg: ast.unparse(k.value) for k in calls[0].keywords}
    assert keywords["policies"] == "ALL_POLICIES"
    assert keywords["enforcement_level"] == "EnforcementLevel.MANDATORY"


def test_policy_names_are_unique_and_described():
    names = [p.name for p in policies.ALL_POLICIES]
    assert len(names) == len(set(names))
    assert all(p.description for p in policies.ALL_POLICIES)


def test_an_autoscaler_on_a_warm_pool_stays_within_the_replica_maximum():
    from agent_sandbox_pulumi.sandbox_iac.autoscaling import Autoscaling, scaled_object_spec

    scaled_type = "kubernetes:keda.sh/v1alpha1:ScaledObject"

    def scaled(most: int, kind: str = "SandboxWarmPool") -> dict[str, Any]:
        spec = scaled_object_spec(Autoscaling(1, most, 1, 60), pool_api_version="extensions.agents.x-k8s.io/v1beta1",
                                  pool_name="pool", pod_labels={"app": "agent-sandbox-runtime"})
        spec["scaleTargetRef"]["kind"] = kind
        return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "pool", "namespace": "demo"}, "spec": spec}

    assert violations(scaled_type, scaled(20)) == {}
    assert violations(scaled_type, scaled(21))["warm-pool-max-replicas"] == [
        "ScaledObject pool: maxReplicaCount 21 exceeds the maximum 20: the autoscaler could hold that many warm "
        "sandboxes' requests at once. Fix: set agent-sandbox:warmPoolMaxReplicas <= 20, or raise the policy config "
        "maxReplicas."]
    assert violations(scaled_type, scaled(21), {"warm-pool-max-replicas": {"maxReplicas": 30}}) == {}
    # a ScaledObject on anything else is not this policy's business
    assert violations(scaled_type, scaled(500, kind="Deployment")) == {}
