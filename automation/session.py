"""A session with a deployed stack, as smoke, bench and the KIND e2e use it: what the stack's
outputs say (:class:`StackTarget`, the router token among them), its cluster, and the official
SDK (``k8s-agent-sandbox``) connected to the router through the driver's managed tunnel with the
bearer token (``Authorization: Bearer <routerAuthToken>``, which the SDK's own tunnel mode
cannot send).

``agent_sandbox_pulumi.client.connect`` does the same for users, on a tunnel of its own; the
driver keeps :class:`automation.tunnel.PortForwardTunnel`, which the driver's signal handler stops
and the kernel stops with the driver, and the cluster's API client it already has.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from automation.errors import StackNotDeployed
from automation.kube import Cluster, api_client, kube_args
from automation.overrides import command_overrides, load_overrides
from automation.paths import ProjectPaths
from automation.stack_files import stack_config
from automation.tunnel import PortForwardTunnel
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig

REQUIRED_OUTPUTS = ("namespace", "warmPool", "warmPoolReplicas", "runtimeClass", "routerAuthToken")


@dataclass(frozen=True)
class StackTarget:
    """What smoke and bench need to know about a deployed stack (from its outputs)."""

    stack: str
    namespace: str
    warm_pool: str
    warm_pool_replicas: int
    runtime_class: str
    router_token: str = field(repr=False)

    @classmethod
    def from_outputs(cls, stack: str, outputs: Mapping[str, Any]) -> "StackTarget":
        missing = [key for key in REQUIRED_OUTPUTS if outputs.get(key) in (None, "")]
        if missing:
            raise StackNotDeployed(f"stack {stack} has no output(s) {missing}: deploy it first with "
                                   f"`python -m automation up {stack}`")
        return cls(stack=stack, namespace=str(outputs["namespace"]), warm_pool=str(outputs["warmPool"]),
                   warm_pool_replicas=int(float(outputs["warmPoolReplicas"])),
                   runtime_class=str(outputs["runtimeClass"]), router_token=str(outputs["routerAuthToken"]))


def deployed_stack(paths: ProjectPaths, config: StackConfig,
                   overrides: Mapping[str, str]) -> tuple[StackTarget, Cluster]:
    """The stack's target (from its outputs, secrets decrypted) and its cluster."""
    from automation.workspace import open_stack, plain_outputs

    stack = open_stack(paths, config.stack, overrides, create=False)
    return StackTarget.from_outputs(config.stack, plain_outputs(stack)), Cluster(api_client(config))


@dataclass(frozen=True)
class SdkSession:
    """The official client connected to a stack's router, and where the router listens."""

    target: StackTarget
    client: Any
    """``k8s_agent_sandbox.SandboxClient`` with the router's bearer token."""
    tunnel: PortForwardTunnel

    @property
    def router_url(self) -> str:
        return self.tunnel.url


@contextlib.contextmanager
def sdk_session(target: StackTarget, cluster: Cluster, kube_flags: Sequence[str],
                log: Optional[Callable[[str], None]] = None) -> Iterator[SdkSession]:
    """Open the tunnel to the router and connect the official SDK through it with the stack's
    token; on exit the client is closed, then the tunnel stopped, whatever happened."""
    from k8s_agent_sandbox import SandboxClient
    from k8s_agent_sandbox.models import SandboxDirectConnectionConfig

    with PortForwardTunnel(kube_flags) as tunnel:
        if log:
            log(f"tunnel: {tunnel.url} -> svc/{constants.ROUTER_SERVICE_NAME} (pid {tunnel.pid})")
        connection = SandboxDirectConnectionConfig(
            api_url=tunnel.url, server_port=constants.SANDBOX_PORT,
            extra_headers={"Authorization": f"Bearer {target.router_token}"})
        with SandboxClient(connection_config=connection, api_client=cluster.client) as client:
            yield SdkSession(target, client, tunnel)


def deployed_by_name(paths: ProjectPaths, stack: str) -> tuple[StackConfig, StackTarget, Cluster]:
    """A deployed stack by name, with the config its last commands ran with (remembered
    ``--config`` values over the set-up's), as ``smoke``/``bench`` would find it."""
    overrides = command_overrides(paths, stack, load_overrides(paths, stack))
    config = stack_config(paths, stack, overrides)
    target, cluster = deployed_stack(paths, config, overrides)
    return config, target, cluster


@contextlib.contextmanager
def stack_session(paths: ProjectPaths, stack: str) -> Iterator[SdkSession]:
    """:func:`sdk_session` for a stack by name (see :func:`deployed_by_name`)."""
    config, target, cluster = deployed_by_name(paths, stack)
    with sdk_session(target, cluster, kube_args(config)) as session:
        yield session
