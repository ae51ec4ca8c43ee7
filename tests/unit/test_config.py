"""Stack configuration: defaults, derived values and one clear message per bad value."""

from __future__ import annotations

import pytest
import yaml

from agent_sandbox_pulumi.sandbox_iac.config import (
    AUTOSCALING_KEYS,
    CONFIG_KEYS,
    ApiServerEndpoint,
    ConfigError,
    EgressAllowRule,
    PortRange,
    parse_stack_config,
)
from tests.pulumi_harness import REPO_ROOT


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, "test")
    return caught.value.problems


def test_minimal_config_gives_the_documented_defaults() -> None:
    config = parse_stack_config({}, "gvisor")
    assert config.cluster_flavour == "kind"
    assert config.runtime == "gvisor" and config.runtime_handler == "runsc"
    assert config.kube_context == "kind-agent-sandbox"
    assert config.sandbox_namespace == "agent-sandbox-demo"
    assert config.sandbox_port == 8888
    assert config.warm_pool_replicas == 2 and config.router_replicas == 2
    assert config.sandbox_resources.requests == {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "512Mi"}
    assert config.sandbox_resources.limits == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert config.image_load_strategy == "kind" and config.image_pull_policy == "Never"
    assert config.router_auth_token is None


def test_network_defaults_follow_the_cluster() -> None:
    kind = parse_stack_config({}, "gvisor")
    assert kind.sandbox_egress == "internet" and kind.sandbox_egress_allow == ()
    # KIND's podSubnet/serviceSubnet (our cluster config leaves networking at kind's defaults).
    assert kind.cluster_pod_cidrs == ("10.244.0.0/16",) and kind.cluster_service_cidrs == ("10.96.0.0/16",)
    assert kind.cluster_node_cidrs == () and kind.cluster_dns_addresses == ()
    # The router is confined to pod IPs by default, no longer "any unicast address".
    assert kind.router_allowed_pod_cidrs == ("10.244.0.0/16",)
    assert kind.router_sandbox_namespaces == ("agent-sandbox-demo",)
    assert kind.api_server_endpoints == ()
    minikube = parse_stack_config({"clusterFlavour": "minikube", "sandboxNamespace": "sb"}, "kata")
    assert minikube.cluster_pod_cidrs == ("10.244.0.0/16",) and minikube.cluster_service_cidrs == ("10.96.0.0/12",)
    assert minikube.router_sandbox_namespaces == ("sb",)


def test_network_keys_parse_lists_and_json() -> None:
    config = parse_stack_config({
        "clusterPodCidrs": '["10.244.0.0/16", "fd00:10:244::/56"]',
        "clusterServiceCidrs": "10.96.0.0/16, fd00:10:96::/112",
        "clusterNodeCidrs": ["172.18.0.0/16"],
        "clusterDnsAddresses": "169.254.20.10",
        "routerSandboxNamespaces": "agent-sandbox-demo,team-b",
        "apiServerEndpoints": "172.18.0.2:6443,[fd00::2]:6443,10.0.0.0/28:443",
        "sandboxEgress": "allowList",
        "sandboxEgressAllow": '[{"cidr": "151.101.0.0/16", "ports": [443, "8000-8100"]}, '
                              '{"cidr": "2a04:4e42::/32", "ports": [443], "protocol": "UDP"}]',
    }, "s")
    assert config.cluster_pod_cidrs == ("10.244.0.0/16", "fd00:10:244::/56")
    assert config.router_allowed_pod_cidrs == ("10.244.0.0/16", "fd00:10:244::/56")
    assert config.cluster_service_cidrs == ("10.96.0.0/16", "fd00:10:96::/112")
    assert config.cluster_node_cidrs == ("172.18.0.0/16",)
    assert config.cluster_dns_addresses == ("169.254.20.10",)
    assert config.router_sandbox_namespaces == ("agent-sandbox-demo", "team-b")
    assert config.api_server_endpoints == (ApiServerEndpoint("172.18.0.2/32", 6443),
                                           ApiServerEndpoint("fd00::2/128", 6443),
                                           ApiServerEndpoint("10.0.0.0/28", 443))
    assert config.sandbox_egress_allow == (
        EgressAllowRule("151.101.0.0/16", (PortRange("TCP", 443), PortRange("TCP", 8000, 8100))),
        EgressAllowRule("2a04:4e42::/32", (PortRange("UDP", 443),)),
    )


