"""Reads the stack's Pulumi config into a validated ``StackConfig`` (the program's only entry to
configuration), and the router token as a secret Output.

Owns the boundary between ``pulumi.Config`` and the plain-mapping validator in ``config.py``."""

from __future__ import annotations

from typing import Optional

import pulumi
from pulumi.runtime import config as runtime_config

from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig, parse_stack_config, read_project_config

TOKEN_KEY = "routerAuthToken"


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
        if raw.get(key):
            raw[key] = config.get_object(key)
    return parse_stack_config(raw, pulumi.get_stack())


def read_router_token() -> Optional[pulumi.Output[str]]:
    """The configured router token as a secret Output, None when unset (the router then generates
    one). Pulumi.yaml's default "" means unset too. The plain value is only ever seen by the
    validator (length check, reported as ``<secret>``)."""
    config = pulumi.Config(constants.PROJECT_NAME)
    token = config.get_secret(TOKEN_KEY)
    if token is None or not config.get(TOKEN_KEY):
        return None
    return token
