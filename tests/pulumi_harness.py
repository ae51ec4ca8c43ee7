"""Runs the real Pulumi program (or any package consumer) under mocks and records what it registers.

Each run gets a fresh event loop and fresh runtime settings (leaking either between tests
causes "attached to a different loop" failures), the stack file's config as the engine
would pass it, and a monitor that keeps parents, dependencies and options of every resource."""

from __future__ import annotations

import asyncio
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
import yaml
from pulumi.runtime import mocks, rpc, settings

from agent_sandbox_pulumi.sandbox_iac import manifests

REPO_ROOT = Path(__file__).resolve().parents[1]
# The vendored release (package data): what the program reads by default, so runs need no network.
PINNED_MANIFEST = manifests.VENDORED_MANIFEST
PROJECT = "agent-sandbox"
ENDPOINT_SLICE_TYPE = "kubernetes:discovery.k8s.io/v1:EndpointSlice"
# What a KIND cluster's API server publishes in EndpointSlice default/kubernetes: the
# control-plane node's address on the docker network and the secure port.
MOCK_API_SERVER_SLICE = {
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["172.18.0.2"], "conditions": {"ready": True}}],
    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
}


@dataclass
class Registered:
    """One resource the program registered."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    dependencies: list[str]
    ignore_changes: list[str]
    custom: bool
    read: bool
    aliases: list[str] = field(default_factory=list)
    """Alias specs as text: ``noParent``, ``parent=<urn>``, ``name=<name>`` or the alias URN."""

    @property
    def k8s_name(self) -> Optional[str]:
        return (self.inputs.get("metadata") or {}).get("name")

    @property
    def k8s_namespace(self) -> Optional[str]:
        return (self.inputs.get("metadata") or {}).get("namespace")


def _reveal(value: Any) -> Any:
    """Secret values arrive wrapped as ``{<secret sig>: ..., "value": v}``; tests read ``v``."""
    if isinstance(value, dict):
        if rpc._special_sig_key in value and value[rpc._special_sig_key] == rpc._special_secret_sig:
            return _reveal(value.get("value"))
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _alias_text(alias: Any) -> str:
    if alias.HasField("urn") or not alias.HasField("spec"):
        return alias.urn
    spec = alias.spec
    parts = ["noParent"] if spec.noParent else ([f"parent={spec.parentUrn}"] if spec.parentUrn else [])
    parts += [f"name={spec.name}"] if spec.name else []
    return ",".join(parts)


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            state["repoDigest"] = "sha256:" + "ab" * 32
        if args.resource_id:  # a read (`.get`): the object exists with its name
            state.setdefault("metadata", {"name": args.resource_id})
        if args.typ == ENDPOINT_SLICE_TYPE and args.resource_id == "default/kubernetes":
            state.update(MOCK_API_SERVER_SLICE)
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(mocks.MockMonitor):
    """MockMonitor that also keeps each request's parent, dependencies and options."""

    def __init__(self) -> None:
        super().__init__(_Mocks())
        self.registered: list[Registered] = []
        self.stack_outputs: dict[str, Any] = {}

    def RegisterResource(self, request):  # noqa: N802 (gRPC name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = self.resources[response.urn].state if response.urn in self.resources else {}
            self.registered.append(Registered(
                urn=response.urn, type=request.type, name=request.name, inputs=_reveal(dict(inputs)),
                parent=request.parent, dependencies=list(request.dependencies),
                ignore_changes=list(request.ignoreChanges), custom=bool(request.custom),
                read=bool(request.importId), aliases=[_alias_text(a) for a in request.aliases],
            ))
        return response

    def RegisterResourceOutputs(self, request):  # noqa: N802
        if "pulumi:pulumi:Stack" in request.urn:
            self.stack_outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)

    def ReadResource(self, request):  # noqa: N802
        response = super().ReadResource(request)
        self.registered.append(Registered(
            urn=response.urn, type=request.type, name=request.name,
            inputs={"metadata": {"name": request.id}}, parent=request.parent,
            dependencies=list(request.dependencies), ignore_changes=[], custom=True, read=True,
        ))
        return response


