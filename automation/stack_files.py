"""A stack's config before the engine runs: ``Pulumi.<stack>.yaml`` read as the engine would
pass it (secrets left out), with the ``--config`` overrides on top, validated into the
package's ``StackConfig``."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import yaml

from automation.errors import StackFileMissing
from automation.paths import ProjectPaths
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig, parse_stack_config


def read_stack_file(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Raw project config (keys without the ``agent-sandbox:`` prefix) from ``Pulumi.<stack>.yaml``,
    with ``overrides`` (``--config`` values) on top.

    Encrypted values (``{secure: ...}``) are left out: this view serves decisions taken before
    Pulumi runs (prerequisites, cluster creation), none of which needs a secret."""
    path = paths.stack_file(stack)
    if not path.is_file():
        raise StackFileMissing(
            f"no stack file {path}: known stacks are "
            + ", ".join(sorted(p.name[len("Pulumi."):-len(".yaml")] for p in paths.root.glob("Pulumi.*.yaml")))
            + f" (create one with: pulumi stack init {stack}, then pulumi config set ...)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    prefix = f"{constants.PROJECT_NAME}:"
    raw: dict[str, Any] = {}
    for key, value in (data.get("config") or {}).items():
        if not key.startswith(prefix) or (isinstance(value, dict) and "secure" in value):
            continue
        raw[key[len(prefix):]] = _as_config_value(value)
    raw.update(overrides or {})
    return raw


def _as_config_value(value: Any) -> Any:
    """A YAML scalar as the engine would pass it (strings; booleans as 'true'/'false')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, dict, list)):
        return value
    return str(value)


def stack_config(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None) -> StackConfig:
    """The validated config of ``stack`` from its stack file and overrides (raises ConfigError with fixes)."""
    return parse_stack_config(read_stack_file(paths, stack, overrides), stack)
