"""Declaring the objects of a vendored release manifest (the controller's, KEDA's) as typed
Pulumi resources, one per object, named after their kind and name.

Owns: ``RESOURCE_CLASSES`` (the kinds a release may hold) and ``declare_object``."""

import re
from typing import Any, Callable, Optional

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.sandbox_iac import manifests

RESOURCE_CLASSES: dict[str, Callable[..., pulumi.CustomResource]] = {
    "Namespace": k8s.core.v1.Namespace,
    "CustomResourceDefinition": k8s.apiextensions.v1.CustomResourceDefinition,
    "ServiceAccount": k8s.core.v1.ServiceAccount,
    "Role": k8s.rbac.v1.Role,
    "RoleBinding": k8s.rbac.v1.RoleBinding,
    "ClusterRole": k8s.rbac.v1.ClusterRole,
    "ClusterRoleBinding": k8s.rbac.v1.ClusterRoleBinding,
    "Service": k8s.core.v1.Service,
    "ConfigMap": k8s.core.v1.ConfigMap,
    "Deployment": k8s.apps.v1.Deployment,
    "APIService": k8s.apiregistration.v1.APIService,
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def declare_object(parent: pulumi.ComponentResource, name: str, obj: dict[str, Any],
                   opts: Optional[pulumi.ResourceOptions], source: str, *,
                   depends_on: Optional[list[pulumi.Resource]] = None,
                   ignore_changes: Optional[list[str]] = None) -> pulumi.CustomResource:
    """``obj`` as a child of ``parent`` named ``<name>-<kind>-<object name>``; a kind this module
    does not know stops the program with a ``ManifestError`` naming ``source``."""
    kind = obj["kind"]
    if kind not in RESOURCE_CLASSES:
        raise manifests.ManifestError(
            f"{source} has a {kind} object ({obj['metadata']['name']}); "
            f"this project knows how to declare {sorted(RESOURCE_CLASSES)}"
        )
    fields = {_snake(k): v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    return RESOURCE_CLASSES[kind](f"{name}-{kind.lower()}-{obj['metadata']['name']}",
                                  opts=child_options(parent, opts, depends_on=depends_on or [],
                                                     ignore_changes=ignore_changes), **fields)
