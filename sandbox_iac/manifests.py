"""Loading and adapting the pinned agent-sandbox controller release manifest."""

from __future__ import annotations

import copy
import urllib.request
from pathlib import Path
from typing import Any, Optional

import yaml

from sandbox_iac import constants

CRD_KIND = "CustomResourceDefinition"
# Objects every other object of the release depends on: they are applied first.
FOUNDATION_KINDS = ("Namespace", CRD_KIND)
EXPECTED_CRDS = (
    "sandboxes.agents.x-k8s.io",
    "sandboxtemplates.extensions.agents.x-k8s.io",
    "sandboxclaims.extensions.agents.x-k8s.io",
    "sandboxwarmpools.extensions.agents.x-k8s.io",
)


class ManifestError(ValueError):
    """The controller manifest is missing, unreadable or not the release we expect."""


def read_manifest_text(source: str, base_dir: Optional[Path] = None) -> str:
    """Text of the manifest at an http(s) URL or a local path (relative ones from ``base_dir``)."""
    if source.startswith(("https://", "http://")):
        try:
            with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310 (pinned URL)
                return response.read().decode()
        except OSError as error:
            raise ManifestError(
                f"agent-sandbox:controllerManifest = {source!r} could not be downloaded ({error}); "
                "on an air-gapped machine point it at a local copy "
                "(pulumi config set agent-sandbox:controllerManifest /path/to/sandbox-with-extensions.yaml)"
            ) from error
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ManifestError(
            f"agent-sandbox:controllerManifest = {source!r} is not a readable file; "
            "set it to the release URL or to a local copy of sandbox-with-extensions.yaml"
        )
    return path.read_text()


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """Every Kubernetes object of a multi-document YAML text, empty documents dropped."""
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            raise ManifestError(f"controller manifest holds a document that is not a Kubernetes object: {obj!r:.120}")
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == CRD_KIND}
    missing = [name for name in EXPECTED_CRDS if name not in crds]
    if missing:
        raise ManifestError(f"controller manifest lacks the CRDs {missing}: is it agent-sandbox's sandbox-with-extensions.yaml?")
    return objects


def served_versions(crd: dict[str, Any]) -> list[str]:
    """API versions a CRD serves."""
    return [v["name"] for v in crd["spec"]["versions"] if v.get("served")]


def _controller_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == constants.CONTROLLER_DEPLOYMENT:
            return obj["spec"]["template"]["spec"]["containers"][0]
    raise ManifestError(f"controller manifest has no Deployment {constants.CONTROLLER_DEPLOYMENT!r}")


def adapt_release(objects: list[dict[str, Any]], controller_image: str, image_pull_policy: str) -> list[dict[str, Any]]:
    """The release objects with our image, ``--extensions`` guaranteed and a webhook readiness probe.

    The probe matters: the release's Deployment has none, so "Available" would not mean the
    conversion webhook answers, and custom resources applied right after would fail."""
    adapted = copy.deepcopy(objects)
    container = _controller_container(adapted)
    container["image"] = controller_image
    container["imagePullPolicy"] = image_pull_policy
    args = container.setdefault("args", [])
    if constants.EXTENSIONS_FLAG not in args:
        args.append(constants.EXTENSIONS_FLAG)
    webhook_port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "webhook"), 9443)
    container.setdefault("readinessProbe", {
        "tcpSocket": {"port": webhook_port},
        "periodSeconds": 2,
        "failureThreshold": 30,
    })
    return adapted


def split_foundation(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Namespace and CRDs, everything else): the first group must exist before the second."""
    foundation = [o for o in objects if o["kind"] in FOUNDATION_KINDS]
    workload = [o for o in objects if o["kind"] not in FOUNDATION_KINDS]
    return foundation, workload
