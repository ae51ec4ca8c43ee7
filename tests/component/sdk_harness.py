"""Shared helpers for component tests: real router/runtime processes on loopback, a recording
test upstream, and official-SDK `Sandbox` handles that need no Kubernetes cluster.

How the SDK runs without a cluster: `k8s_agent_sandbox.Sandbox` accepts a `k8s_helper`
object. Its connector only calls `get_sandbox(name, namespace)` on it (to read
`status.podIPs` for the X-Sandbox-Pod-IP header) and, on terminate, `delete_sandbox_claim`.
`LoopbackK8sHelper` answers those from memory, so every HTTP request the SDK makes goes for
real through `SandboxDirectConnectionConfig(api_url=<router>)` with the routing headers it
always sends, and the router forwards it to the runtime on 127.0.0.1 (allowed only because
the test router runs with ROUTER_ALLOW_LOOPBACK_POD_IP=true). By default the test router uses
the legacy `ROUTER_RESOLVER=dns` (targets from the caller's X-Sandbox-Pod-IP); tests of the
production `watch` resolver pass `**FakeKubeAPI.router_env()` instead, so the router learns its
targets from sandbox pods served by `FakeKubeAPI` (a loopback HTTPS Kubernetes API double).

The runtime engineer may reuse `RuntimeProcess` and `make_sdk_sandbox` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


# Which router implementation RouterProcess starts: "python" (python -m sandbox_router) or
# "compiled" (images/router-go, built once per session; the stack's routerImplementation names
# them the same way). The router test modules run
# once per implementation (tests/component/conftest.py sets this per module and parameter).
ROUTER_IMPLEMENTATIONS = ("python", "compiled")
ROUTER_IMPL = os.environ.get("ROUTER_IMPL", "python")
GO_ROUTER_DIR = REPO_ROOT / "images" / "router-go"
_go_router_binary: str | None = None


def go_router_binary() -> str:
    """The compiled router's binary, built (or found in its content-addressed cache) once."""
    global _go_router_binary
    if _go_router_binary is None:
        result = subprocess.run([str(GO_ROUTER_DIR / "build.sh")], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"images/router-go/build.sh failed ({result.returncode}): {result.stderr}")
        _go_router_binary = result.stdout.strip().splitlines()[-1]
    return _go_router_binary


