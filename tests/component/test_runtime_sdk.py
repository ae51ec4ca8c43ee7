"""The official SDK (k8s-agent-sandbox, pinned in requirements-dev.txt) against the real runtime.

The SDK's ``SandboxDirectConnectionConfig(api_url=...)`` sends every request to ``api_url``; only
the Sandbox handle's Kubernetes lookups (pod IP, pod name, service FQDN) touch a cluster. The
handle is built with ``Sandbox(..., k8s_helper=...)`` and a stand-in that answers those lookups
with an empty Sandbox object, so ``commands`` and ``files`` go over real HTTP to the real server
with the SDK's own request shapes (routing headers included; the runtime ignores them).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.component.test_runtime_support import RuntimeServer

sdk = pytest.importorskip("k8s_agent_sandbox", reason="k8s-agent-sandbox is not installed (make venv)")
from k8s_agent_sandbox.exceptions import SandboxRequestError  # noqa: E402
from k8s_agent_sandbox.models import SandboxDirectConnectionConfig  # noqa: E402
from k8s_agent_sandbox.sandbox import Sandbox  # noqa: E402


class NoClusterK8sHelper:
    """Answers the Sandbox handle's Kubernetes lookups without a cluster."""

    injected_api_client = None

    def get_sandbox(self, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": {}}

    def delete_sandbox_claim(self, name: str, namespace: str) -> None:
        """Nothing to delete: no claim was created."""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with RuntimeServer(tmp_path_factory.mktemp("sdk") / "app") as server:
        handle = Sandbox(
            claim_name="sandbox-claim-test",
            sandbox_id="sandbox-test",
            namespace="default",
            connection_config=SandboxDirectConnectionConfig(api_url=server.url),
            k8s_helper=NoClusterK8sHelper(),  # type: ignore[arg-type]
        )
        handle.server = server  # type: ignore[attr-defined]
        yield handle
        handle.close_connection()


def test_sdk_commands_run(sandbox: Sandbox) -> None:
    result = sandbox.commands.run("echo hello from the sdk")
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("hello from the sdk\n", "", 0, False)
    assert sandbox.commands.run("sh -c 'exit 7'").exit_code == 7


def test_sdk_command_timeout_sets_timed_out(sandbox: Sandbox) -> None:
    result = sandbox.commands.run("sleep 20", command_timeout=0.5)
    assert result.timed_out is True and result.exit_code != 0


def test_sdk_write_read_nested_text_and_bytes(sandbox: Sandbox) -> None:
    sandbox.files.write("notes/day/one.txt", "héllo")
    assert sandbox.files.read("notes/day/one.txt") == "héllo".encode()
    payload = os.urandom(100_000)
    sandbox.files.write("bin/blob.dat", payload)
    assert sandbox.files.read("bin/blob.dat") == payload


def test_sdk_streamed_write_and_read_to(sandbox: Sandbox) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    sandbox.files.write("stream/in.bin", io.BytesIO(payload))
    sink = io.BytesIO()
    assert sandbox.files.read_to("stream/in.bin", sink) == len(payload)
    assert sink.getvalue() == payload


def test_sdk_list_and_exists(sandbox: Sandbox) -> None:
    sandbox.files.write("tree/a.txt", b"aaa")
    sandbox.files.write("tree/sub/b.txt", b"b")
    entries = {entry.name: entry for entry in sandbox.files.list("tree")}
    assert set(entries) == {"a.txt", "sub"}
    assert (entries["a.txt"].type, entries["a.txt"].size) == ("file", 3)
    assert entries["sub"].type == "directory"
    assert sandbox.files.exists("tree/sub/b.txt") is True
    assert sandbox.files.exists("tree/missing.txt") is False
    assert "tree" in [entry.name for entry in sandbox.files.list("/")]


def test_sdk_sees_commands_and_files_in_the_same_place(sandbox: Sandbox) -> None:
    sandbox.commands.run("sh -c 'mkdir -p made && echo by-command > made/out.txt'")
    assert sandbox.files.read("made/out.txt") == b"by-command\n"
    sandbox.files.write("script.py", "print(6 * 7)")
    assert sandbox.commands.run(f"{sys.executable} script.py").stdout == "42\n"


def test_sdk_escape_attempts_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxRequestError) as refused:
        sandbox.files.read("../../etc/passwd", allow_unsafe_paths=True)
    assert refused.value.status_code == 403
    with pytest.raises(SandboxRequestError):
        sandbox.files.exists("../outside")
    with pytest.raises(SandboxRequestError):
        sandbox.files.write("../escape.txt", b"x", allow_unsafe_paths=True)
    assert not (sandbox.server.base_dir.parent / "escape.txt").exists()  # type: ignore[attr-defined]
