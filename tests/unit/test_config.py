"""Stack configuration: defaults, derived values and one clear message per bad value."""

from __future__ import annotations

import pytest
import yaml

from sandbox_iac.config import CONFIG_KEYS, ConfigError, parse_stack_config
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
    assert config.sandbox_resources.requests == {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "512Mi"}
    assert config.sandbox_resources.limits == {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert config.image_load_strategy == "kind" and config.image_pull_policy == "Never"
    assert config.router_auth_token is None


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


def test_local_e2e_stack_file_is_valid_once_images_are_known() -> None:
    data = yaml.safe_load((REPO_ROOT / "Pulumi.local.yaml").read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in data.items()}
    with pytest.raises(ConfigError, match="sandboxImage is not set"):
        parse_stack_config(raw, "local")
    config = parse_stack_config({**raw, "sandboxImage": "agent-sandbox/runtime:1", "routerImage": "agent-sandbox/router:1"}, "local")
    assert (config.cluster_flavour, config.image_load_strategy, config.kube_context) == ("existing", "containerd", None)
