"""The hardened sandbox pod and its network policy."""

from __future__ import annotations

import pytest
import ipaddress

from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_network_policy, sandbox_template_spec, warm_pool_spec
from tests.pulumi_harness import rules_admitting


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
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/app", "/tmp"}
    assert "hostPort" not in container["ports"][0]


def test_network_policy_admits_only_the_router_and_blocks_private_egress() -> None:
    policy = sandbox_network_policy(parse_stack_config({}, "gvisor"))
    (ingress,) = policy["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"app": "sandbox-router"}
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "agent-sandbox-system"}
    egress = policy["egress"]
    for address in (constants.METADATA_ADDRESS, "10.96.0.1", "192.168.1.1", "172.17.0.1", "127.0.0.1", "fe80::1"):
        assert rules_admitting(egress, 80, ip=address) == [], address
    assert rules_admitting(egress, 443, ip="93.184.216.34") == [0]
    assert rules_admitting(egress, 53, "UDP", pod=KUBE_DNS_POD) == [1]


# ----------------------------------------------------------------------------- egress modes (issue 11, item 5)

# Everything a sandbox never reaches, IPv4: "this network", private, CGNAT, loopback, link-local
# (metadata), IETF protocol assignments, documentation, 6to4 relay, benchmarking, multicast,
# reserved/broadcast; the KIND cluster's pod and service ranges lie inside 10.0.0.0/8.
DENIED_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
]
# IPv6: unspecified, loopback, NAT64 (well-known and local-use), discard, IETF
# assignments (Teredo, ...), documentation, 6to4, SRv6 SIDs, ULA, link-local, site-local, multicast.
DENIED_V6 = [
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
]
ALL_BUT_DNS = [
    {"protocol": "TCP", "port": 1, "endPort": 52}, {"protocol": "TCP", "port": 54, "endPort": 65535},
    {"protocol": "UDP", "port": 1, "endPort": 52}, {"protocol": "UDP", "port": 54, "endPort": 65535},
]
CLUSTER_DNS_RULE = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
KUBE_DNS_POD = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
# Global IPv6 ranges of a dual-stack cluster: nothing of the fixed deny list covers them.
DUAL_STACK = {
    "clusterPodCidrs": "10.244.0.0/16,2600:1f14:abc:100::/56",
    "clusterServiceCidrs": "10.96.0.0/16,2600:1f14:abc:200::/108",
    "clusterNodeCidrs": "2600:1f14:abc:300::/64",
}
# Addresses that no mode may let a sandbox reach, on any port.
NEVER_REACHED = [
    "169.254.169.254", "10.244.1.5", "10.96.0.1", "0.1.2.3", "192.0.0.8", "198.18.0.1", "240.0.0.1",
    "255.255.255.255", "100.64.0.1", "224.0.0.251", "fd20:ce::254", "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1", "::ffff:a9fe:a9fe", "2001::1", "fe80::1", "::1",
]


def on_the_wire(address: str) -> str:
    """An IPv4-mapped IPv6 destination leaves the pod as IPv4 (the socket maps it), so the IPv4 rules
    are the ones that govern it."""
    mapped = ipaddress.ip_address(address)
    return str(mapped.ipv4_mapped) if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped else address


def egress_of(raw: dict) -> list[dict]:
    return sandbox_network_policy(parse_stack_config(raw, "gvisor"))["egress"]


def test_internet_egress_is_public_unicast_only_and_never_port_53() -> None:
    egress = egress_of({})
    assert egress == [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": DENIED_V4}},
                {"ipBlock": {"cidr": "::/0", "except": DENIED_V6}}],
         "ports": ALL_BUT_DNS},
        CLUSTER_DNS_RULE,
    ]
    for address in NEVER_REACHED:
        assert rules_admitting(egress, 80, ip=on_the_wire(address)) == [], address
    assert rules_admitting(egress, 443, ip="93.184.216.34") == [0]
    assert rules_admitting(egress, 443, "UDP", ip="2606:4700::1111") == [0]
    # Public DNS is closed: only the cluster resolver answers on 53.
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert rules_admitting(egress, 53, "UDP", ip=address) == [], address
        assert rules_admitting(egress, 53, "TCP", ip=address) == [], address


def test_no_rule_opens_the_whole_internet_without_the_exclusions() -> None:
    for raw in ({}, {"sandboxEgress": "allowList", "sandboxEgressAllow": [{"cidr": "0.0.0.0/0", "ports": [443]}]}):
        for rule in egress_of(raw):
            assert rule.get("to") and rule.get("ports"), rule
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if block and ipaddress.ip_network(block["cidr"]).prefixlen == 0:
                    denied = DENIED_V4 if block["cidr"] == "0.0.0.0/0" else DENIED_V6
                    assert set(denied) <= set(block["except"]), block


def test_cluster_ranges_of_a_dual_stack_cluster_are_excluded_in_every_mode() -> None:
    internet = egress_of(DUAL_STACK)
    v6_except = internet[0]["to"][1]["ipBlock"]["except"]
    for cidr in ("2600:1f14:abc:100::/56", "2600:1f14:abc:200::/108", "2600:1f14:abc:300::/64"):
        assert cidr in v6_except
    allow_all_https = egress_of({**DUAL_STACK, "sandboxEgress": "allowList",
                                 "sandboxEgressAllow": [{"cidr": "::/0", "ports": [443]}]})
    for egress in (internet, allow_all_https):
        for address in ("2600:1f14:abc:100::5", "2600:1f14:abc:200::1", "2600:1f14:abc:300::9"):
            assert rules_admitting(egress, 443, ip=address) == [], address
        assert rules_admitting(egress, 443, ip="2600:1f14:abc:400::1") == [0]


