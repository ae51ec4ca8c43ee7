"""Reads the stack's Pulumi config into a validated ``StackConfig`` (the program's only
entry to configuration)."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from sandbox_iac import constants
from sandbox_iac.config import StackConfig, parse_stack_config, read_project_config


def _present_project_keys() -> list[str]:
    """Names of every config key set under this project's namespace (to catch typos)."""
    prefix = f"{constants.PROJECT_NAME}:"
    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return sorted(name[len(prefix):] for name in names if name.startswith(prefix))


def read_stack_config() -> StackConfig:
    """Validated configuration of the current stack; raises ConfigError on bad values."""
    config = pulumi.Config(constants.PROJECT_NAME)
    raw = read_project_config(config.get, _present_project_keys())
    for key in ("sandboxResources",):
        if key in raw:
            raw[key] = config.get_object(key)
    return parse_stack_config(raw, pulumi.get_stack())
