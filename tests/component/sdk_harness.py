"""Shared helpers for component tests: real router/runtime processes on loopback, a recording
test upstream, and official-SDK `Sandbox` handles that need no Kubernetes cluster.

How the SDK runs without a cluster: `k8s_agent_sandbox.Sandbox` accepts a `k8s_helper`
object. Its connector only calls `get_sandbox(name, namespace)` on it (to read
`status.podIPs` for the X-Sandbox-Pod-IP header) and, on terminate, `delete_sandbox_claim`.
`LoopbackK8sHelper` answers those from memory, so every HTTP request the SDK makes goes for
real through `SandboxDirectConnectionConfig(api_url=<router>)` with the routing headers it
always sends, and the router forwards it to the runtime on 127.0.0.1 (allowed only because
the test router runs with ROUTER_ALLOW_LOOPBACK_POD_IP=true).

The runtime engineer may reuse `RuntimeProcess` and `make_sdk_sandbox` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUTER_DIR = REPO_ROOT / "images" / "router"
RUNTIME_DIR = REPO_ROOT / "images" / "runtime"
TEST_TOKEN = "component-test-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers (any HTTP status), or raise with the reason."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


class ServerProcess:
    """A Python server module started as a subprocess; stopped by PID on exit."""

    def __init__(self, module: str, cwd: Path, env: dict[str, str], health_url: str,
                 log_path: Path | None = None) -> None:
        self.module = module
        self.cwd = cwd
        self.env = env
        self.health_url = health_url
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log_handle: Any = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the process and wait for its health URL."""
        env = {**os.environ, **self.env, "PYTHONPATH": str(self.cwd)}
        if self.log_path is not None:
            self._log_handle = open(self.log_path, "wb")
            out: Any = self._log_handle
        else:
            out = subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=self.cwd, env=env,
                                        stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(self.health_url, timeout, self.process)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the process we started (by PID) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def log_text(self) -> str:
        """What the process printed (when started with a log path)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RouterProcess(ServerProcess):
    """`python -m sandbox_router` on 127.0.0.1 with the given environment overrides."""

    def __init__(self, token: str | None = TEST_TOKEN, allow_loopback: bool = True,
                 log_path: Path | None = None, **env: str) -> None:
        self.port = free_port()
        self.token = token
        full_env = {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(self.port), "ROUTER_LOG_LEVEL": "WARNING",
                    "ROUTER_ALLOW_LOOPBACK_POD_IP": "true" if allow_loopback else "false"}
        if token is None:
            full_env["ALLOW_UNAUTHENTICATED_ROUTER"] = "true"
        else:
            full_env["ROUTER_AUTH_TOKEN"] = token
        full_env.update(env)
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("sandbox_router", ROUTER_DIR, full_env, f"{self.url}/healthz", log_path)

    def auth_headers(self) -> dict[str, str]:
        """Authorization header for this router's token (empty when auth is off)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def runtime_available() -> str | None:
    """None when images/runtime/sandbox_runtime can be started, else the reason it cannot."""
    package = RUNTIME_DIR / "sandbox_runtime"
    if not (package / "__main__.py").exists():
        return f"runtime server not written yet ({package}/__main__.py missing)"
    return None


class RuntimeProcess(ServerProcess):
    """`python -m sandbox_runtime` on 127.0.0.1 with a temporary base dir."""

    def __init__(self, base_dir: Path, log_path: Path | None = None, **env: str) -> None:
        self.port = free_port()
        self.base_dir = base_dir
        full_env = {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(self.port),
                    "SANDBOX_BASE_DIR": str(base_dir)}
        full_env.update(env)
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("sandbox_runtime", RUNTIME_DIR, full_env, f"{self.url}/", log_path)


class LoopbackK8sHelper:
    """Stands in for the SDK's K8sHelper: answers the Sandbox lookups from memory, no cluster.

    Only the methods the SDK's Sandbox/connector call during HTTP operations are provided.
    """

    injected_api_client = None

    def __init__(self, pod_ip: str = "127.0.0.1") -> None:
        self.pod_ip = pod_ip
        self.deleted_claims: list[tuple[str, str]] = []

    def get_sandbox(self, name: str, namespace: str) -> dict[str, Any]:
        """A Ready Sandbox object whose pod IP is the loopback runtime."""
        return {"metadata": {"name": name, "namespace": namespace, "annotations": {}},
                "status": {"podIPs": [{"ip": self.pod_ip}],
                           "conditions": [{"type": "Ready", "status": "True", "message": "ready"}]}}

    def delete_sandbox_claim(self, claim_name: str, namespace: str, *args: Any, **kwargs: Any) -> None:
        """Record the deletion instead of calling the API server."""
        self.deleted_claims.append((claim_name, namespace))


