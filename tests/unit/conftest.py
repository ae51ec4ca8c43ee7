"""Fixtures for the unit tests of the Pulumi program, including a controller manifest shaped
like upstream's v1.0.x releases, derived from the vendored v0.5.6 one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pulumi_harness import PINNED_MANIFEST, ProgramRun, run_program

PREBUILT = {
    "imageBuild": "prebuilt",
    "sandboxImage": "agent-sandbox/runtime:0123456789ab",
    "routerImage": "agent-sandbox/router:0123456789ab",
}


@pytest.fixture(scope="session", autouse=True)
def pinned_manifest_present() -> None:
    if not PINNED_MANIFEST.is_file():
        pytest.fail(f"the vendored controller manifest is missing at {PINNED_MANIFEST}; it is tracked in the repo "
                    "(git checkout -- vendor/)")


@pytest.fixture(scope="session")
def gvisor_run() -> ProgramRun:
    """The gvisor stack (its stack file, images built with pulumi-docker)."""
    return run_program("gvisor")


@pytest.fixture(scope="session")
def kata_run() -> ProgramRun:
    """The kata stack (its stack file, images built with pulumi-docker)."""
    return run_program("kata")


def pinned_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(PINNED_MANIFEST.read_text()) if doc]


def without_webhook_and_v1alpha1(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What upstream v1.0.0 changed, applied to v0.5.6: no v1alpha1, no conversion webhook (CRDs,
    webhook Service, the container's webhook port). None of v1.0.x can be fetched here, so the
    tests derive its shape instead of vendoring it."""
    shaped = []
    for obj in copy.deepcopy(objects):
        if obj["kind"] == "Service" and obj["metadata"]["name"] == "agent-sandbox-webhook-service":
            continue
        if obj["kind"] == "CustomResourceDefinition":
            obj["spec"].pop("conversion", None)
            obj["spec"]["versions"] = [v for v in obj["spec"]["versions"] if v["name"] != "v1alpha1"]
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container["ports"] = [p for p in container["ports"] if p["name"] != "webhook"]
        shaped.append(obj)
    return shaped


def write_manifest(objects: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def v1_shaped_objects() -> list[dict[str, Any]]:
    return without_webhook_and_v1alpha1(pinned_objects())


@pytest.fixture(scope="session")
def v1_shaped_manifest(tmp_path_factory, v1_shaped_objects) -> Path:
    """A v1.0.x-shaped sandbox-with-extensions.yaml on disk (a local controllerManifest)."""
    return write_manifest(v1_shaped_objects, tmp_path_factory.mktemp("v1") / "sandbox-with-extensions.yaml")
