"""Streaming receiver for ``POST /upload``: multipart part ``file``, filename = destination path.

The body is parsed incrementally (python-multipart's push parser) and written straight to a
temporary file next to the destination, so memory use does not grow with the file size and no
temporary directory outside the base directory is needed (the root filesystem may be read-only).
The temporary file is renamed over the destination only when the part is complete; an aborted
or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .paths import PathRefused, is_inside, resolve_confined

FILE_FIELD = "file"
# Multipart framing (boundaries, part headers) on top of the payload that is still accepted
# when the declared Content-Length is checked against the payload limit.
MULTIPART_OVERHEAD_ALLOWANCE = 64 * 1024
# After rejecting an upload, keep reading (and discarding) this much of the body so the client
# gets to read the 413 instead of a connection reset; beyond that the connection is closed.
DRAIN_BUDGET_BYTES = 32 * 1024**2
_FLUSH_THRESHOLD = 1024**2


class UploadError(Exception):
    """An upload that cannot be accepted; ``status`` and ``message`` become the HTTP reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _PartState:
    """Header bookkeeping for the multipart part currently being parsed."""

    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    is_upload: bool = False


class _UploadSink:
    """Collects the ``file`` part's bytes and writes them to a temporary file beside the target."""

    def __init__(self, base_dir: str, limit: int) -> None:
        self.base_dir = base_dir
        self.limit = limit
        self.filename: str | None = None
        self.received = 0
        self.complete = False
        self.error: UploadError | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._target: str | None = None
        self._temp_path: str | None = None
        self._fd: int | None = None

    # -- parser callbacks (synchronous, inside parser.write) --------------------------------
    def begin(self, filename: str) -> None:
        self.filename = filename

    def data(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        self.received += len(chunk)
        if self.received > self.limit:
            self.error = UploadError(413, f"Upload exceeds the limit of {self.limit} bytes (SANDBOX_MAX_UPLOAD_BYTES).")
            self.pending.clear()
            return
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)

    # -- file system work (run in a worker thread) ------------------------------------------
    def open_target(self) -> None:
        """Resolve the destination, create its parent directories and open the temporary file."""
        assert self.filename is not None
        try:
            target = resolve_confined(self.base_dir, self.filename)
        except PathRefused:
            raise UploadError(403, "Access denied") from None
        if target == self.base_dir:
            raise UploadError(400, f"Upload filename {self.filename!r} names the base directory itself; give a file path")
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UploadError(500, f"File upload failed: {exc}") from None
        # A symlink swapped in while the directories were created must not redirect the write.
        if not is_inside(self.base_dir, os.path.realpath(parent)):
            raise UploadError(403, "Access denied")
        temp_path = os.path.join(parent, f".{os.path.basename(target)}.upload-{secrets.token_hex(6)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(temp_path, flags, 0o644)
        except OSError as exc:
            raise UploadError(500, f"File upload failed: {exc}") from None
        self._target, self._temp_path = target, temp_path

    def write_pending(self) -> None:
        """Append the buffered bytes to the temporary file."""
        chunks, self.pending, self.pending_bytes = self.pending, [], 0
        if self._fd is None:
            return
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def commit(self) -> None:
        """Close the temporary file and atomically move it onto the destination."""
        assert self._fd is not None and self._temp_path is not None and self._target is not None
        os.close(self._fd)
        self._fd = None
        try:
            os.replace(self._temp_path, self._target)
        except OSError as exc:
            self.discard()
            raise UploadError(500, f"File upload failed: {exc}") from None
        self._temp_path = None

    def discard(self) -> None:
        """Remove the temporary file after a failed or aborted upload."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._temp_path is not None:
            try:
                os.unlink(self._temp_path)
            except FileNotFoundError:
                pass
            self._temp_path = None

    @property
    def opened(self) -> bool:
        return self._fd is not None


async def receive_upload(request: Request, base_dir: str, limit: int) -> str:
    """Stream the request's ``file`` part to its destination; return the filename as sent.

    Raises UploadError with the HTTP status and message to send back.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadError(422, "POST /upload needs a multipart/form-data body with a part named 'file'.")
    declared = _declared_length(request)
    if declared is not None and declared > limit + MULTIPART_OVERHEAD_ALLOWANCE:
        # A client waiting for "100 Continue" has sent nothing yet: answer without reading.
        if request.headers.get("expect", "").lower() != "100-continue":
            await _drain(request.stream())
        raise UploadError(413, f"Upload of {declared} bytes exceeds the limit of {limit} bytes (SANDBOX_MAX_UPLOAD_BYTES).")

    sink = _UploadSink(base_dir, limit)
    part = _PartState()
    parser = MultipartParser(boundary, _callbacks(part, sink))
    body = request.stream()
    try:
        async for chunk in body:
            if sink.error is not None:
                break
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise UploadError(400, f"Malformed multipart body: {exc}") from None
            if sink.filename is not None and not sink.opened and sink.error is None:
                try:
                    await anyio.to_thread.run_sync(sink.open_target)
                except UploadError as refused:
                    sink.error = refused  # answered after draining, like an oversized body
                    continue
            if sink.pending_bytes >= _FLUSH_THRESHOLD or (sink.complete and sink.pending):
                await anyio.to_thread.run_sync(sink.write_pending)
        if sink.error is not None:
            await _drain(body)
            raise sink.error
        parser.finalize()
        if sink.filename is None:
            raise UploadError(422, "POST /upload needs a multipart part named 'file' whose filename is the destination path.")
        if not sink.complete:
            raise UploadError(400, "Malformed multipart body: the 'file' part is incomplete.")
        if sink.pending:
            await anyio.to_thread.run_sync(sink.write_pending)
        await anyio.to_thread.run_sync(sink.commit)
        return sink.filename
    except ClientDisconnect:
        raise UploadError(400, "Client disconnected before the upload was complete.") from None
    except OSError as exc:
        raise UploadError(500, f"File upload failed: {exc}") from None
    finally:
        sink.discard()


def _callbacks(part: _PartState, sink: _UploadSink) -> dict[str, object]:
    """python-multipart callbacks that route the first ``file`` part into ``sink``."""

    def on_part_begin() -> None:
        part.header_field.clear()
        part.header_value.clear()
        part.headers.clear()
        part.is_upload = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers[part.header_field.decode("latin-1").strip().lower()] = bytes(part.header_value)
        part.header_field.clear()
        part.header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(part.headers.get("content-disposition", b""))
        filename = options.get(b"filename")
        if (
            disposition == b"form-data"
            and options.get(b"name") == FILE_FIELD.encode()
            and filename is not None
            and sink.filename is None
        ):
            part.is_upload = True
            # Header bytes are latin-1 on the wire; clients put UTF-8 path bytes there.
            sink.begin(filename.decode("utf-8", errors="surrogateescape"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_upload:
            sink.data(data[start:end])

    def on_part_end() -> None:
        if part.is_upload:
            sink.complete = True
            part.is_upload = False

    return {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UploadError(400, f"Content-Length {raw!r} is not an integer.") from None


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read and discard up to DRAIN_BUDGET_BYTES of the remaining body (see its comment)."""
    drained = 0
    try:
        async for chunk in body:
            drained += len(chunk)
            if drained > DRAIN_BUDGET_BYTES:
                break
    except ClientDisconnect:
        pass
