"""KEDA, installed by the stack when the cluster has none (``installKeda``): its operator and
external-metrics API server from the release manifest vendored in the package, so that the
demand-driven warm pool (``warmPoolAutoscaling: keda``) has its autoscaler.

Owns: ``KedaArgs``, ``Keda`` and ``keda_objects`` (the vendored objects with the chosen images).
KEDA's operator makes its own certificates at start (secret ``kedaorg-certs``) and writes their CA
into the APIService; the stack leaves that field to it."""

from pathlib import Path
from typing import Any, NotRequired, Optional, TypedDict

import pulumi
import yaml

from agent_sandbox_pulumi.components.manifest_objects import declare_object
from agent_sandbox_pulumi.sandbox_iac import versions

PACKAGE_DIR = Path(__file__).resolve().parent.parent
VENDORED_MANIFEST = PACKAGE_DIR / versions.KEDA_MANIFEST_VENDORED
NAMESPACE = "keda"
# Deployment name -> (container name, which image input it runs)
CONTAINERS = {"keda-operator": ("keda-operator", "operator_image"),
              "keda-metrics-apiserver": ("keda-metrics-apiserver", "metrics_image")}
# Written by KEDA's operator (its CA); the stack's later `up`s must not take it back.
API_SERVICE_CA_PATHS = ["spec.caBundle", "spec.insecureSkipTLSVerify"]
# Objects the workloads need before they start: everything but the Deployments and the APIService.
LATE_KINDS = ("Deployment", "APIService")


class KedaArgs(TypedDict):
    """Inputs of Keda."""

    operator_image: NotRequired[str]
    """Image of the operator (``/keda``); default the release's ``ghcr.io/kedacore/keda:2.21.0``."""
    metrics_image: NotRequired[str]
    """Image of the metrics API server (``/keda-adapter``); default the release's."""
    image_pull_policy: NotRequired[str]
    """Pull policy of both containers; default ``IfNotPresent`` (``Never`` for node-loaded images)."""


def keda_objects(args: KedaArgs, manifest: Path = VENDORED_MANIFEST) -> list[dict[str, Any]]:
    """The vendored release's objects, with the images and pull policy of ``args``."""
    defaults = {"operator_image": versions.KEDA_OPERATOR_IMAGE, "metrics_image": versions.KEDA_METRICS_IMAGE}
    objects = [o for o in yaml.safe_load_all(manifest.read_text()) if o]
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        container_name, image_input = CONTAINERS[obj["metadata"]["name"]]
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if container["name"] == container_name:
                container["image"] = args.get(image_input) or defaults[image_input]
                container["imagePullPolicy"] = args.get("image_pull_policy") or "IfNotPresent"
    return objects


class Keda(pulumi.ComponentResource):
    """KEDA's operator and metrics API server (namespace ``keda``), ready when both Deployments are.

    Outputs (registered camelCase):
      namespace: KEDA's namespace.
      version: the installed KEDA release.
    """

    namespace: pulumi.Output[str]
    version: pulumi.Output[str]

    def __init__(self, name: str, args: KedaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:Keda", name, None, opts)
        objects = keda_objects(args)
        early = [declare_object(self, name, o, opts, "KEDA manifest") for o in objects if o["kind"] not in LATE_KINDS]
        for obj in objects:
            if obj["kind"] in LATE_KINDS:
                ignore = API_SERVICE_CA_PATHS if obj["kind"] == "APIService" else None
                declare_object(self, name, obj, opts, "KEDA manifest", depends_on=early, ignore_changes=ignore)
        self.namespace = pulumi.Output.from_input(NAMESPACE)
        self.version = pulumi.Output.from_input(versions.KEDA_VERSION)
        self.register_outputs({"namespace": self.namespace, "version": self.version})
