"""The HTTP application: routes of the runtime wire contract (on web.py, over uvicorn).

Endpoints and reply shapes follow the upstream ``python-runtime-sandbox`` contract (see
images/runtime/README.md): ``GET /``, ``POST /execute``, ``POST /upload``,
``GET /download/{path}``, ``GET /list/{path}``, ``GET /exists/{path}``.

File endpoints resolve the client's path to a name (paths.py) and open that name beneath a
descriptor of the base directory without following symlinks (beneath.py). Errors are JSON with
the reason only: no reply carries a server path, and an unexpected exception is a JSON 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import math
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .beneath import describe_error, open_beneath
from .executor import CommandRefused, CommandRunner, minimal_environment
from .paths import PathRefused, is_inside, relative_to_base, resolve_confined
from .proctree import become_subreaper, seconds_since_exec
from .reaper import reap_orphans_forever
from .settings import Settings
from .web import Application, Request, Response, StreamingResponse, json_response, route

logger = logging.getLogger("sandbox_runtime")

MAX_EXECUTE_BODY_BYTES = 4 * 1024**2
_DOWNLOAD_CHUNK = 256 * 1024
# Bodies up to this size are decoded on the event loop; larger ones in a worker thread.
_INLINE_JSON_BYTES = 64 * 1024
# File system work runs in worker threads: at most this many at once (what the server had
# under Starlette: anyio's default), started as needed.
WORKER_THREADS = 40
# What a path that cannot name an entry fails with: missing, through a file, a symlink swapped in
# after the check, a name over NAME_MAX. All of them mean "no such file" to the client.
_NOT_THERE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV, errno.ENAMETOOLONG}
Handler = Callable[[Request], Awaitable[Response]]


def _render_execute_reply(content: dict[str, object]) -> bytes:
    """/execute replies are UTF-8 JSON: valid non-ASCII output is not inflated to \\uXXXX escapes
    (the executor bounds each stream's size *as rendered here*)."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a message: escape everything instead
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _message(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


def _refused(error: PathRefused) -> Response:
    logger.warning("%s", error)
    return _message(error.status, error.message)


def _guarded(handler: Handler) -> Handler:
    """Turn an unexpected exception into a JSON 500 that names no server path (the traceback
    goes to the server log only)."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:
            logger.exception("unexpected error in %s %s", request.method, request.path[:200])
            return _message(500, "Internal server error")

    return guarded


def create_app(settings: Settings) -> Application:
    """Build the ASGI application for ``settings`` (base directory must already exist)."""
    base_dir = os.path.realpath(settings.base_dir)
    # Every file operation starts from this descriptor, never from the base directory's name.
    base_fd = os.open(base_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    runner = CommandRunner(
        cwd=base_dir,
        max_output_bytes=settings.max_output_bytes,
        environment=minimal_environment(base_dir),
        max_concurrent=settings.max_concurrent_commands,
        max_processes=settings.max_command_processes,
    )

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "message": "Sandbox Runtime is active."})

    async def execute(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_EXECUTE_BODY_BYTES:
                return json_response({"detail": f"request body exceeds {MAX_EXECUTE_BODY_BYTES} bytes"}, 413)
        try:
            if len(body) <= _INLINE_JSON_BYTES:
                command, timeout = _parse_execute_request(bytes(body), settings)
            else:
                command, timeout = await asyncio.to_thread(_parse_execute_request, bytes(body), settings)
        except ValueError as exc:
            return json_response({"detail": str(exc)}, 422)
        try:
            result = await runner.run(command, timeout)
        except CommandRefused as refused:
            headers = {"Retry-After": "1"} if refused.status == 429 else None
            return json_response({"detail": refused.detail}, refused.status, headers)
        content = result.as_json()
        if len(result.stdout) + len(result.stderr) <= _INLINE_JSON_BYTES:
            body = _render_execute_reply(content)
        else:
            body = await asyncio.to_thread(_render_execute_reply, content)
        return Response(body, media_type="application/json")

    async def upload(request: Request) -> Response:
        try:
            filename = await uploads().receive_upload(request, base_dir, base_fd, settings.max_upload_bytes)
        except uploads().UploadError as exc:
            if exc.status == 403:
                logger.warning("upload refused: destination escapes the base directory")
            headers = {"Connection": "close"} if exc.status == 413 else None
            return json_response({"message": exc.message}, exc.status, headers)
        return _message(200, f"File '{filename}' uploaded successfully.")

    async def download(request: Request) -> Response:
        requested = request.path_params["path"]
        try:
            path = resolve_confined(base_dir, requested)
        except PathRefused as exc:
            return _refused(exc)
        flags = os.O_RDONLY | os.O_NONBLOCK
        try:
            fd = await asyncio.to_thread(open_beneath, base_fd, relative_to_base(base_dir, path), flags)
        except OSError as exc:
            if exc.errno in _NOT_THERE or exc.errno == errno.EISDIR:
                return _message(404, "File not found")
            return _message(500, f"Download failed: {describe_error(exc)}")
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
            return _refused(exc)
        try:
            entries = await asyncio.to_thread(_scan_directory, base_dir, base_fd, path)
        except OSError as exc:
            if exc.errno in _NOT_THERE:
                return _message(404, "Path is not a directory")
            return _message(500, f"List files failed: {describe_error(exc)}")
        return json_response(entries)

    async def exists(request: Request) -> Response:
        requested = request.path_params["path"]
        try:
            path = resolve_confined(base_dir, requested)
        except PathRefused as exc:
            return _refused(exc)
        found = await asyncio.to_thread(_exists_beneath, base_fd, relative_to_base(base_dir, path))
        return json_response({"path": requested, "exists": found})

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="sandbox-runtime"))
        # Orphans of commands (double-forked daemons) are re-parented to the server instead of
        # leaving its view, so their whole tree stays bounded (proctree.py).
        runner.subreaper = become_subreaper()
        if not runner.subreaper:
            logger.warning("cannot become a child subreaper: processes that leave a command's session are not bounded")
        reaper: asyncio.Task[None] | None = None
        if runner.subreaper:
            # As subreaper (or PID 1 of a container) we inherit every orphan; nobody else reaps them.
            reaper = asyncio.create_task(reap_orphans_forever(lambda: runner.live_process_groups))
        # A cold sandbox is Ready only once this server answers: say how long that took, so the
        # server's share of a cold start can be read from the pod's log.
        started = seconds_since_exec()
        if started is not None:
            logger.info("serving %.2f s after the server was started", started)
        try:
            yield
        finally:
            runner.kill_all()
            if reaper is not None:
                reaper.cancel()

    app = Application(
        routes=[
            route("/", health, ["GET"]),
            route("/execute", _guarded(execute), ["POST"]),
            route("/upload", _guarded(upload), ["POST"]),
            route("/download/{path}", _guarded(download), ["GET"]),
            route("/list/{path}", _guarded(list_directory), ["GET"]),
            route("/exists/{path}", _guarded(exists), ["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.update(runner=runner, base_dir=base_dir)
    return app


@functools.cache
def uploads() -> Any:
    """The upload module, imported on the first upload: its multipart parser and e-mail header
    parsing are a tenth of the server's imports, which every cold sandbox pays before it is
    Ready, while many sandboxes never receive a file."""
    from . import uploads as module

    return module


def _parse_execute_request(body: bytes, settings: Settings) -> tuple[str, float]:
    """Validate ``{"command": str, "timeout_seconds"?: number}``; return (command, effective timeout)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the decoder's recursion limit.
        raise ValueError('body must be JSON such as {"command": "echo hello", "timeout_seconds": 30}') from None
    if not isinstance(payload, dict):
        raise ValueError('body must be a JSON object such as {"command": "echo hello"}')
    command = payload.get("command")
    if not isinstance(command, str):
        raise ValueError(f"field 'command' must be a string, got {_brief(command)}; e.g. \"ls -la\" or \"sh -c 'echo a | wc -c'\"")
    timeout = payload.get("timeout_seconds")
    if timeout is None:
        return command, settings.exec_timeout_seconds
    # Integers are compared as integers: float() of a 401-digit number overflows.
    valid = (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0) or (
        isinstance(timeout, float) and math.isfinite(timeout) and timeout > 0)
    if not valid:
        raise ValueError(f"field 'timeout_seconds' must be a positive number of seconds, got {_brief(timeout)}")
    # Longer requests are capped rather than refused, so a generous client still gets a result.
    if timeout >= settings.max_exec_timeout_seconds:
        return command, settings.max_exec_timeout_seconds
    return command, float(timeout)


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({type(value).__name__})"


def _scan_directory(base_dir: str, base_fd: int, path: str) -> list[dict[str, object]]:
    """Entries of the directory ``path`` (a resolve_confined result) in the contract's shape,
    sorted by name. The directory is opened beneath ``base_fd`` without following symlinks."""
    entries: list[dict[str, object]] = []
    fd = open_beneath(base_fd, relative_to_base(base_dir, path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as iterator:
            for entry in iterator:
                try:
                    if entry.is_symlink():
                        info = _describe_link(base_dir, base_fd, path, entry)
                    else:
                        info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while we listed
                entries.append({
                    "name": entry.name,
                    "size": info.st_size,
                    "type": "directory" if stat.S_ISDIR(info.st_mode) else "file",
                    "mod_time": info.st_mtime,
                })
    finally:
        os.close(fd)
    entries.sort(key=lambda item: str(item["name"]))
    return entries


def _describe_link(base_dir: str, base_fd: int, directory: str, entry: os.DirEntry[str]) -> os.stat_result:
    """A symlink is described by its target, as upstream does, only when the target is inside
    the base directory; a link pointing outside (or dangling) is described as the link itself,
    so listings reveal nothing about files outside."""
    target = os.path.realpath(os.path.join(directory, entry.name))
    if is_inside(base_dir, target):
        try:
            fd = open_beneath(base_fd, relative_to_base(base_dir, target), os.O_PATH)
        except OSError:
            pass
        else:
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
    return entry.stat(follow_symlinks=False)


def _exists_beneath(base_fd: int, relative: str) -> bool:
    try:
        os.close(open_beneath(base_fd, relative, os.O_PATH))
    except OSError:
        return False
    return True


async def _read_file(fd: int, size: int) -> AsyncIterator[bytes]:
    """Yield the first ``size`` bytes (the announced Content-Length) in chunks read in a worker
    thread, so a file growing meanwhile cannot overrun the header; always closes ``fd``."""
    remaining = size
    try:
        while remaining > 0:
            chunk = await asyncio.to_thread(os.read, fd, min(_DOWNLOAD_CHUNK, remaining))
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