@dataclass
class ProgramRun:
    """Everything one mocked run of ``__main__.py`` produced."""

    stack: str
    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_suffix: str) -> list[Registered]:
        return [r for r in self.resources if r.type.endswith(type_suffix)]

    def one(self, type_suffix: str, k8s_name: Optional[str] = None) -> Registered:
        found = [r for r in self.of_type(type_suffix) if k8s_name is None or r.k8s_name == k8s_name]
        assert len(found) == 1, f"expected one {type_suffix} {k8s_name or ''}, got {[r.urn for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def ancestors(self, resource: Registered) -> list[Registered]:
        chain, parent = [], resource.parent
        while parent:
            node = next((r for r in self.resources if r.urn == parent), None)
            if node is None:
                break
            chain.append(node)
            parent = node.parent
        return chain

    def waits_for(self, resource: Registered, other: Registered) -> bool:
        """True if the engine creates ``other`` (or the component holding it) before ``resource``:
        ``resource`` or a component above it depends on it, directly or through what it depends
        on (a pool depends on its template, which depends on the image loads)."""
        other_chain = {other.urn, *(a.urn for a in self.ancestors(other))}
        seen: set[str] = set()
        todo = [resource]
        while todo:
            current = todo.pop()
            for node in [current, *self.ancestors(current)]:
                if node.urn in seen:
                    continue
                seen.add(node.urn)
                if other_chain & set(node.dependencies):
                    return True
                todo.extend(r for r in self.resources if r.urn in node.dependencies)
        return False


def stack_file_config(stack: str) -> dict[str, Any]:
    """The ``config:`` block of ``Pulumi.<stack>.yaml``, keys as the engine passes them."""
    data = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    return dict(data.get("config") or {})


def run_program(stack: str, overrides: Optional[dict[str, Any]] = None, use_stack_file: bool = True) -> ProgramRun:
    """Run ``__main__.py`` for ``stack`` under mocks; ``overrides`` are ``key: value`` without namespace."""
    config = stack_file_config(stack) if use_stack_file else {}
    for key, value in (overrides or {}).items():
        config[f"{PROJECT}:{key}"] = value

    def program() -> None:
        runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__pulumi_program__")

    return run_callable(program, stack, config)


def run_callable(program: Callable[[], None], stack: str = "test", config: Optional[dict[str, Any]] = None,
                 project: str = PROJECT) -> ProgramRun:
    """Run ``program`` (any code declaring resources: a package consumer) under mocks;
    ``config`` keys are namespaced (``agent-sandbox:warmPoolReplicas``)."""
    as_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (config or {}).items()}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    monitor = RecordingMonitor()
    try:
        pulumi.runtime.reset_options(project=project, stack=stack, preview=False)
        pulumi.runtime.set_all_config(as_strings)
        pulumi.runtime.set_mocks(_Mocks(), project=project, stack=stack, preview=False, monitor=monitor)
        # run_in_stack makes the root Stack itself, as the real language host does.
        settings.ROOT.set(None)

        async def run() -> None:
            await pulumi.runtime.stack.run_in_stack(program)

        loop.run_until_complete(run())
        return ProgramRun(stack=stack, resources=monitor.registered, outputs=monitor.stack_outputs)
    finally:
        pulumi.runtime.reset_options(project=project, stack=stack)
        pulumi.runtime.set_all_config({})
        asyncio.set_event_loop(None)
        loop.close()


# ----------------------------------------------------------------------------- NetworkPolicy evaluation

def _selector_matches(selector: Optional[dict[str, Any]], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against ``labels``; {} matches all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict[str, Any], ip: Optional[str], pod: Optional[tuple[dict, dict]]) -> bool:
    import ipaddress

    block = peer.get("ipBlock")
    if block is not None:
        if ip is None:
            return False
        address = ipaddress.ip_address(ip)
        cidr = ipaddress.ip_network(block["cidr"])
        if address.version != cidr.version or address not in cidr:
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or []
                       if ipaddress.ip_network(e).version == address.version)
    if pod is None:
        return False
    namespace_labels, pod_labels = pod
    if "namespaceSelector" not in peer:
        return False  # same-namespace peers: callers pass pods of other namespaces only
    return (_selector_matches(peer.get("namespaceSelector"), namespace_labels)
            and _selector_matches(peer.get("podSelector"), pod_labels))


def _port_admits(ports: Optional[list[dict[str, Any]]], port: int, protocol: str) -> bool:
    if not ports:
        return True  # no ports: every port of every protocol
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        low = int(entry["port"])
        if low <= port <= int(entry.get("endPort", low)):
            return True
    return False


def rules_admitting(rules: list[dict[str, Any]], port: int, protocol: str = "TCP", *, ip: Optional[str] = None,
                    pod: Optional[tuple[dict[str, str], dict[str, str]]] = None, peers_key: str = "to") -> list[int]:
    """Indices of the NetworkPolicy rules (egress: ``to``, ingress: ``from``) that admit a
    connection to/from ``ip`` (an address that is no pod) or ``pod`` = (namespace labels, pod
    labels) on ``port``/``protocol``. Empty: the policy blocks it."""
    admitting = []
    for index, rule in enumerate(rules):
        peers = rule.get(peers_key)
        peer_ok = True if not peers else any(_peer_admits(p, ip, pod) for p in peers)
        if peer_ok and _port_admits(rule.get("ports"), port, protocol):
            admitting.append(index)
    return admitting
