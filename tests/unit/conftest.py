"""Fixtures for the unit tests of the Pulumi program."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import PINNED_MANIFEST, ProgramRun, run_program

PREBUILT = {
    "imageBuild": "prebuilt",
    "sandboxImage": "agent-sandbox/runtime:0123456789ab",
    "routerImage": "agent-sandbox/router:0123456789ab",
}


@pytest.fixture(scope="session", autouse=True)
def pinned_manifest_present() -> None:
    if not PINNED_MANIFEST.is_file():
        pytest.fail(f"the pinned controller manifest is missing at {PINNED_MANIFEST} (CI lays ../shared beside the clone)")


@pytest.fixture(scope="session")
def gvisor_run() -> ProgramRun:
    """The gvisor stack (its stack file, images built with pulumi-docker)."""
    return run_program("gvisor")


@pytest.fixture(scope="session")
def kata_run() -> ProgramRun:
    """The kata stack (its stack file, images built with pulumi-docker)."""
    return run_program("kata")