def make_sdk_sandbox(router_url: str, runtime_port: int, token: str | None = TEST_TOKEN,
                     sandbox_id: str = "sbx-component", namespace: str = "default",
                     pod_ip: str = "127.0.0.1") -> Any:
    """An official-SDK Sandbox whose HTTP goes router_url -> (X-Sandbox-Pod-IP) -> runtime."""
    from k8s_agent_sandbox.models import SandboxDirectConnectionConfig
    from k8s_agent_sandbox.sandbox import Sandbox

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    config = SandboxDirectConnectionConfig(api_url=router_url, server_port=runtime_port, extra_headers=headers)
    return Sandbox(claim_name=f"{sandbox_id}-claim", sandbox_id=sandbox_id, namespace=namespace,
                   connection_config=config, k8s_helper=LoopbackK8sHelper(pod_ip))


# ----------------------------------------------------------------------------------------------
# Recording upstream: an in-process ASGI server that remembers every request it was sent.
# ----------------------------------------------------------------------------------------------
@dataclass
class SeenRequest:
    """One request as the test upstream received it."""

    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body_size: int = 0

    def header(self, name: str) -> list[str]:
        """All values of a header (case-insensitive)."""
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class RecordingUpstream:
    """uvicorn in a background thread serving a small ASGI app used as a fake sandbox.

    Paths: /slow?seconds=N (sleeps), /big?bytes=N (streams N bytes), /echo (returns the body),
    /status?code=N, /ws (WebSocket echo); anything else returns the request as JSON.
    """

    port: int = field(default_factory=free_port)
    seen: list[SeenRequest] = field(default_factory=list)
    _server: Any = None
    _thread: threading.Thread | None = None

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        record = SeenRequest(scope.get("method", "WEBSOCKET"), scope["raw_path"].decode("latin-1"),
                             scope["query_string"].decode("latin-1"), headers)
        self.seen.append(record)
        path = scope["path"]
        params = dict(p.split("=", 1) for p in record.query.split("&") if "=" in p)
        if scope["type"] == "websocket":
            await self._websocket(receive, send)
            return
        if path == "/echo":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                record.body_size += len(chunk)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if not message.get("more_body"):
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body_size = 0
        while True:
            message = await receive()
            body_size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        record.body_size = body_size
        if path == "/slow":
            await asyncio.sleep(float(params.get("seconds", "5")))
        if path == "/big":
            total = int(params.get("bytes", "1048576"))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            block = b"x" * 65536
            while total > 0:
                piece = block[:min(total, len(block))]
                total -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": total > 0})
            return
        status = int(params.get("code", "200")) if path == "/status" else 200
        payload = json.dumps({"method": record.method, "raw_path": record.raw_path, "query": record.query,
                              "headers": headers, "body_size": body_size}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"x-upstream", b"recording"),
                                (b"connection", b"x-secret-hop"), (b"x-secret-hop", b"leak")]})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _websocket(receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})

    def start(self) -> RecordingUpstream:
        """Serve on 127.0.0.1:<port> in a daemon thread."""
        import uvicorn

        config = uvicorn.Config(self._app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", ws="websockets", interface="asgi3", proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("recording upstream did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def clear(self) -> None:
        """Forget the requests seen so far."""
        self.seen.clear()


@contextlib.contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    """Context manager form of RecordingUpstream."""
    upstream = RecordingUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@dataclass
class RawResponse:
    """A response read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send raw bytes to 127.0.0.1:port and read one response (Content-Length or until close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a response head: {data!r}")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return RawResponse(status, headers, _dechunk(body))
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return RawResponse(status, headers, body[:length] if length >= 0 else body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def build_request(headers: list[tuple[str, str]], method: str = "GET", target: str = "/probe",
                  body: bytes = b"") -> bytes:
    """Serialise a request with an exact header list (duplicates and odd values kept as given)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: router"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