@pytest.mark.parametrize("stack", ["gvisor", "kata"])
def test_stack_files_are_valid_and_hold_only_known_keys(stack: str) -> None:
    data = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in data.items()}
    config = parse_stack_config(raw, stack)
    assert config.runtime == {"gvisor": "gvisor", "kata": "kata-qemu"}[stack]


def test_flavour_derives_context_and_load_strategy() -> None:
    minikube = parse_stack_config({"clusterFlavour": "minikube", "clusterName": "demo"}, "s")
    assert (minikube.kube_context, minikube.image_load_strategy) == ("demo", "minikube")
    existing = parse_stack_config({"clusterFlavour": "existing", "imageLoadStrategy": "containerd"}, "s")
    assert existing.kube_context is None and existing.image_pull_policy == "Never"
    pushed = parse_stack_config({"clusterFlavour": "existing", "imageRegistry": "reg.example/team"}, "s")
    assert pushed.image_load_strategy == "registry" and pushed.image_pull_policy == "IfNotPresent"


def test_runc_needs_the_explicit_insecure_flag() -> None:
    config = parse_stack_config({"runtime": "runc", "allowInsecureRunc": "true"}, "dev")
    assert config.runtime == "runc" and config.runtime_handler == "runc"


def test_warm_pool_of_zero_is_allowed() -> None:
    assert parse_stack_config({"warmPoolReplicas": "0"}, "s").warm_pool_replicas == 0


def test_partial_resources_are_merged_with_defaults() -> None:
    config = parse_stack_config({"sandboxResources": '{"limits": {"cpu": "2"}}'}, "s")
    assert config.sandbox_resources.limits == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "1Gi"}


