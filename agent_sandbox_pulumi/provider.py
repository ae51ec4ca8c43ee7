"""The Pulumi component package: ``AgentSandbox`` for programs in any language.

Owns: the package name, the hosted components and the schema the provider serves. The schema is
inferred by Pulumi's Python component provider (``pulumi.provider.experimental``) from the
TypedDict args and output annotations of the hosted components; ``schema()`` returns the same
document without starting a server (tests, docs).

``pulumi package add <path to this folder>`` (it holds ``PulumiPlugin.yaml``) makes the engine
start ``__main__.py`` here, which calls ``serve()``."""

from __future__ import annotations

import json
from typing import Any

from agent_sandbox_pulumi import __version__
from agent_sandbox_pulumi.components.agent_sandbox import AgentSandbox

# The package name is the first part of every type token (``agent-sandbox:index:<Name>``): the
# tokens this project's components always had, so existing stacks and programs keep them.
PACKAGE_NAME = "agent-sandbox"
HOSTED_COMPONENTS = [AgentSandbox]


def _provider() -> Any:
    from pulumi.provider.experimental.component import ComponentProvider

    return ComponentProvider(HOSTED_COMPONENTS, PACKAGE_NAME, version=__version__)


def schema() -> dict[str, Any]:
    """The package schema the provider serves (``pulumi package get-schema`` prints the same)."""
    return json.loads(_provider().schema)


def serve() -> None:
    """Run the provider's gRPC server for the engine (reads the engine address from argv)."""
    from pulumi.provider.experimental import component_provider_host

    component_provider_host(HOSTED_COMPONENTS, name=PACKAGE_NAME, version=__version__)
