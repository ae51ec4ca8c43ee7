"""The component package: the schema other languages see (stable type tokens, camelCase inputs and
outputs, documented fields), how the provider maps their inputs onto AgentSandboxArgs, and what
AgentSandbox declares from such inputs -- under mocks, no engine."""

from __future__ import annotations

import re

import pytest

from agent_sandbox_pulumi.components.agent_sandbox import (
    PART_NAMES,
    TYPE_TOKEN,
    VALIDATED_INPUTS,
    AgentSandbox,
    AgentSandboxArgs,
)
from agent_sandbox_pulumi.provider import HOSTED_COMPONENTS, PACKAGE_NAME, _provider, schema
from agent_sandbox_pulumi.sandbox_iac.config import KNOWN_KEYS, ComponentInputError
from tests.pulumi_harness import ProgramRun, run_callable

SCHEMA = schema()
RESOURCE = SCHEMA["resources"][TYPE_TOKEN]
IMAGES = {"runtimeImage": "registry.example/agent-sandbox/runtime:1.0", "routerImage": "registry.example/agent-sandbox/router:1.0"}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_package_serves_one_component_under_a_stable_token() -> None:
    assert SCHEMA["name"] == PACKAGE_NAME == "agent-sandbox"
    assert list(SCHEMA["resources"]) == ["agent-sandbox:index:AgentSandbox"] == [TYPE_TOKEN]
    assert RESOURCE["isComponent"] is True
    assert set(SCHEMA["types"]) == {"agent-sandbox:index:ContainerResources", "agent-sandbox:index:EgressDestination"}
    assert [c.__name__ for c in HOSTED_COMPONENTS] == ["AgentSandbox"]


def test_inputs_are_the_args_in_camel_case_and_only_the_images_are_required() -> None:
    fields = AgentSandboxArgs.__annotations__
    assert set(RESOURCE["inputProperties"]) == {camel(f) for f in fields}
    assert sorted(RESOURCE.get("requiredInputs", [])) == ["routerImage", "runtimeImage"]
    for name, spec in RESOURCE["inputProperties"].items():
        assert spec.get("description", "").strip(), f"input {name} has no description"
    # Images and the token may come from other resources; everything that shapes the declared
    # objects is plain, so it is known when the component is constructed.
    not_plain = {name for name, spec in RESOURCE["inputProperties"].items() if not spec.get("plain")}
    assert not_plain == {"runtimeImage", "routerImage", "routerAuthToken"}


def test_outputs_are_camel_case_and_documented() -> None:
    assert set(RESOURCE["properties"]) == {
        "namespace", "templateName", "warmPoolName", "warmPoolReplicas", "warmPoolAutoscaling", "runtimeClassName",
        "sandboxPort", "controllerNamespace",
        "routerServiceName", "routerNamespace", "routerPort", "routerAuthToken",
    }
    assert all(re.fullmatch(r"[a-z][A-Za-z]*", name) for name in RESOURCE["properties"])
    assert all(spec.get("description") for spec in RESOURCE["properties"].values())


def test_validated_inputs_are_the_config_keys_of_the_same_name() -> None:
    for field, key in VALIDATED_INPUTS.items():
        assert key in KNOWN_KEYS, key
        assert camel(field) == key or (field, key) == ("kata_node_name", "clusterName"), field
    # Every input is either validated by the config rules or is an image/token/pull policy/resources
    # of the router (which have no config key).
    unvalidated = set(AgentSandboxArgs.__annotations__) - set(VALIDATED_INPUTS)
    assert unvalidated == {"runtime_image", "router_image", "image_pull_policy", "router_resources", "router_auth_token"}


def test_the_provider_maps_engine_inputs_onto_the_args() -> None:
    provider = _provider()
    definition = provider._component_defs["AgentSandbox"]
    # What a YAML program sends: camelCase names, numbers as floats.
    mapped = provider.map_inputs({**IMAGES, "warmPoolReplicas": 3.0, "sandboxEgress": "allowList",
                                  "sandboxEgressAllow": [{"cidr": "151.101.0.0/16", "ports": ["443"]}],
                                  "sandboxResources": {"limits": {"cpu": "1"}}}, definition)
    # Numbers stay floats on the way in (the SDK does not convert them): AgentSandbox does.
    assert mapped["warm_pool_replicas"] == 3
    assert mapped["sandbox_egress_allow"] == [{"cidr": "151.101.0.0/16", "ports": ["443"]}]
    assert mapped["runtime_image"] == IMAGES["runtimeImage"]
    with pytest.raises(Exception, match="Missing required input 'routerImage'"):
        provider.map_inputs({"runtimeImage": "x:1"}, definition)


def declare(args: dict) -> ProgramRun:
    def program() -> None:
        AgentSandbox("agent-sandbox", args)

    return run_callable(program, project="consumer")