FIX = "fix: pulumi config set agent-sandbox:"
PATH_FIX = "fix: pulumi config set --path 'agent-sandbox:sandboxEgressAllow"
ALLOW_EXAMPLE = '[{"cidr": "151.101.0.0/16", "ports": [443]}]'
INVALID = [
    ({"clusterFlavour": "k3d"},
     "agent-sandbox:clusterFlavour = 'k3d' is invalid: allowed values are 'kind', 'minikube', 'existing' "
     f"({FIX}clusterFlavour kind)"),
    ({"runtime": "gvisorr"},
     f"agent-sandbox:runtime = 'gvisorr' is invalid: allowed values are 'gvisor', 'kata-qemu' ({FIX}runtime gvisor)"),
    ({"runtime": "runc"},
     "agent-sandbox:runtime = 'runc' is invalid: 'runc' gives no isolation and needs "
     "agent-sandbox:allowInsecureRunc=true (development only); allowed values are 'gvisor', 'kata-qemu' "
     f"({FIX}runtime gvisor)"),
    ({"runtime": "kata-qemu"},
     "agent-sandbox:runtime = 'kata-qemu' is invalid: 'kata-qemu' needs a VM-capable node: use clusterFlavour "
     f"'minikube' or 'existing' ({FIX}runtime gvisor)"),
    ({"allowInsecureRunc": "yes"},
     f"agent-sandbox:allowInsecureRunc = 'yes' is invalid: allowed values are 'true', 'false' ({FIX}allowInsecureRunc true)"),
    ({"sandboxNamespace": "Agent_Sandbox"},
     "agent-sandbox:sandboxNamespace = 'Agent_Sandbox' is invalid: allowed values are DNS-1123 names (lower-case "
     f"letters, digits and '-', at most 63 characters) ({FIX}sandboxNamespace agent-sandbox-demo)"),
    ({"templateName": "x" * 64},
     f"agent-sandbox:templateName = '{'x' * 64}' is invalid: allowed values are DNS-1123 names (lower-case "
     f"letters, digits and '-', at most 63 characters) ({FIX}templateName python-sandbox-template)"),
    ({"warmPoolReplicas": "-1"},
     f"agent-sandbox:warmPoolReplicas = '-1' is invalid: allowed values are integers from 0 to 1000 ({FIX}warmPoolReplicas 2)"),
    ({"warmPoolReplicas": "two"},
     f"agent-sandbox:warmPoolReplicas = 'two' is invalid: allowed values are integers from 0 to 1000 ({FIX}warmPoolReplicas 2)"),
    ({"routerReplicas": "0"},
     f"agent-sandbox:routerReplicas = '0' is invalid: allowed values are integers from 1 to 100 ({FIX}routerReplicas 2)"),
    ({"sandboxPort": "70000"},
     f"agent-sandbox:sandboxPort = '70000' is invalid: allowed values are integers from 1 to 65535 ({FIX}sandboxPort 8888)"),
    ({"imageLoadStrategy": "scp"},
     "agent-sandbox:imageLoadStrategy = 'scp' is invalid: allowed values are 'kind', 'minikube', 'containerd', "
     f"'registry', 'preloaded' ({FIX}imageLoadStrategy kind)"),
    ({"imageLoadStrategy": "minikube"},
     "agent-sandbox:imageLoadStrategy = 'minikube' is invalid: 'minikube' only works with clusterFlavour 'minikube'; "
     f"for 'kind' use 'kind', 'containerd', 'registry' or 'preloaded' ({FIX}imageLoadStrategy kind)"),
    ({"clusterFlavour": "existing"},
     "agent-sandbox:imageRegistry is not set: imageLoadStrategy 'registry' needs a registry prefix to push to "
     f"(or use imageLoadStrategy 'containerd' / 'preloaded') ({FIX}imageRegistry registry.example.com/team)"),
    ({"imageBuild": "podman"},
     f"agent-sandbox:imageBuild = 'podman' is invalid: allowed values are 'docker', 'prebuilt' ({FIX}imageBuild docker)"),
    ({"imageBuild": "prebuilt", "routerImage": "agent-sandbox/router:1"},
     "agent-sandbox:sandboxImage is not set: imageBuild 'prebuilt' needs both image refs (`make images` "
     f"prints them) ({FIX}sandboxImage agent-sandbox/runtime:<tag>)"),
    ({"sandboxImage": "agent-sandbox/runtime:latest"},
     "agent-sandbox:sandboxImage = 'agent-sandbox/runtime:latest' is invalid: expected an image reference with a tag "
     f"or digest other than 'latest' ({FIX}sandboxImage example.org/img:1.0)"),
    ({"routerImage": "agent-sandbox/router"},
     "agent-sandbox:routerImage = 'agent-sandbox/router' is invalid: expected an image reference with a tag "
     f"or digest other than 'latest' ({FIX}routerImage example.org/img:1.0)"),
    ({"imageVariant": "tiny"},
     f"agent-sandbox:imageVariant = 'tiny' is invalid: allowed values are 'full', 'minimal' ({FIX}imageVariant full)"),
    ({"routerImplementation": "rust"},
     f"agent-sandbox:routerImplementation = 'rust' is invalid: allowed values are 'compiled', 'python' "
     f"({FIX}routerImplementation compiled)"),
    ({"routerAuthToken": "short"},
     "agent-sandbox:routerAuthToken = <secret> is invalid: the token must be at least 16 characters (or unset to "
     f"generate one) ({FIX}routerAuthToken --secret \"$(openssl rand -hex 24)\")"),
    ({"sandboxResources": {"limits": {"cpu": "lots"}}},
     "agent-sandbox:sandboxResources.limits.cpu = 'lots' is invalid: expected a Kubernetes quantity such as 500m "
     "(fix: pulumi config set --path agent-sandbox:sandboxResources.limits.cpu 500m)"),
    ({"sandboxResources": {"requests": {"memory": "512MB"}}},
     "agent-sandbox:sandboxResources.requests.memory = '512MB' is invalid: expected a Kubernetes quantity such as 1Gi "
     "(fix: pulumi config set --path agent-sandbox:sandboxResources.requests.memory 1Gi)"),
    ({"sandboxResources": {"limits": {"gpu": "1"}}},
     "agent-sandbox:sandboxResources.limits.gpu is not a known resource: allowed are cpu, memory, ephemeral-storage "
     "(fix: pulumi config rm --path agent-sandbox:sandboxResources.limits.gpu)"),
    ({"sandboxResources": "{not json"},
     "agent-sandbox:sandboxResources = '{not json' is invalid: expected a JSON object {requests: {...}, limits: {...}} "
     "(fix: pulumi config set --path agent-sandbox:sandboxResources.limits.cpu 500m)"),
    ({"routerAllowedPodCidrs": "10.244.0.0/16,10.0.0.1/8"},
     "agent-sandbox:routerAllowedPodCidrs = '10.244.0.0/16,10.0.0.1/8' is invalid: '10.0.0.1/8' is not a CIDR network "
     f"(e.g. 10.244.0.0/16) ({FIX}routerAllowedPodCidrs 10.244.0.0/16)"),
    ({"sandboxEgress": "open"},
     "agent-sandbox:sandboxEgress = 'open' is invalid: allowed values are 'internet', 'none', 'allowList' "
     f"({FIX}sandboxEgress internet)"),
    ({"sandboxEgress": "allowList"},
     "agent-sandbox:sandboxEgressAllow is not set: sandboxEgress 'allowList' needs at least one {cidr, ports} entry "
     f"({FIX}sandboxEgressAllow '{ALLOW_EXAMPLE}')"),
    ({"sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": [443]}]},
     "agent-sandbox:sandboxEgressAllow is only read with sandboxEgress 'allowList' (now 'internet'), so the list "
     f"would be ignored ({FIX}sandboxEgress allowList)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": "{not json"},
     "agent-sandbox:sandboxEgressAllow = '{not json' is invalid: expected a JSON list of {cidr, ports, protocol} "
     f"objects ({FIX}sandboxEgressAllow '{ALLOW_EXAMPLE}')"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": ["151.101.0.0/16"]},
     "agent-sandbox:sandboxEgressAllow[0] = '151.101.0.0/16' is invalid: expected an object {cidr, ports, protocol} "
     f"({FIX}sandboxEgressAllow '{ALLOW_EXAMPLE}')"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": [443], "port": 80}]},
     "agent-sandbox:sandboxEgressAllow[0].port is not a known field: allowed are cidr, ports, protocol "
     "(fix: pulumi config rm --path 'agent-sandbox:sandboxEgressAllow[0].port')"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.1/16", "ports": [443]}]},
     "agent-sandbox:sandboxEgressAllow[0].cidr = '151.101.0.1/16' is invalid: expected a CIDR network such as "
     f"151.101.0.0/16 ({PATH_FIX}[0].cidr' 151.101.0.0/16)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "10.1.2.3/32", "ports": [443]}]},
     "agent-sandbox:sandboxEgressAllow[0].cidr = '10.1.2.3/32' is invalid: it lies inside 10.0.0.0/8, a cluster, "
     "private, metadata or reserved range that sandboxes never reach; only public unicast destinations can be "
     f"allowed ({PATH_FIX}[0].cidr' 151.101.0.0/16)"),
    ({"clusterPodCidrs": "11.0.0.0/16", "sandboxEgress": "allowList",
      "sandboxEgressAllow": [{"cidr": "11.0.1.0/24", "ports": [443]}]},
     "agent-sandbox:sandboxEgressAllow[0].cidr = '11.0.1.0/24' is invalid: it lies inside 11.0.0.0/16, a cluster, "
     "private, metadata or reserved range that sandboxes never reach; only public unicast destinations can be "
     f"allowed ({PATH_FIX}[0].cidr' 151.101.0.0/16)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.0/16"}]},
     "agent-sandbox:sandboxEgressAllow[0].ports is not set: list the ports to open, e.g. [443] or [\"8000-8100\"] "
     f"({PATH_FIX}[0].ports[0]' 443)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": [443, "50-60"]}]},
     "agent-sandbox:sandboxEgressAllow[0].ports = [443, \"50-60\"] is invalid: '50-60' is not a port 1-65535 or a "
     "range 'low-high' that leaves out 53 (DNS goes to the cluster resolver only) "
     f"({PATH_FIX}[0].ports[0]' 443)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": [0]}]},
     "agent-sandbox:sandboxEgressAllow[0].ports = [0] is invalid: 0 is not a port 1-65535 or a "
     "range 'low-high' that leaves out 53 (DNS goes to the cluster resolver only) "
     f"({PATH_FIX}[0].ports[0]' 443)"),
    ({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": [443],
                                                            "protocol": "ICMP"}]},
     "agent-sandbox:sandboxEgressAllow[0].protocol = 'ICMP' is invalid: allowed values are 'TCP', 'UDP', 'SCTP' "
     f"({PATH_FIX}[0].protocol' TCP)"),
    ({"clusterPodCidrs": "10.244.0.0/33"},
     "agent-sandbox:clusterPodCidrs = '10.244.0.0/33' is invalid: '10.244.0.0/33' is not a CIDR network "
     f"(e.g. 10.244.0.0/16) ({FIX}clusterPodCidrs 10.244.0.0/16)"),
    ({"clusterServiceCidrs": "10.96.0.1/16"},
     "agent-sandbox:clusterServiceCidrs = '10.96.0.1/16' is invalid: '10.96.0.1/16' is not a CIDR network "
     f"(e.g. 10.96.0.0/16) ({FIX}clusterServiceCidrs 10.96.0.0/16)"),
    ({"clusterNodeCidrs": "nodes"},
     "agent-sandbox:clusterNodeCidrs = 'nodes' is invalid: 'nodes' is not a CIDR network "
     f"(e.g. 172.18.0.0/16) ({FIX}clusterNodeCidrs 172.18.0.0/16)"),
    ({"clusterDnsAddresses": "dns.local"},
     "agent-sandbox:clusterDnsAddresses = 'dns.local' is invalid: 'dns.local' is not an IP address (e.g. "
     f"169.254.20.10 for NodeLocal DNSCache) ({FIX}clusterDnsAddresses 169.254.20.10)"),
    ({"clusterDnsAddresses": "169.254.169.254"},
     "agent-sandbox:clusterDnsAddresses = '169.254.169.254' is invalid: 169.254.169.254 is the cloud metadata "
     f"address, not the cluster's resolver ({FIX}clusterDnsAddresses 169.254.20.10)"),
    ({"routerSandboxNamespaces": "agent-sandbox-demo,Team_B"},
     "agent-sandbox:routerSandboxNamespaces = 'agent-sandbox-demo,Team_B' is invalid: 'Team_B' is not a DNS-1123 "
     "namespace name (lower-case letters, digits and '-', at most 63 characters) "
     f"({FIX}routerSandboxNamespaces agent-sandbox-demo)"),
    ({"apiServerEndpoints": "172.18.0.2"},
     "agent-sandbox:apiServerEndpoints = '172.18.0.2' is invalid: '172.18.0.2' is not address:port (e.g. "
     f"172.18.0.2:6443, [fd00::2]:6443 or 10.0.0.0/28:443) ({FIX}apiServerEndpoints 172.18.0.2:6443)"),
    ({"routerAllowedPodCidrs": "10.0.0.0/8"},
     "agent-sandbox:routerAllowedPodCidrs = '10.0.0.0/8' is invalid: '10.0.0.0/8' is not inside "
     "agent-sandbox:clusterPodCidrs (10.244.0.0/16), so the router could reach nodes or Services in it; narrow it, "
     f"or set clusterPodCidrs to the cluster's pod ranges ({FIX}routerAllowedPodCidrs 10.244.0.0/16)"),
    ({"runtimeClass": "gvisor"},
     "agent-sandbox:runtimeClass is not a known key: did you mean 'runtime'? see the configuration table in "
     "README.md (fix: pulumi config rm agent-sandbox:runtimeClass)"),
]


