"""Kubernetes API access of the watch resolver: in-cluster client and the pod list+watch loop.

Only what the router needs, with the RBAC it needs: `list` and `watch` of pods in each sandbox
namespace (no `get`, no other resource, nothing cluster-wide). The client is a small HTTP/1.1 client on asyncio streams (httptools
parses the responses), over TLS verified against the service account's CA, authenticated with
the service account token, which is re-read for every request because the kubelet rotates
projected tokens on disk. One request per connection (`Connection: close`): lists are rare and
a watch holds its connection for minutes, so there is nothing to pool.

`PodWatcher` keeps a SandboxIndex in step with the cluster: per namespace, list (paginated),
then watch from the list's resourceVersion; a watch that ends is resumed from the last
resourceVersion seen, 410 Gone (history compacted) or any error leads to a fresh list after a
capped exponential back-off. The index keeps serving its last known state meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httptools

from .sandboxes import SANDBOX_NAME_HASH_LABEL, SandboxIndex

log = logging.getLogger("sandbox_router")

REQUEST_TIMEOUT_SECONDS = 15.0
WATCH_SERVER_TIMEOUT_SECONDS = 240       # the API server ends each watch after this long
WATCH_IDLE_SECONDS = WATCH_SERVER_TIMEOUT_SECONDS + 30  # ... so silence beyond it means a dead link
RELIST_SECONDS = 600.0                   # full re-list now and then heals anything a watch missed
LIST_PAGE_SIZE = 500
MAX_BODY_BYTES = 256 << 20               # a pod list of thousands of pods fits easily
MAX_EVENT_BYTES = 16 << 20
BACKOFF_MIN_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 30.0


class KubeAPIError(Exception):
    """A non-2xx answer of the API server (or an unusable response)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class ResourceExpired(KubeAPIError):
    """410 Gone: the resourceVersion is older than the server's history; list again."""


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate (in-cluster service account)."""

    host: str
    port: int
    token_path: Path
    ca_path: Path

    @classmethod
    def in_cluster(cls, host: str, port: int, serviceaccount_dir: str) -> KubeConfig:
        """KUBERNETES_SERVICE_HOST/PORT plus the mounted service-account token and CA."""
        base = Path(serviceaccount_dir)
        return cls(host, port, base / "token", base / "ca.crt")

    @property
    def authority(self) -> str:
        """host:port for the Host header (IPv6 bracketed)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.body: list[bytes] = []

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _status_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("reason") or payload)[:500]
    return str(payload)[:500]