def test_a_public_pod_range_is_excluded_too() -> None:
    egress = egress_of({"clusterPodCidrs": "11.0.0.0/16"})
    assert "11.0.0.0/16" in egress[0]["to"][0]["ipBlock"]["except"]
    assert rules_admitting(egress, 443, ip="11.0.3.4") == []
    assert rules_admitting(egress, 443, ip="11.1.0.1") == [0]


def test_none_allows_the_cluster_resolver_only() -> None:
    egress = egress_of({"sandboxEgress": "none"})
    assert egress == [CLUSTER_DNS_RULE]
    assert rules_admitting(egress, 443, ip="93.184.216.34") == []


def test_allow_list_opens_exactly_the_listed_destinations() -> None:
    egress = egress_of({"sandboxEgress": "allowList", "sandboxEgressAllow": [
        {"cidr": "0.0.0.0/0", "ports": [443]},
        {"cidr": "151.101.0.0/16", "ports": [80, "8000-8100"], "protocol": "TCP"},
        {"cidr": "2a04:4e42::/32", "ports": [443], "protocol": "UDP"},
    ]})
    assert egress == [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": DENIED_V4}}],
         "ports": [{"protocol": "TCP", "port": 443}]},
        {"to": [{"ipBlock": {"cidr": "151.101.0.0/16"}}],
         "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 8000, "endPort": 8100}]},
        {"to": [{"ipBlock": {"cidr": "2a04:4e42::/32"}}], "ports": [{"protocol": "UDP", "port": 443}]},
        CLUSTER_DNS_RULE,
    ]
    assert rules_admitting(egress, 8050, ip="151.101.1.1") == [1]
    assert rules_admitting(egress, 22, ip="151.101.1.1") == []
    assert rules_admitting(egress, 443, "UDP", ip="93.184.216.34") == []
    for address in NEVER_REACHED:
        assert rules_admitting(egress, 443, ip=address) == [], address


def test_an_allowed_range_around_a_cluster_range_gets_it_excepted() -> None:
    egress = egress_of({"clusterPodCidrs": "11.0.0.0/16", "sandboxEgress": "allowList",
                        "sandboxEgressAllow": [{"cidr": "11.0.0.0/8", "ports": [443]}]})
    assert egress[0] == {"to": [{"ipBlock": {"cidr": "11.0.0.0/8", "except": ["11.0.0.0/16"]}}],
                         "ports": [{"protocol": "TCP", "port": 443}]}


def test_the_resolver_the_cluster_uses_is_allowed_on_53_only() -> None:
    egress = egress_of({"clusterDnsAddresses": "169.254.20.10,10.96.0.10"})
    assert egress[-1] == {
        "to": [CLUSTER_DNS_RULE["to"][0], {"ipBlock": {"cidr": "169.254.20.10/32"}}, {"ipBlock": {"cidr": "10.96.0.10/32"}}],
        "ports": CLUSTER_DNS_RULE["ports"],
    }
    for protocol in ("UDP", "TCP"):
        assert rules_admitting(egress, 53, protocol, ip="169.254.20.10") == [1]
    assert rules_admitting(egress, 8080, ip="169.254.20.10") == []
    assert rules_admitting(egress, 443, ip="10.96.0.10") == []
    assert "169.254.0.0/16" in egress[0]["to"][0]["ipBlock"]["except"]


def test_explicit_policy_avoids_the_public_dns_override() -> None:
    spec = sandbox_template_spec(parse_stack_config({}, "gvisor"), "img:1")
    assert spec["networkPolicyManagement"] == "Managed" and spec["networkPolicy"]["egress"]
    assert "dnsPolicy" not in spec["podTemplate"]["spec"]


def test_warm_pool_rolls_on_template_change() -> None:
    spec = warm_pool_spec(parse_stack_config({"warmPoolReplicas": "5", "templateName": "t1"}, "s"))
    assert spec == {"replicas": 5, "sandboxTemplateRef": {"name": "t1"}, "updateStrategy": {"type": "Recreate"}}



def _ipblocks(policy: dict) -> list[dict]:
    return [peer["ipBlock"] for rule in policy.get("egress", []) + policy.get("ingress", [])
            for peer in rule.get("to", []) + rule.get("from", []) if "ipBlock" in peer]


@pytest.mark.parametrize("egress", ["internet", "none"])
def test_every_except_is_a_strict_subset_the_api_server_accepts(egress: str) -> None:
    """The API server rejects an except that is not a strict subset of its cidr, with Go's parsing:
    an IPv4-mapped IPv6 prefix counts as IPv4 there (it once made the controller fail to create the
    template's policy, leaving sandboxes without any)."""
    import ipaddress

    from tests.pulumi_harness import run_program

    run = run_program("gvisor", {"sandboxEgress": egress})
    policy = run.one("SandboxTemplate").inputs["spec"]["networkPolicy"]
    for block in _ipblocks(policy):
        cidr = ipaddress.ip_network(block["cidr"])
        for text in block.get("except", []):
            inner = ipaddress.ip_network(text)
            if isinstance(inner, ipaddress.IPv6Network):
                assert inner.network_address.ipv4_mapped is None and not inner.subnet_of(
                    ipaddress.ip_network("::ffff:0:0/96")), f"{text}: the API server reads it as IPv4"
            assert inner.version == cidr.version and inner.subnet_of(cidr) and inner != cidr, (text, block["cidr"])