@pytest.mark.parametrize(("raw", "message"), INVALID, ids=[next(iter(raw)) + "-" + str(i) for i, (raw, _) in enumerate(INVALID)])
def test_each_invalid_value_gets_one_exact_message(raw: dict, message: str) -> None:
    assert problems_of(raw) == [message]


def test_all_problems_are_reported_together() -> None:
    problems = problems_of({"runtime": "x", "warmPoolReplicas": "-3", "clusterFlavour": "k3s"})
    assert len(problems) == 3
    assert str(ConfigError(problems)).startswith("Invalid stack configuration:\n  - ")


def test_every_key_is_documented() -> None:
    assert all(key.description.strip() for key in CONFIG_KEYS)
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [key.name for key in CONFIG_KEYS if f"`{key.name}`" not in readme]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_existing_stack_file_asks_for_its_registry() -> None:
    data = yaml.safe_load((REPO_ROOT / "Pulumi.existing.yaml").read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in data.items()}
    with pytest.raises(ConfigError, match="imageRegistry is not set"):
        parse_stack_config(raw, "existing")
    config = parse_stack_config({**raw, "imageRegistry": "localhost:5001/agent-sandbox"}, "existing")
    assert (config.cluster_flavour, config.image_load_strategy, config.kube_context) == ("existing", "registry", None)


