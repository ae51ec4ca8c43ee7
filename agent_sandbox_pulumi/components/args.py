"""Input types shared by several components (TypedDicts, so they serialize and the component
provider infers their schema). No ``from __future__ import annotations`` here or in any module
whose types the provider analyzes: it reads the annotations as real types at run time."""

from typing import NotRequired, TypedDict


class ContainerResources(TypedDict):
    """Kubernetes requests and limits of a container; quantities as strings (``500m``, ``1Gi``)."""

    requests: NotRequired[dict[str, str]]
    """Requested quantities by resource name (``cpu``, ``memory``, ``ephemeral-storage``)."""
    limits: NotRequired[dict[str, str]]
    """Limits by resource name; the sandbox workspace volume is sized by ``ephemeral-storage``."""


class EgressDestination(TypedDict):
    """One public destination sandboxes may reach with ``sandboxEgress: allowList``."""

    cidr: str
    """Public destination network, e.g. ``151.101.0.0/16``; private and cluster ranges are refused."""
    ports: list[str]
    """Ports or ranges, e.g. ``["443", "8000-8100"]``; port 53 is refused (DNS goes to the cluster)."""
    protocol: NotRequired[str]
    """``TCP`` (default), ``UDP`` or ``SCTP``."""
