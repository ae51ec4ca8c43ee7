"""Pulumi.yaml's typed config block and README's configuration table are generated from the one
table the validator uses (CONFIG_KEYS); this fails when either drifts (fix: python -m
agent_sandbox_pulumi.docs)."""

from __future__ import annotations

import yaml

from agent_sandbox_pulumi import docs
from agent_sandbox_pulumi.sandbox_iac.config import CONFIG_KEYS, WARM_POOL_POLICY_CAP
from tests.pulumi_harness import REPO_ROOT

FIX = "run: .venv/bin/python -m agent_sandbox_pulumi.docs"


def test_generated_documents_match_the_config_table() -> None:
    assert docs.stale_documents(REPO_ROOT) == [], FIX


def test_pulumi_yaml_declares_every_key_typed_and_the_local_backend() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "agent-sandbox"
    assert project["backend"] == {"url": "file://./.pulumi-state"}
    declared = project["config"]
    assert list(declared) == [f"agent-sandbox:{key.name}" for key in CONFIG_KEYS]
    token = declared["agent-sandbox:routerAuthToken"]
    assert token["secret"] is True and "type" not in token
    assert declared["agent-sandbox:warmPoolReplicas"] == {
        "type": "integer", "default": 2,
        "description": declared["agent-sandbox:warmPoolReplicas"]["description"]}
    assert f"caps it at {WARM_POOL_POLICY_CAP}" in declared["agent-sandbox:warmPoolReplicas"]["description"]


def test_readme_states_the_policy_limits_next_to_the_keys() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `warmPoolReplicas` |"))
    assert "`warm-pool-max-replicas` caps it at 20" in row
    assert "<secret>" not in readme


def test_an_edited_table_is_reported(tmp_path) -> None:
    (tmp_path / "Pulumi.yaml").write_text(docs.render_pulumi_yaml())
    readme = (REPO_ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("| `warmPoolReplicas` | integer | `2`", "| `warmPoolReplicas` | integer | `3`"))
    assert docs.stale_documents(tmp_path) == ["README.md"]
    assert docs.main(["--project-dir", str(tmp_path), "--check"]) == 1
    assert docs.main(["--project-dir", str(tmp_path)]) == 0 and docs.stale_documents(tmp_path) == []