def test_kind_workers_bounds() -> None:
    assert parse_stack_config({"kindWorkers": "1"}, "gvisor").kind_workers == 1
    assert parse_stack_config({}, "gvisor").kind_workers == 0
    with pytest.raises(ConfigError, match=r"kindWorkers = '9' is invalid: allowed values are integers from 0 to 8"):
        parse_stack_config({"kindWorkers": "9"}, "gvisor")


# ----------------------------------------------------------------------------- secrets, Pulumi.yaml defaults, component inputs

def test_the_router_token_never_shows_in_a_printed_config() -> None:
    token = "s3cr3t-token-0123456789"
    config = parse_stack_config({"routerAuthToken": token}, "test")
    assert config.router_auth_token == token
    assert token not in repr(config) and token not in str(config)


def test_pulumi_yaml_defaults_read_as_unset() -> None:
    # Pulumi.yaml declares "" for keys without a default (the engine would require them otherwise):
    # every such key must mean exactly what an absent key means.
    blank = {key.name: key.project_default for key in CONFIG_KEYS}
    assert parse_stack_config(blank, "gvisor") == parse_stack_config({}, "gvisor")
    assert parse_stack_config(blank, "gvisor").router_auth_token is None


def test_every_key_has_a_pulumi_yaml_type_that_accepts_its_default() -> None:
    checks = {"string": str, "integer": int, "boolean": bool, "object": dict}
    for key in CONFIG_KEYS:
        if key.pulumi_type is None:
            # a secret, or a JSON string or a YAML value (the engine's type check would refuse one of
            # the two): the description says so to the user
            assert key.secret or "Untyped in Pulumi.yaml" in key.description, f"{key.name} is untyped without a reason"
            continue
        assert isinstance(key.project_default, checks[key.pulumi_type]), key.name


