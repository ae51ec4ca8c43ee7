"""Component-test configuration: the router test modules run once per router implementation.

Every module whose name starts with ``test_router_`` or is ``test_sdk_through_router`` is
parametrised with ``router_impl`` ("python", then "compiled": the router of images/router-go),
so the same hostile, abuse, watch, server and SDK tests judge both. The fixture sets which one
``sdk_harness.RouterProcess`` starts; module-scoped fixtures that start routers take
``router_impl`` so they are made again for each implementation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sdk_harness

ROUTER_MODULES = ("test_router_", "test_sdk_through_router")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "router_impl" in metafunc.fixturenames and module.startswith(ROUTER_MODULES):
        metafunc.parametrize("router_impl", sdk_harness.ROUTER_IMPLEMENTATIONS, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def router_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """The router implementation this module's tests run against (python outside router modules)."""
    impl = getattr(request, "param", "python")
    previous = sdk_harness.ROUTER_IMPL
    sdk_harness.ROUTER_IMPL = impl
    try:
        yield impl
    finally:
        sdk_harness.ROUTER_IMPL = previous
