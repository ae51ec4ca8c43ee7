"""The HTTP application: routes of the runtime wire contract on top of Starlette.

Endpoints and reply shapes follow the upstream ``python-runtime-sandbox`` contract (see
images/runtime/README.md): ``GET /``, ``POST /execute``, ``POST /upload``,
``GET /download/{path}``, ``GET /list/{path}``, ``GET /exists/{path}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Route

from .executor import CommandRunner
from .paths import PathRefused, resolve_confined
from .reaper import reap_orphans_forever
from .settings import Settings
from .uploads import UploadError, receive_upload

logger = logging.getLogger("sandbox_runtime")

MAX_EXECUTE_BODY_BYTES = 4 * 1024**2
_DOWNLOAD_CHUNK = 256 * 1024


class AnyPathConvertor(Convertor[str]):
    """Like Starlette's ``path`` convertor but also matching newlines, so such paths reach the
    confinement check (and get a 403) instead of falling through to a plain 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPathConvertor())


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so file names holding undecodable bytes still serialise."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _message(status: int, message: str) -> AsciiJSONResponse:
    return AsciiJSONResponse({"message": message}, status_code=status)


def _access_denied(error: PathRefused) -> AsciiJSONResponse:
    logger.warning("%s", error)
    return _message(403, "Access denied")


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI application for ``settings`` (base directory must already exist)."""
    base_dir = os.path.realpath(settings.base_dir)
    runner = CommandRunner(cwd=base_dir, max_output_bytes=settings.max_output_bytes)

    async def health(request: Request) -> Response:
        return AsciiJSONResponse({"status": "ok", "message": "Sandbox Runtime is active."})

    async def execute(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_EXECUTE_BODY_BYTES:
                return AsciiJSONResponse({"detail": f"request body exceeds {MAX_EXECUTE_BODY_BYTES} bytes"}, status_code=413)
        try:
            command, timeout = _parse_execute_request(bytes(body), settings)
        except ValueError as exc:
            return AsciiJSONResponse({"detail": str(exc)}, status_code=422)
        result = await runner.run(command, timeout)
        return AsciiJSONResponse(result.as_json())

    async def upload(request: Request) -> Response:
        try:
            filename = await receive_upload(request, base_dir, settings.max_upload_bytes)
        except UploadError as exc:
            if exc.status == 403:
                logger.warning("upload refused: destination escapes %s", base_dir)
            headers = {"Connection": "close"} if exc.status == 413 else None
            return AsciiJSONResponse({"message": exc.message}, status_code=exc.status, headers=headers)
        return _message(200, f"File '{filename}' uploaded successfully.")

    async def download(request: Request) -> Response:
        requested = request.path_params["path"]
        try:
            path = resolve_confined(base_dir, requested)
        except PathRefused as exc:
            return _access_denied(exc)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return _message(404, "File not found")
        except OSError as exc:
            return _message(500, f"Download failed: {exc.strerror}")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # Directories, FIFOs, sockets and devices are not downloadable (a FIFO would block).
            os.close(fd)
            return _message(404, "File not found")
        os.set_blocking(fd, True)
        return StreamingResponse(
            _read_file(fd, info.st_size),
            media_type="application/octet-stream",
            headers={"Content-Length": str(info.st_size), "Content-Disposition": _attachment(os.path.basename(path))},
        )

    async def list_directory(request: Request) -> Response:
        requested = request.path_params["path"]
        try:
            path = resolve_confined(base_dir, requested)
        except PathRefused as exc:
            return _access_denied(exc)
        try:
            entries = await anyio.to_thread.run_sync(_scan_directory, path)
        except (FileNotFoundError, NotADirectoryError):
            return _message(404, "Path is not a directory")
        except OSError as exc:
            return _message(500, f"List files failed: {exc.strerror}")
        return AsciiJSONResponse(entries)

    async def exists(request: Request) -> Response:
        requested = request.path_params["path"]
        try:
            path = resolve_confined(base_dir, requested)
        except PathRefused as exc:
            return _access_denied(exc)
        return AsciiJSONResponse({"path": requested, "exists": os.path.exists(path)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reaper: asyncio.Task[None] | None = None
        if os.getpid() == 1:
            # As PID 1 of a container we inherit every orphan; nobody else would reap them.
            reaper = asyncio.create_task(reap_orphans_forever(lambda: runner.live_process_groups))
        try:
            yield
        finally:
            runner.kill_all()
            if reaper is not None:
                reaper.cancel()

    app = Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/execute", execute, methods=["POST"]),
            Route("/upload", upload, methods=["POST"]),
            Route("/download/{path:anypath}", download, methods=["GET"]),
            Route("/list/{path:anypath}", list_directory, methods=["GET"]),
            Route("/exists/{path:anypath}", exists, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runner = runner
    app.state.base_dir = base_dir
    return app


def _parse_execute_request(body: bytes, settings: Settings) -> tuple[str, float]:
    """Validate ``{"command": str, "timeout_seconds"?: number}``; return (command, effective timeout)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError('body must be JSON such as {"command": "echo hello", "timeout_seconds": 30}') from None
    if not isinstance(payload, dict):
        raise ValueError('body must be a JSON object such as {"command": "echo hello"}')
    command = payload.get("command")
    if not isinstance(command, str):
        raise ValueError(f"field 'command' must be a string, got {command!r}; e.g. \"ls -la\" or \"sh -c 'echo a | wc -c'\"")
    timeout = payload.get("timeout_seconds")
    if timeout is None:
        return command, settings.exec_timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"field 'timeout_seconds' must be a positive number of seconds, got {timeout!r}")
    # Longer requests are capped rather than refused, so a generous client still gets a result.
    return command, min(float(timeout), settings.max_exec_timeout_seconds)


def _scan_directory(path: str) -> list[dict[str, object]]:
    """Entries of ``path`` in the contract's shape, sorted by name."""
    entries: list[dict[str, object]] = []
    with os.scandir(path) as iterator:
        for entry in iterator:
            try:
                info = entry.stat()  # follows symlinks, like the upstream runtime
            except OSError:
                info = entry.stat(follow_symlinks=False)  # dangling symlink: describe the link
            entries.append({
                "name": entry.name,
                "size": info.st_size,
                "type": "directory" if stat.S_ISDIR(info.st_mode) else "file",
                "mod_time": info.st_mtime,
            })
    entries.sort(key=lambda item: str(item["name"]))
    return entries


async def _read_file(fd: int, size: int) -> AsyncIterator[bytes]:
    """Yield the first ``size`` bytes (the announced Content-Length) in chunks read in a worker
    thread, so a file growing meanwhile cannot overrun the header; always closes ``fd``."""
    remaining = size
    try:
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(os.read, fd, min(_DOWNLOAD_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def _attachment(filename: str) -> str:
    quoted = urllib.parse.quote(filename, errors="surrogateescape")
    if quoted != filename or '"' in filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'