def test_component_inputs_are_checked_with_the_config_rules_and_name_the_input() -> None:
    from agent_sandbox_pulumi.sandbox_iac.config import ComponentInputError, parse_component_inputs

    assert parse_component_inputs({}).sandbox_namespace == "agent-sandbox-demo"
    with pytest.raises(ComponentInputError) as caught:
        parse_component_inputs({"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "10.1.2.3/32", "ports": ["443"]}],
                                "warmPoolReplicas": 5000})
    assert caught.value.problems == [
        "sandboxEgressAllow[0].cidr = '10.1.2.3/32' is invalid: it lies inside 10.0.0.0/8, a cluster, private, metadata or "
        "reserved range that sandboxes never reach; only public unicast destinations can be allowed",
        "warmPoolReplicas = 5000 is invalid: allowed values are integers from 0 to 1000",
    ]
    assert str(caught.value).startswith("Invalid AgentSandbox inputs:\n  - sandboxEgressAllow[0].cidr")


# ----------------------------------------------------------------------------- the table is the one declaration

def test_every_key_fills_one_stack_config_field_and_every_field_has_its_key() -> None:
    import dataclasses

    from agent_sandbox_pulumi.sandbox_iac.config import StackConfig

    filled = [key.field_name for key in CONFIG_KEYS if key.field_name]
    assert len(filled) == len(set(filled))
    not_from_a_key = {"stack", "router_resources"}
    assert set(filled) == {f.name for f in dataclasses.fields(StackConfig)} - not_from_a_key
    assert [key.name for key in CONFIG_KEYS if not key.field_name] == ["allowInsecureRunc"]


