"""The one cluster every e2e module shares: brought up once per session, torn down at the end."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from tests.e2e.cluster_harness import (
    CACHE_DIR, CLUSTER_UP_TIMEOUT_SECONDS, VERSIONS, Cluster, missing_artefacts, run_make, skip_loudly,
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Bring the cluster up with `make cluster-up`, yield it, and tear it down with `make cluster-down`."""
    if os.geteuid() != 0:
        skip_loudly("the e2e cluster needs root (containerd, kubelet, iptables)")
    missing = missing_artefacts()
    if missing:
        skip_loudly(f"toolchain cache incomplete ({len(missing)} artefacts missing, e.g. {missing[0]}); "
                    "run `make toolchain-cluster` first")
    started = time.monotonic()
    up = run_make("cluster-up", CLUSTER_UP_TIMEOUT_SECONDS)
    lines = up.stdout.strip().splitlines()
    if up.returncode != 0 or not lines or not lines[-1].startswith("KUBECONFIG="):
        down = run_make("cluster-down", 300)
        pytest.fail(f"make cluster-up failed (exit {up.returncode}); cluster-down exit {down.returncode}; "
                    f"component logs: /var/log/agent-sandbox-e2e\n{up.stderr[-3000:]}")
    print(f"cluster-up took {time.monotonic() - started:.0f}s", flush=True)
    kubeconfig = lines[-1].split("=", 1)[1]
    kubectl = str(CACHE_DIR / "kubernetes" / VERSIONS["KUBERNETES_VERSION"] / "bin" / "kubectl")
    try:
        yield Cluster(kubeconfig=kubeconfig, kubectl_path=kubectl)
    finally:
        down = run_make("cluster-down", 300)
        assert down.returncode == 0, f"make cluster-down left something behind:\n{down.stderr}"
