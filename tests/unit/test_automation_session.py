"""A session with a deployed stack: its target from the outputs, and the official SDK connected
through the managed tunnel with the router token, closed and stopped whatever happens (a real
dummy process stands in for ``kubectl port-forward``, a recording fake for the SDK client)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from automation import session as sessions
from automation.session import StackTarget
from automation.tunnel import PortForwardTunnel
from test_automation_tunnel import SLEEPER, process_gone

TOKEN = "t" * 32


def test_target_needs_the_stack_outputs():
    with pytest.raises(ValueError, match=r"no output\(s\) \['routerAuthToken'\].*automation up gvisor"):
        StackTarget.from_outputs("gvisor", {"namespace": "n", "warmPool": "p", "warmPoolReplicas": 2,
                                                  "runtimeClass": "gvisor"})
    target = StackTarget.from_outputs("gvisor", {"namespace": "n", "warmPool": "p", "warmPoolReplicas": 2.0,
                                                       "runtimeClass": "gvisor", "routerAuthToken": TOKEN})
    assert target.warm_pool_replicas == 2 and TOKEN not in repr(target)


class RecordingClient:
    """Stands in for ``k8s_agent_sandbox.SandboxClient``: records how it was connected."""

    made: list["RecordingClient"] = []

    def __init__(self, connection_config, api_client):
        self.connection, self.api_client, self.closed = connection_config, api_client, False
        RecordingClient.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True


@pytest.fixture
def fake_sdk(monkeypatch):
    import k8s_agent_sandbox

    RecordingClient.made = []
    monkeypatch.setattr(k8s_agent_sandbox, "SandboxClient", RecordingClient)
    monkeypatch.setattr(sessions, "PortForwardTunnel",
                        lambda kube_args: PortForwardTunnel(command=SLEEPER, wait_for_port=False))


def test_the_sdk_is_connected_through_the_tunnel_with_the_router_token(fake_sdk):
    target = StackTarget("gvisor", "demo", "pool", 2, "gvisor", TOKEN)
    cluster = SimpleNamespace(client=object())
    lines = []
    with pytest.raises(RuntimeError, match="the body failed"):
        with sessions.sdk_session(target, cluster, ["--context", "kind-x"], log=lines.append) as session:
            (client,) = RecordingClient.made
            assert session.client is client and session.target is target and client.api_client is cluster.client
            assert client.connection.api_url == session.router_url == session.tunnel.url
            assert client.connection.extra_headers == {"Authorization": f"Bearer {TOKEN}"}
            assert client.connection.server_port == 8888
            assert lines == [f"tunnel: {session.router_url} -> svc/sandbox-router-svc (pid {session.tunnel.pid})"]
            raise RuntimeError("the body failed")
    assert client.closed and process_gone(session.tunnel.pid)


def test_a_stack_session_uses_the_config_its_last_commands_ran_with(tmp_path, fake_sdk, monkeypatch):
    from automation.overrides import save_overrides, save_setup_overrides
    from automation.paths import ProjectPaths

    paths = ProjectPaths(tmp_path, tmp_path / "out")
    (tmp_path / "Pulumi.s.yaml").write_text("config:\n  agent-sandbox:clusterFlavour: existing\n")
    save_setup_overrides(paths, "s", {"imageBuild": "prebuilt", "sandboxImage": "setup/runtime:1",
                                      "routerImage": "setup/router:1"})
    save_overrides(paths, "s", {"sandboxImage": "mine/runtime:2", "imageRegistry": "r/x", "kubeContext": "c"})
    target = StackTarget("s", "demo", "pool", 2, "gvisor", TOKEN)
    seen = {}

    def deployed_stack(paths_, config, overrides):
        seen.update(overrides=dict(overrides), context=config.kube_context)
        return target, SimpleNamespace(client=object())

    monkeypatch.setattr(sessions, "deployed_stack", deployed_stack)
    with sessions.stack_session(paths, "s") as session:
        assert session.target is target
    assert seen["overrides"] == {"imageBuild": "prebuilt", "sandboxImage": "mine/runtime:2",
                                 "routerImage": "setup/router:1", "imageRegistry": "r/x", "kubeContext": "c"}
    assert seen["context"] == "c"