def test_choices_and_bounds_come_from_the_table() -> None:
    for key in CONFIG_KEYS:
        if key.choices:
            assert problems_of({key.name: "no-such-choice"})[0] == (
                f"agent-sandbox:{key.name} = 'no-such-choice' is invalid: allowed values are "
                + ", ".join(f"'{c}'" for c in key.choices) + f" ({FIX}{key.name} {key.choices[0]})")
        if key.bounds:
            low, high = key.bounds
            # the autoscaler's knobs only apply with it on (and the minimum up to the maximum)
            mode = ({"warmPoolAutoscaling": "keda", "warmPoolMaxReplicas": "1000"}
                    if key.name in AUTOSCALING_KEYS else {})
            assert getattr(parse_stack_config({**mode, key.name: str(high)}, "s"), str(key.field_name)) == high
            for outside in (low - 1, high + 1):
                assert problems_of({**mode, key.name: str(outside)}) == [
                    f"agent-sandbox:{key.name} = '{outside}' is invalid: allowed values are integers from {low} to "
                    f"{high} ({FIX}{key.name} {key.default})"]


def test_a_key_declaration_is_checked() -> None:
    from agent_sandbox_pulumi.sandbox_iac.config import ConfigKey

    with pytest.raises(ValueError, match="kind 'float' is not one of"):
        ConfigKey("ratio", 1.0, "A ratio.", kind="float")
    with pytest.raises(ValueError, match="bounds with kind 'integer'"):
        ConfigKey("replicas", 1, "Replicas.", kind="integer")


