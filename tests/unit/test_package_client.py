"""agent_sandbox_pulumi.client without a cluster: the endpoint read from stack outputs (token kept
out of repr), the tunnel's command and lifecycle (a stand-in process listening on the port), and
the one-line errors."""

from __future__ import annotations

import sys

import pytest

from agent_sandbox_pulumi.client import ConnectError, RouterTunnel, StackEndpoint

OUTPUTS = {"namespace": "agent-sandbox-demo", "warmPool": "python-sandbox-warmpool", "routerAuthToken": "t" * 32,
           "routerNamespace": "agent-sandbox-system", "routerService": "sandbox-router-svc", "routerPort": 8080.0,
           "sandboxPort": 8888, "kubeContext": "kind-agent-sandbox"}


def test_the_endpoint_comes_from_the_outputs_and_hides_the_token() -> None:
    endpoint = StackEndpoint.from_outputs("gvisor", OUTPUTS)
    assert (endpoint.namespace, endpoint.warm_pool, endpoint.router_port) == ("agent-sandbox-demo", "python-sandbox-warmpool", 8080)
    assert endpoint.kube_context == "kind-agent-sandbox"
    assert "t" * 32 not in repr(endpoint)
    assert StackEndpoint.from_outputs("e", {**OUTPUTS, "kubeContext": ""}).kube_context is None


def test_a_stack_without_outputs_is_refused_with_the_fix() -> None:
    with pytest.raises(ConnectError, match=r"no output\(s\) \['routerAuthToken'\].*make up STACK=gvisor"):
        StackEndpoint.from_outputs("gvisor", {**OUTPUTS, "routerAuthToken": ""})


def test_the_tunnel_forwards_the_router_service_and_stops_its_process() -> None:
    endpoint = StackEndpoint.from_outputs("gvisor", OUTPUTS)
    tunnel = RouterTunnel(endpoint, ["--context", "kind-agent-sandbox"])
    assert tunnel.command[1:] == ["--context", "kind-agent-sandbox", "port-forward", "--address", "127.0.0.1", "-n",
                                  "agent-sandbox-system", "svc/sandbox-router-svc", f"{tunnel.local_port}:8080"]
    # A stand-in for kubectl that listens where the tunnel would.
    tunnel.command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(tunnel.local_port)]
    with tunnel:
        process = tunnel.process
        assert tunnel.url == f"http://127.0.0.1:{tunnel.local_port}" and process.poll() is None
    assert process.poll() is not None and tunnel.process is None


def test_a_tunnel_that_exits_reports_its_output() -> None:
    tunnel = RouterTunnel(StackEndpoint.from_outputs("gvisor", OUTPUTS))
    tunnel.command = [sys.executable, "-c", "print('error: services \"sandbox-router-svc\" not found'); raise SystemExit(1)"]
    with pytest.raises(ConnectError, match='exited with 1: error: services "sandbox-router-svc" not found'):
        tunnel.start()
