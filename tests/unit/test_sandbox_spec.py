"""The hardened sandbox pod and its network policy."""

from __future__ import annotations

import ipaddress

from sandbox_iac import constants
from sandbox_iac.config import parse_stack_config
from sandbox_iac.sandbox_spec import sandbox_network_policy, sandbox_template_spec, warm_pool_spec


def test_pod_is_hardened() -> None:
    config = parse_stack_config({}, "gvisor")
    pod = sandbox_template_spec(config, "agent-sandbox/runtime:abc")["podTemplate"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod[k] for k in ("hostNetwork", "hostPID", "hostIPC"))
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": 8888}
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/app", "/tmp"}
    assert "hostPort" not in container["ports"][0]


def test_network_policy_admits_only_the_router_and_blocks_private_egress() -> None:
    policy = sandbox_network_policy(parse_stack_config({}, "gvisor"))
    (ingress,) = policy["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"app": "sandbox-router"}
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "agent-sandbox-system"}
    blocks = [peer["ipBlock"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer]
    excluded = [ipaddress.ip_network(c) for block in blocks for c in block["except"]]
    for address in (constants.METADATA_ADDRESS, "10.96.0.1", "192.168.1.1", "172.17.0.1", "127.0.0.1", "fe80::1"):
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in excluded if net.version == ip.version), address
    assert not any(ipaddress.ip_address("93.184.216.34") in net for net in excluded)
    dns = [rule for rule in policy["egress"] if "ports" in rule]
    assert dns and {p["port"] for p in dns[0]["ports"]} == {53}


def test_explicit_policy_avoids_the_public_dns_override() -> None:
    spec = sandbox_template_spec(parse_stack_config({}, "gvisor"), "img:1")
    assert spec["networkPolicyManagement"] == "Managed" and spec["networkPolicy"]["egress"]
    assert "dnsPolicy" not in spec["podTemplate"]["spec"]


def test_warm_pool_rolls_on_template_change() -> None:
    spec = warm_pool_spec(parse_stack_config({"warmPoolReplicas": "5", "templateName": "t1"}, "s"))
    assert spec == {"replicas": 5, "sandboxTemplateRef": {"name": "t1"}, "updateStrategy": {"type": "Recreate"}}