def test_sandbox_placement_keys_reach_the_pod_template() -> None:
    from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_pod_template

    config = parse_stack_config({"sandboxNodeSelector": '{"pool": "sandboxes", "example.com/tier": "a"}',
                                 "sandboxTolerations": [{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"},
                                                        {"key": "k", "value": "v", "tolerationSeconds": 30}]}, "gvisor")
    spec = sandbox_pod_template(config, "img:1")["spec"]
    assert spec["nodeSelector"] == {"pool": "sandboxes", "example.com/tier": "a"}
    assert spec["tolerations"] == [{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"},
                                   {"key": "k", "value": "v", "tolerationSeconds": 30}]
    plain = sandbox_pod_template(parse_stack_config({}, "gvisor"), "img:1")["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain


@pytest.mark.parametrize("raw,fragment", [
    ({"sandboxNodeSelector": "[1]"}, "sandboxNodeSelector = '[1]' is invalid: expected a JSON object of node labels"),
    ({"sandboxNodeSelector": {"a/b/c": "x"}}, "sandboxNodeSelector.a/b/c = 'x' is invalid: expected a label key"),
    ({"sandboxNodeSelector": {"pool": "has space"}}, "sandboxNodeSelector.pool = 'has space' is invalid"),
    ({"sandboxTolerations": "{}"}, "sandboxTolerations = '{}' is invalid: expected a JSON list of tolerations"),
    ({"sandboxTolerations": [{"key": "a", "operator": "Exists", "value": "v"}]}, "value must be empty with operator 'Exists'"),
    ({"sandboxTolerations": [{"key": "a", "tolerationSeconds": "30"}]}, "tolerationSeconds = '30' is invalid"),
    ({"sandboxTolerations": [{"key": "a", "effect": "Never"}]}, "effect = 'Never' is invalid"),
])
def test_sandbox_placement_keys_refuse_what_kubernetes_would(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, "gvisor")
    assert fragment in str(error.value)


def test_the_pool_is_fixed_by_default_and_autoscaled_with_keda() -> None:
    fixed = parse_stack_config({}, "s")
    assert fixed.autoscaling is None and fixed.warm_pool_floor == 2 and not fixed.install_keda
    scaled = parse_stack_config({"warmPoolAutoscaling": "keda", "warmPoolMinReplicas": "0", "warmPoolMaxReplicas": "6",
                                 "warmPoolInUsePerWarm": "2", "warmPoolScaleDownSeconds": "60", "installKeda": "true"}, "s")
    assert scaled.autoscaling is not None
    assert (scaled.autoscaling.min_replicas, scaled.autoscaling.max_replicas) == (0, 6)
    assert (scaled.autoscaling.in_use_per_warm, scaled.autoscaling.scale_down_seconds) == (2, 60)
    assert scaled.warm_pool_floor == 0 and scaled.install_keda
    # Pulumi.yaml's defaults reach the program as values: a default warmPoolReplicas is not "given"
    assert parse_stack_config({"warmPoolAutoscaling": "keda", "warmPoolReplicas": "2"}, "s").autoscaling is not None


def test_a_fixed_size_and_an_autoscaled_one_are_never_mixed() -> None:
    assert problems_of({"warmPoolAutoscaling": "keda", "warmPoolReplicas": "4"}) == [
        "agent-sandbox:warmPoolReplicas is a fixed pool size, but with warmPoolAutoscaling 'keda' the autoscaler sizes "
        "the pool between warmPoolMinReplicas and warmPoolMaxReplicas (fix: pulumi config rm agent-sandbox:warmPoolReplicas)"]
    problems = problems_of({"warmPoolMaxReplicas": "6", "warmPoolScaleDownSeconds": "30"})
    assert [p.split(" ")[0] for p in problems] == ["agent-sandbox:warmPoolMaxReplicas", "agent-sandbox:warmPoolScaleDownSeconds"]
    assert all("only applies with agent-sandbox:warmPoolAutoscaling 'keda'" in p for p in problems)
    assert problems_of({"warmPoolAutoscaling": "keda", "warmPoolMinReplicas": "5", "warmPoolMaxReplicas": "3"}) == [
        "agent-sandbox:warmPoolMinReplicas = '5' is invalid: it must not exceed warmPoolMaxReplicas (3) "
        f"({FIX}warmPoolMinReplicas 3)"]
    assert problems_of({"warmPoolAutoscaling": "hpa"})[0].startswith(
        "agent-sandbox:warmPoolAutoscaling = 'hpa' is invalid: allowed values are 'off', 'keda'")
    assert problems_of({"kedaOperatorImage": "ghcr.io/kedacore/keda:latest"})[0].startswith(
        "agent-sandbox:kedaOperatorImage = 'ghcr.io/kedacore/keda:latest' is invalid")