def test_agent_sandbox_from_plain_inputs_declares_the_whole_stack() -> None:
    run = declare({"runtime_image": IMAGES["runtimeImage"], "router_image": IMAGES["routerImage"],
                   "warm_pool_replicas": 3.0, "sandbox_namespace": "team-a", "sandbox_egress": "allowList",
                   "sandbox_egress_allow": [{"cidr": "151.101.0.0/16", "ports": ["443", "8000-8100"]}]})
    parts = {r.name for r in run.resources if r.parent == run.one(TYPE_TOKEN).urn}
    # KEDA only with installKeda
    assert parts == set(PART_NAMES.values()) - {PART_NAMES["keda"]}
    assert not run.of_type("ScaledObject")
    pool = run.one("SandboxWarmPool")
    assert pool.k8s_namespace == "team-a" and pool.inputs["spec"]["replicas"] == 3
    assert pool.inputs["metadata"]["annotations"]["pulumi.com/waitFor"] == "jsonpath={.status.readyReplicas}=3"
    template = run.one("SandboxTemplate").inputs["spec"]
    container = template["podTemplate"]["spec"]["containers"][0]
    assert container["image"] == IMAGES["runtimeImage"] and container["imagePullPolicy"] == "IfNotPresent"
    egress = template["networkPolicy"]["egress"]
    assert egress[0]["to"] == [{"ipBlock": {"cidr": "151.101.0.0/16"}}]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8000, "endPort": 8100}]
    router = run.one("kubernetes:apps/v1:Deployment", "sandbox-router-deployment")
    env = {e["name"]: e.get("value") for e in router.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ROUTER_SANDBOX_NAMESPACES"] == "team-a" and env["ROUTER_ALLOWED_POD_CIDRS"] == "10.244.0.0/16"
    assert run.one("kubernetes:core/v1:Namespace", "team-a")
    assert run.waits_for(run.one("SandboxTemplate"), run.one("kubernetes:apps/v1:Deployment", "agent-sandbox-controller"))


def test_what_a_consumer_depends_on_comes_before_every_resource_of_the_component() -> None:
    # The engine does not make children wait for their parent's depends_on: every component
    # repeats it on each child (components.options.child_options), down to the last resource.
    # One resource, not a list: ResourceOptions accepts both.
    def program() -> None:
        import pulumi
        import pulumi_kubernetes as k8s

        first = k8s.core.v1.Namespace("first", metadata={"name": "first"})
        AgentSandbox("agent-sandbox", {"runtime_image": IMAGES["runtimeImage"], "router_image": IMAGES["routerImage"]},
                     opts=pulumi.ResourceOptions(depends_on=first))

    run = run_callable(program, project="consumer")
    first = run.one("kubernetes:core/v1:Namespace", "first")
    resources = [r for r in run.resources if r.custom and r.urn != first.urn]
    assert resources and all(first.urn in r.dependencies for r in resources), \
        [r.name for r in resources if first.urn not in r.dependencies]


def test_unsafe_inputs_stop_before_any_resource() -> None:
    with pytest.raises(ComponentInputError, match=r"sandboxEgressAllow\[0\]\.cidr = '169.254.169.254/32' is invalid"):
        declare({"runtime_image": "a/r:1", "router_image": "a/o:1", "sandbox_egress": "allowList",
                 "sandbox_egress_allow": [{"cidr": "169.254.169.254/32", "ports": ["80"]}]})
    with pytest.raises(ComponentInputError, match="runtime = 'runc' is invalid"):
        declare({"runtime_image": "a/r:1", "router_image": "a/o:1", "runtime": "runc"})


# ----------------------------------------------------------------------------- the example programs, without a cluster

def test_the_python_example_declares_an_install_under_mocks() -> None:
    import runpy

    from tests.pulumi_harness import REPO_ROOT

    config = {"agent-sandbox-example-python:runtimeImage": IMAGES["runtimeImage"],
              "agent-sandbox-example-python:routerImage": IMAGES["routerImage"]}
    run = run_callable(lambda: runpy.run_path(str(REPO_ROOT / "examples" / "python" / "__main__.py")),
                       config=config, project="agent-sandbox-example-python")
    assert run.one("SandboxWarmPool").k8s_namespace == "example-python"
    assert run.outputs["warmPoolReplicas"] == 1 and run.outputs["namespace"] == "example-python"
    assert {"routerAuthToken", "routerService", "routerPort", "sandboxPort"} <= set(run.outputs)


def test_the_yaml_example_sets_only_inputs_the_schema_has() -> None:
    import yaml

    from tests.pulumi_harness import REPO_ROOT

    program = yaml.safe_load((REPO_ROOT / "examples" / "yaml" / "Pulumi.yaml").read_text())
    assert program["packages"] == {"agent-sandbox": "../../agent_sandbox_pulumi"}
    assert (REPO_ROOT / "examples" / "yaml" / program["packages"]["agent-sandbox"] / "PulumiPlugin.yaml").is_file()
    sandbox = program["resources"]["sandbox"]
    assert sandbox["type"] == TYPE_TOKEN
    assert set(sandbox["properties"]) <= set(RESOURCE["inputProperties"])
    assert set(RESOURCE["requiredInputs"]) <= set(sandbox["properties"])
    used = {ref.split(".", 1)[1].rstrip("}") for ref in program["outputs"].values() if ref.startswith("${sandbox.")}
    assert used <= set(RESOURCE["properties"])