class KubeClient:
    """GET requests against the API server: whole JSON documents, or a watch's event stream."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._ssl = ssl.create_default_context(cafile=str(config.ca_path))

    def _request(self, path: str) -> bytes:
        token = self.config.token_path.read_text(encoding="utf-8").strip()
        return (f"GET {path} HTTP/1.1\r\nHost: {self.config.authority}\r\nAuthorization: Bearer {token}\r\n"
                f"Accept: application/json\r\nUser-Agent: sandbox-router\r\nConnection: close\r\n\r\n"
                ).encode("latin-1")

    async def _open(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.config.host, self.config.port, ssl=self._ssl, server_hostname=self.config.host,
            limit=1 << 20), REQUEST_TIMEOUT_SECONDS)
        writer.write(self._request(path))
        return reader, writer

    async def _stream(self, path: str, idle_seconds: float) -> AsyncIterator[bytes]:
        """Yield the body of a 200 response piece by piece; raise KubeAPIError otherwise."""
        reader, writer = await self._open(path)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        try:
            while not response.complete:
                data = await asyncio.wait_for(reader.read(65536), idle_seconds)
                if not data:
                    raise KubeAPIError(0, "the API server closed the connection mid-response")
                parser.feed_data(data)
                if response.headers_done and not response.status:
                    response.status = parser.get_status_code()
                if response.status and response.status != 200:
                    if sum(map(len, response.body)) > MAX_EVENT_BYTES:
                        raise KubeAPIError(response.status, "oversized error response")
                    continue  # collect the error body
                if response.body:
                    pieces, response.body = response.body, []
                    for piece in pieces:
                        yield piece
            if response.status != 200:
                body = b"".join(response.body)
                error = ResourceExpired if response.status == 410 else KubeAPIError
                raise error(response.status, _status_message(body))
        finally:
            writer.close()

    async def get_json(self, path: str) -> Any:
        """GET a JSON document."""
        pieces: list[bytes] = []
        size = 0
        async with aclosing(self._stream(path, REQUEST_TIMEOUT_SECONDS)) as stream:
            async for piece in stream:
                size += len(piece)
                if size > MAX_BODY_BYTES:
                    raise KubeAPIError(0, f"response of {path} exceeds {MAX_BODY_BYTES} bytes")
                pieces.append(piece)
        return json.loads(b"".join(pieces))

    async def watch(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """Yield the events of a watch request (newline-delimited JSON) until the server ends it."""
        buffer = b""
        async with aclosing(self._stream(path, WATCH_IDLE_SECONDS)) as stream:
            async for piece in stream:
                buffer += piece
                if len(buffer) > MAX_EVENT_BYTES:
                    raise KubeAPIError(0, f"a watch event of {path} exceeds {MAX_EVENT_BYTES} bytes")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event


def pods_path(namespace: str, **query: str) -> str:
    """Path of the namespaced pod collection, selecting sandbox pods by their label."""
    params = {"labelSelector": SANDBOX_NAME_HASH_LABEL, **query}
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods?" + "&".join(
        f"{key}={quote(value, safe='')}" for key, value in params.items())


class PodWatcher:
    """Keeps a SandboxIndex in step with the sandbox pods of its namespaces."""

    def __init__(self, client: KubeClient, index: SandboxIndex,
                 on_change: Callable[[], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.index = index
        self.on_change = on_change or (lambda: None)
        self.on_error = on_error or (lambda kind: None)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """One list+watch task per namespace."""
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(ns), name=f"watch-pods-{ns}") for ns in sorted(self.index.namespaces)]

    def stop(self) -> None:
        """Cancel the watch tasks."""
        for task in self.tasks:
            task.cancel()

    async def _list(self, namespace: str) -> str:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {"limit": str(LIST_PAGE_SIZE)}
            if token:
                query["continue"] = token
            page = await self.client.get_json(pods_path(namespace, **query))
            items.extend(item for item in page.get("items") or () if isinstance(item, dict))
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                break
        self.index.replace(namespace, items)
        self.on_change()
        log.info("sandbox pods of namespace %s listed: %d routable", namespace, self.index.count(namespace))
        return str(metadata.get("resourceVersion") or "")

    async def _watch(self, namespace: str, version: str) -> str:
        path = pods_path(namespace, watch="1", resourceVersion=version, allowWatchBookmarks="true",
                         timeoutSeconds=str(WATCH_SERVER_TIMEOUT_SECONDS))
        async with aclosing(self.client.watch(path)) as events:
            async for event in events:
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    error = ResourceExpired if code == 410 else KubeAPIError
                    raise error(code, str(obj.get("message") or obj))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self.index.put(obj)
                    self.on_change()
                elif kind == "DELETED":
                    self.index.remove(obj)
                    self.on_change()
        return version

    async def _run(self, namespace: str) -> None:
        backoff = BACKOFF_MIN_SECONDS
        while True:
            try:
                version = await self._list(namespace)
                listed = time.monotonic()
                backoff = BACKOFF_MIN_SECONDS
                while time.monotonic() - listed < RELIST_SECONDS:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except ResourceExpired:
                self.on_error("expired")
                log.info("watch of sandbox pods in %s expired (410); listing again", namespace)
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything the network does
                kind = "forbidden" if isinstance(exc, KubeAPIError) and exc.status in (401, 403) else "error"
                self.on_error(kind)
                hint = (" (the router's service account needs pods get/list/watch in this namespace)"
                        if kind == "forbidden" else "")
                log.warning("watching sandbox pods in %s failed: %s%s; retrying in %.1fs", namespace,
                            exc or type(exc).__name__, hint, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
