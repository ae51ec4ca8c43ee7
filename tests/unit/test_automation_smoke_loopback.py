"""The smoke checks against the project's real router and runtime processes on loopback,
through the official SDK (the router engineer's component harness provides both and an SDK
Sandbox handle that needs no cluster). Only the Kubernetes side is faked.

Expected on this machine: commands, files, the token/router checks and (loopback-only) egress
pass; isolation fails, because the "sandbox" is this host itself - which shows the check can fail."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from automation import smoke
from automation.session import StackTarget
from automation.tunnel import free_local_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "component"))
from sdk_harness import TEST_TOKEN, RouterProcess, RuntimeProcess, make_sdk_sandbox, runtime_available  # noqa: E402

pytestmark = pytest.mark.timeout(180)


class HostCluster:
    """Kubernetes stand-in: the claimed pod existed before the claim, the node runs this host's kernel."""

    def __init__(self, pod_name: str, closed_port: int):
        created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        self.before = {pod_name: SimpleNamespace(metadata=SimpleNamespace(creation_timestamp=created))}
        self.closed_port = closed_port

    def pods(self, namespace):
        return dict(self.before)

    def wait_pool_refilled(self, namespace, name, replicas, claimed_pod, timeout):
        return 0.1

    def pod(self, namespace, name):
        return SimpleNamespace(spec=SimpleNamespace(node_name="host", runtime_class_name="gvisor",
                                                    automount_service_account_token=False))

    def node_facts(self, node):
        return {"name": node, "kernel": os.uname().release, "internal_ip": None}

    def api_endpoints(self):
        return {"cluster_ip": "127.0.0.1", "port": self.closed_port, "endpoints": []}


class OneSandboxSdk:
    def __init__(self, sandbox):
        self.sandbox = sandbox

    def create_sandbox(self, warmpool, namespace, sandbox_ready_timeout):
        return self.sandbox


class LoopbackSmoke(smoke.SmokeRun):
    def egress_targets(self):
        # Never probe a real address from a test: every destination is a closed loopback port.
        return [(name, "127.0.0.1", self.cluster.closed_port) for name, _, _ in super().egress_targets()]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    reason = runtime_available()
    if reason is not None:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("logs")
    # The runtime resolves `python` on PATH for commands: use this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    runtime = RuntimeProcess(tmp_path_factory.mktemp("base"), log_path=logs / "runtime.log", PATH=path)
    router = RouterProcess(log_path=logs / "router.log")
    with runtime, router:
        yield runtime, router


def test_smoke_checks_through_the_real_router_and_runtime(servers):
    runtime, router = servers
    sandbox = make_sdk_sandbox(router.url, runtime.port, sandbox_id="python-sandbox-warmpool-x1y2z",
                               namespace="agent-sandbox-demo")
    target = StackTarget("local", "agent-sandbox-demo", "python-sandbox-warmpool", 2, "gvisor", TEST_TOKEN)
    run = LoopbackSmoke(target, HostCluster(sandbox.sandbox_id, free_local_port()), OneSandboxSdk(sandbox),
                        router.url, log=lambda line: None, sandbox_port=runtime.port)
    report = run.run()
    by_id = {check.id: check for check in report.checks}
    assert {i: c.status for i, c in by_id.items()} == {1: "pass", 2: "pass", 3: "pass", 4: "fail", 5: "pass",
                                                        6: "pass", 7: "pass"}, [(c.id, c.detail) for c in report.checks]
    assert by_id[1].data["stdout"] == "smoke 42\n" and by_id[1].data["failing_exit_code"] == 3
    assert by_id[6].data["router_status_codes"]["no_token"] in (401, 403)
    assert by_id[6].data["router_status_codes"]["right_token"] == 200
    assert "kernel" in by_id[4].detail