class ServerProcess:
    """A Python server module (or, with `command`, any program) started as a subprocess; stopped
    by PID on exit."""

    def __init__(self, module: str, cwd: Path, env: dict[str, str], health_url: str,
                 log_path: Path | None = None, command: list[str] | None = None) -> None:
        self.module = module
        self.command = command
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
        command = self.command or [sys.executable, "-m", self.module]
        self.process = subprocess.Popen(command, cwd=self.cwd, env=env,
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
    """The router (`python -m sandbox_router`, or the compiled one when ROUTER_IMPL is "compiled") on
    127.0.0.1 with the given environment overrides."""

    def __init__(self, token: str | None = TEST_TOKEN, allow_loopback: bool = True,
                 log_path: Path | None = None, **env: str) -> None:
        self.port = free_port()
        self.token = token
        full_env = {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(self.port), "ROUTER_LOG_LEVEL": "WARNING",
                    "ROUTER_ALLOW_LOOPBACK_POD_IP": "true" if allow_loopback else "false",
                    "ROUTER_RESOLVER": "dns"}
        if token is None:
            full_env["ALLOW_UNAUTHENTICATED_ROUTER"] = "true"
        else:
            full_env["ROUTER_AUTH_TOKEN"] = token
        full_env.update(env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.impl = ROUTER_IMPL
        command = [go_router_binary()] if self.impl == "compiled" else None
        super().__init__("sandbox_router", ROUTER_DIR, full_env, f"{self.url}/healthz", log_path, command)

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
    host: str = "127.0.0.1"
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
        """Serve on <host>:<port> (127.0.0.1 unless given) in a daemon thread."""
        import uvicorn

        config = uvicorn.Config(self._app, host=self.host, port=self.port, log_level="warning",
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


# ----------------------------------------------------------------------------------------------
# FakeKubeAPI: the part of the Kubernetes API the router's watch resolver uses, over real TLS.
# ----------------------------------------------------------------------------------------------
SANDBOX_NAME_HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
WARM_POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"


def make_test_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).

    Returns (ca.crt, server.crt, server.key). Raises RuntimeError when openssl is missing.
    """
    import shutil

    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt, ext = (directory / n for n in ("server.key", "server.csr", "server.crt", "server.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=fake-kube-ca",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    return ca_crt, crt, key


def sandbox_pod(name: str, namespace: str, ip: str = "127.0.0.1", *, sandbox: str | None = None,
                phase: str = "Running", labels: dict[str, str] | None = None, owner_kind: str = "Sandbox",
                owner_api_version: str = "agents.x-k8s.io/v1beta1", host_network: bool = False,
                deleting: bool = False, uid: str | None = None) -> dict[str, Any]:
    """A Pod object shaped like the agent-sandbox controller's: named after its Sandbox, labelled
    with the Sandbox name hash and controlled (ownerReference) by the Sandbox."""
    import uuid

    metadata: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
        "creationTimestamp": "2026-08-20T10:00:00Z",
        "labels": {SANDBOX_NAME_HASH_LABEL: "0badc0de", **(labels or {})},
        "ownerReferences": [{"apiVersion": owner_api_version, "kind": owner_kind, "name": sandbox or name,
                             "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}],
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-08-20T10:05:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"hostNetwork": host_network, "containers": [{"name": "runtime", "image": "runtime:test"}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}] if ip else [],
                       "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}]}}


class FakeKubeAPI:
    """A loopback HTTPS server answering `GET /api/v1/namespaces/<ns>/pods` list and watch.

    It behaves like a namespaced RBAC grant of pods get/list/watch: other paths are 404, other
    namespaces 403, a wrong bearer token 401. Watches stream JSON lines from an event log
    (resourceVersion ordered); `expire_watches()` ends open watches with a 410 Gone event, as the
    API server does after etcd compaction. Every request is recorded in `requests`.
    """

    def __init__(self, directory: Path, namespaces: tuple[str, ...] = ("default",),
                 token: str = "fake-service-account-token") -> None:
        self.directory = directory
        self.namespaces = set(namespaces)
        self.token = token
        self.ca, self._crt, self._key = make_test_tls(directory / "tls")
        self.sa_dir = directory / "serviceaccount"
        self.sa_dir.mkdir(parents=True, exist_ok=True)
        (self.sa_dir / "ca.crt").write_bytes(self.ca.read_bytes())
        (self.sa_dir / "namespace").write_text("agent-sandbox-system")
        self.write_token(token)
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.resource_version = 1000
        self.compacted_below = 0  # watches from an older resourceVersion get 410 Gone
        self.watch_generation = 0  # bumped by expire_watches(): open watches end with 410
        self.fail_status: int | None = None
        self.requests: list[tuple[str, str, str]] = []  # (method, path with query, Authorization)
        self._cond = threading.Condition()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- state -------------------------------------------------------------------------------
    def write_token(self, token: str) -> None:
        """Put `token` in the service-account dir (what the kubelet does when it rotates it)."""
        (self.sa_dir / "token").write_text(token)

    def put_pod(self, pod: dict[str, Any]) -> None:
        """Create or update a pod (ADDED or MODIFIED event)."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._cond:
            kind = "MODIFIED" if key in self.pods else "ADDED"
            self.resource_version += 1
            meta["resourceVersion"] = str(self.resource_version)
            self.pods[key] = pod
            self.events.append((self.resource_version, key[0], kind, json.loads(json.dumps(pod))))
            self._cond.notify_all()

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (DELETED event)."""
        with self._cond:
            pod = self.pods.pop((namespace, name))
            self.resource_version += 1
            pod["metadata"]["resourceVersion"] = str(self.resource_version)
            self.events.append((self.resource_version, namespace, "DELETED", pod))
            self._cond.notify_all()

    def expire_watches(self) -> None:
        """Compact history: open watches end with 410 Gone, and so does any later watch from a
        resourceVersion older than the current one (the client must list again)."""
        with self._cond:
            self.compacted_below = self.resource_version
            self.watch_generation += 1
            self._cond.notify_all()

    def rotate_token(self, token: str) -> None:
        """Accept only `token` from now on and put it in the service-account dir."""
        self.write_token(token)
        self.token = token

    def router_env(self) -> dict[str, str]:
        """Environment for a RouterProcess that should use this API in watch mode."""
        return {"ROUTER_RESOLVER": "watch", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(self.port), "ROUTER_SERVICEACCOUNT_DIR": str(self.sa_dir)}

    def list_calls(self, namespace: str) -> int:
        """How many list (non-watch) requests were made for a namespace."""
        prefix = f"/api/v1/namespaces/{namespace}/pods?"
        return sum(1 for _, path, _ in self.requests if path.startswith(prefix) and "watch=" not in path)

    # -- serving -----------------------------------------------------------------------------
    def start(self) -> FakeKubeAPI:
        """Serve HTTPS on 127.0.0.1:<free port> in a daemon thread."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._crt, self._key)
        api = self

        class Handler(_KubeHandler):
            owner = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open watches end."""
        if self._server is not None:
            with self._cond:
                self.namespaces = set()
                self._cond.notify_all()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


_PODS_PATH = re.compile(r"/api/v1/namespaces/([a-z0-9-]+)/pods")


class _KubeHandler(BaseHTTPRequestHandler):
    """Request handler of FakeKubeAPI (`owner` is set on a per-server subclass)."""

    protocol_version = "HTTP/1.1"
    owner: FakeKubeAPI

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _json(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        api = self.owner
        auth = self.headers.get("Authorization", "")
        api.requests.append(("GET", self.path, auth))
        if auth != f"Bearer {api.token}":
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        if api.fail_status is not None:
            self._json(api.fail_status, _status(api.fail_status, "InternalError", "injected failure"))
            return
        url = urlsplit(self.path)
        match = _PODS_PATH.fullmatch(url.path)
        if match is None:
            self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        namespace = match.group(1)
        if namespace not in api.namespaces:
            self._json(403, _status(403, "Forbidden", f'pods is forbidden in namespace "{namespace}"'))
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        selector = query.get("labelSelector", "")
        if query.get("watch") in ("1", "true"):
            self._watch(namespace, int(query.get("resourceVersion") or 0), selector,
                        float(query.get("timeoutSeconds") or 300))
        else:
            self._list(namespace, selector, int(query.get("limit") or 0), int(query.get("continue") or 0))

    @staticmethod
    def _selected(pod: dict[str, Any], selector: str) -> bool:
        return not selector or selector in (pod["metadata"].get("labels") or {})

    def _list(self, namespace: str, selector: str, limit: int, offset: int) -> None:
        api = self.owner
        with api._cond:
            items = [json.loads(json.dumps(p)) for (ns, _), p in sorted(api.pods.items())
                     if ns == namespace and self._selected(p, selector)]
            version = api.resource_version
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit:
            if offset + limit < len(items):
                metadata["continue"] = str(offset + limit)
            items = items[offset:offset + limit]
        self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items})

    def _chunk(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, namespace: str, since: int, selector: str, timeout: float) -> None:
        api = self.owner
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        generation = api.watch_generation
        try:
            while time.monotonic() < deadline:
                with api._cond:
                    if since < api.compacted_below or generation != api.watch_generation \
                            or namespace not in api.namespaces:
                        gone = namespace in api.namespaces
                        batch = None
                    else:
                        batch = [e for e in api.events if e[0] > since and e[1] == namespace]
                        if not batch:
                            api._cond.wait(0.2)
                            continue
                if batch is None:
                    if gone:
                        self._chunk({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")})
                    break
                for version, _, kind, pod in batch:
                    since = version
                    if self._selected(pod, selector):
                        self._chunk({"type": kind, "object": pod})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


