"""The policy pack as another project uses it: by path, with the checkout's venv; its config is
documented (every key of every policy's schema, with its default, in docs/policy.md); and a
foreign program that declares AgentSandbox passes every policy (the pack's rules are the
package's own, whoever declares it)."""

from __future__ import annotations

import json

import yaml

from policy import policies
from tests.pulumi_harness import REPO_ROOT
from tests.pulumi_harness import run_callable
from tests.unit.test_policy import stack_violations, violations

DOCS = (REPO_ROOT / "docs" / "policy.md").read_text()


def test_every_policy_config_key_is_documented_with_its_default() -> None:
    rows = [line for line in DOCS.splitlines() if line.startswith("| `")]
    for policy in policies.RESOURCE_POLICIES:
        schema = policy.config_schema
        for key, spec in ((schema.properties if schema else None) or {}).items():
            row = next((r for r in rows if r.startswith(f"| `{policy.name}` | `{key}` |")), None)
            assert row, f"docs/policy.md documents no {policy.name}.{key}"
            default = spec.get("default")
            shown = json.dumps(default) if isinstance(default, (list, bool)) else str(default)
            if isinstance(default, list):
                assert set(default) == set(json.loads(row.split("|")[4].strip().strip("`"))), row
            else:
                assert shown in row, f"{policy.name}.{key}: default {shown} not in {row}"


def test_the_pack_runs_from_its_folder_with_the_checkout_venv() -> None:
    settings = yaml.safe_load((REPO_ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    venv = (REPO_ROOT / "policy" / settings["runtime"]["options"]["virtualenv"]).resolve()
    assert venv == (REPO_ROOT / ".venv").resolve()
    main = (REPO_ROOT / "policy" / "__main__.py").read_text()
    assert "sys.path.insert" in main, "the pack must find agent_sandbox_pulumi one level up, from any project"


def test_a_foreign_program_with_agent_sandbox_passes_the_whole_pack() -> None:
    from agent_sandbox_pulumi.components.agent_sandbox import AgentSandbox

    def program() -> None:
        AgentSandbox("sandboxes", {"runtime_image": "registry.example/runtime:1.2.3",
                                   "router_image": "registry.example/router:1.2.3",
                                   "sandbox_namespace": "team-a", "warm_pool_replicas": 20})

    run = run_callable(program, project="platform")
    custom = [r for r in run.resources if r.custom]
    assert {r.urn: v for r in custom if (v := violations(r.type, r.inputs))} == {}
    assert stack_violations([(r.type, r.inputs) for r in custom]) == []
