"""The official SDK (k8s-agent-sandbox==1.0.8) drives our router, which forwards to our runtime.

No cluster: the SDK's Sandbox handle gets a stand-in for its Kubernetes lookups (see
sdk_harness.LoopbackK8sHelper) so the X-Sandbox-Pod-IP it sends is 127.0.0.1; every HTTP request
goes SDK -> router (bearer token via extra_headers, routing headers from the SDK) -> runtime.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sdk_harness import TEST_TOKEN, RouterProcess, RuntimeProcess, make_sdk_sandbox, runtime_available

pytest.importorskip("k8s_agent_sandbox", reason="k8s-agent-sandbox is not installed (run `make venv`)")
from k8s_agent_sandbox.exceptions import SandboxRequestError  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = runtime_available()
    if reason is not None:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("sdk-logs")
    base = tmp_path_factory.mktemp("sdk-base")
    runtime = RuntimeProcess(base, log_path=logs / "runtime.log", SANDBOX_LOG_LEVEL="warning")
    router = RouterProcess(log_path=logs / "router.log")
    runtime.start()
    try:
        router.start()
        try:
            sandbox = make_sdk_sandbox(router.url, runtime.port)
            yield {"sandbox": sandbox, "runtime": runtime, "router": router, "base": base}
            sandbox.close_connection()
        finally:
            router.stop()
    finally:
        runtime.stop()


def test_commands_run(stack: dict[str, Any]) -> None:
    result = stack["sandbox"].commands.run("echo hello through the router")
    assert (result.stdout, result.exit_code, result.timed_out) == ("hello through the router\n", 0, False)
    assert stack["sandbox"].commands.run("sh -c 'echo err >&2; exit 3'").exit_code == 3


def test_command_timeout(stack: dict[str, Any]) -> None:
    result = stack["sandbox"].commands.run("sleep 30", timeout=20, command_timeout=1)
    assert result.timed_out is True
    assert result.exit_code != 0


def test_files_write_read_nested(stack: dict[str, Any]) -> None:
    files = stack["sandbox"].files
    files.write("top.txt", "top level")
    files.write("deeply/nested/dir/data.bin", b"\x00\x01\x02binary")
    assert files.read("top.txt") == b"top level"
    assert files.read("deeply/nested/dir/data.bin") == b"\x00\x01\x02binary"
    assert (Path(stack["base"]) / "deeply/nested/dir/data.bin").read_bytes() == b"\x00\x01\x02binary"


def test_files_list_and_exists(stack: dict[str, Any]) -> None:
    files = stack["sandbox"].files
    files.write("listing/a.txt", "a")
    files.write("listing/sub/b.txt", "bb")
    entries = {entry.name: entry for entry in files.list("listing")}
    assert set(entries) == {"a.txt", "sub"}
    assert entries["a.txt"].type == "file" and entries["a.txt"].size == 1
    assert entries["sub"].type == "directory"
    assert files.exists("listing/sub/b.txt") is True
    assert files.exists("listing/missing.txt") is False


def test_large_file_streaming_both_ways(stack: dict[str, Any], tmp_path: Path) -> None:
    files = stack["sandbox"].files
    size = 48 * 1024 * 1024
    payload = os.urandom(1024 * 1024) * (size // (1024 * 1024))
    files.write("big/blob.bin", io.BytesIO(payload), timeout=120)  # streamed (chunked) upload
    assert (Path(stack["base"]) / "big/blob.bin").stat().st_size == size
    sink = io.BytesIO()
    assert files.read_to("big/blob.bin", sink, timeout=120) == size  # streamed download
    assert sink.getvalue() == payload


def test_missing_file_read_is_an_sdk_error(stack: dict[str, Any]) -> None:
    with pytest.raises(SandboxRequestError) as err:
        stack["sandbox"].files.read("does/not/exist.txt")
    assert err.value.status_code == 404


def test_wrong_token_is_rejected_by_the_router(stack: dict[str, Any]) -> None:
    intruder = make_sdk_sandbox(stack["router"].url, stack["runtime"].port, token="not-the-token")
    with pytest.raises(SandboxRequestError) as err:
        intruder.commands.run("echo should not run")
    assert err.value.status_code == 401
    intruder.close_connection()


def test_router_metrics_saw_the_sdk_traffic(stack: dict[str, Any]) -> None:
    text = requests.get(f"{stack['router'].url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                        timeout=5).text
    line = next(line for line in text.splitlines() if line.startswith('sandbox_router_requests_total{code="200"}'))
    assert float(line.split()[-1]) >= 5
