"""Streaming receiver for ``POST /upload``: multipart part ``file``, filename = destination path.

The body is parsed incrementally (python-multipart's push parser) and written straight to a
temporary file next to the destination, so memory use does not grow with the file size and no
temporary directory outside the base directory is needed (the root filesystem may be read-only).
The temporary file is renamed over the destination only when the part is complete; an aborted
or oversized upload leaves nothing behind.

Directories are created and the file written beneath a descriptor of the base directory, one
component at a time and without following symlinks (beneath.py), so a directory swapped for a
symlink during the upload cannot redirect the write. Memory and the body are bounded as a whole:
the headers of each part (MAX_PART_HEADER_BYTES) and every byte of the body, including parts
other than ``file`` (the upload limit plus MULTIPART_OVERHEAD_ALLOWANCE).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .beneath import describe_error, make_dirs_beneath
from .paths import PathRefused, relative_to_base, resolve_confined
from .web import ClientDisconnect, Request

FILE_FIELD = "file"
# Multipart framing (boundaries, part headers, other parts) on top of the payload that is still
# accepted, both for the declared Content-Length and for the bytes actually received.
MULTIPART_OVERHEAD_ALLOWANCE = 64 * 1024
# Every header line of one part together; a Content-Disposition with a path of PATH_MAX fits.
MAX_PART_HEADER_BYTES = 16 * 1024
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
    header_bytes: int = 0
    is_upload: bool = False


class _UploadSink:
    """Collects the ``file`` part's bytes and writes them to a temporary file beside the target."""

    def __init__(self, base_dir: str, base_fd: int, limit: int) -> None:
        self.base_dir = base_dir
        self.base_fd = base_fd
        self.limit = limit
        self.filename: str | None = None
        self.received = 0
        self.complete = False
        self.error: UploadError | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._parent_fd: int | None = None
        self._name: str | None = None
        self._temp_name: str | None = None
        self._fd: int | None = None

    # -- parser callbacks (synchronous, inside parser.write) --------------------------------
    def begin(self, filename: str) -> None:
        self.filename = filename

    def data(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        self.received += len(chunk)
        if self.received > self.limit:
            self.fail(UploadError(413, f"Upload exceeds the limit of {self.limit} bytes (SANDBOX_MAX_UPLOAD_BYTES)."))
            return
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)

    def fail(self, error: UploadError) -> None:
        """Remember the first error; nothing more is buffered after it."""
        if self.error is None:
            self.error = error
        self.pending.clear()
        self.pending_bytes = 0

    # -- file system work (run in a worker thread) ------------------------------------------
    def open_target(self) -> None:
        """Resolve the destination, create its parent directories and open the temporary file,
        all beneath the base directory's descriptor."""
        assert self.filename is not None
        try:
            target = resolve_confined(self.base_dir, self.filename)
        except PathRefused as refused:
            raise UploadError(refused.status, refused.message) from None
        if target == self.base_dir:
            raise UploadError(400, f"Upload filename {self.filename[:200]!r} names the base directory itself; give a file path")
        parent, name = os.path.split(relative_to_base(self.base_dir, target))
        try:
            self._parent_fd = make_dirs_beneath(self.base_fd, parent)
        except OSError as exc:
            raise _upload_error(exc) from None
        # Short enough for NAME_MAX whatever the destination's name is.
        short = os.fsdecode(os.fsencode(name)[:64])
        temp_name = f".{short}.upload-{secrets.token_hex(6)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(temp_name, flags, 0o644, dir_fd=self._parent_fd)
        except OSError as exc:
            raise _upload_error(exc) from None
        self._name, self._temp_name = name, temp_name

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
        """Close the temporary file and atomically move it onto the destination (in the same
        directory descriptor: a symlink at the destination is replaced, never followed)."""
        assert self._fd is not None and self._temp_name is not None and self._name is not None
        os.close(self._fd)
        self._fd = None
        try:
            os.replace(self._temp_name, self._name, src_dir_fd=self._parent_fd, dst_dir_fd=self._parent_fd)
        except OSError as exc:
            self.discard()
            raise _upload_error(exc) from None
        self._temp_name = None

    def discard(self) -> None:
        """Remove the temporary file after a failed or aborted upload; release the directory."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._temp_name is not None:
            try:
                os.unlink(self._temp_name, dir_fd=self._parent_fd)
            except FileNotFoundError:
                pass
            self._temp_name = None
        if self._parent_fd is not None:
            os.close(self._parent_fd)
            self._parent_fd = None

    @property
    def opened(self) -> bool:
        return self._fd is not None


def _upload_error(exc: OSError) -> UploadError:
    """The reply for a file system error: the reason only, never a server path."""
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        # A symlink was swapped in after the path was checked.
        return UploadError(403, "Access denied")
    if exc.errno == errno.ENAMETOOLONG:
        return UploadError(400, f"File upload failed: {describe_error(exc)}")
    return UploadError(500, f"File upload failed: {describe_error(exc)}")


async def receive_upload(request: Request, base_dir: str, base_fd: int, limit: int) -> str:
    """Stream the request's ``file`` part to its destination; return the filename as sent.

    Raises UploadError with the HTTP status and message to send back.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadError(422, "POST /upload needs a multipart/form-data body with a part named 'file'.")
    body_limit = limit + MULTIPART_OVERHEAD_ALLOWANCE
    declared = _declared_length(request)
    if declared is not None and declared > body_limit:
        # A client waiting for "100 Continue" has sent nothing yet: answer without reading.
        if request.headers.get("expect", "").lower() != "100-continue":
            await _drain(request.stream())
        raise UploadError(413, f"Upload of {declared} bytes exceeds the limit of {limit} bytes (SANDBOX_MAX_UPLOAD_BYTES).")

    sink = _UploadSink(base_dir, base_fd, limit)
    part = _PartState()
    try:
        parser = MultipartParser(boundary, _callbacks(part, sink))
    except ValueError:
        raise UploadError(400, "Malformed multipart body: unusable boundary.") from None
    body = request.stream()
    received = 0
    try:
        async for chunk in body:
            if sink.error is not None:
                break
            received += len(chunk)
            if received > body_limit:
                # Chunked bodies have no Content-Length: count what arrives, whatever part it is in.
                sink.fail(UploadError(413, f"Upload body exceeds the limit of {limit} bytes (SANDBOX_MAX_UPLOAD_BYTES) "
                                           f"plus {MULTIPART_OVERHEAD_ALLOWANCE} bytes of multipart framing and other parts."))
                break
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise UploadError(400, f"Malformed multipart body: {exc}") from None
            if sink.filename is not None and not sink.opened and sink.error is None:
                try:
                    await asyncio.to_thread(sink.open_target)
                except UploadError as refused:
                    sink.fail(refused)  # answered after draining, like an oversized body
                    continue
            if sink.pending_bytes >= _FLUSH_THRESHOLD or (sink.complete and sink.pending):
                await asyncio.to_thread(sink.write_pending)
        if sink.error is not None:
            await _drain(body)
            raise sink.error
        parser.finalize()
        if sink.filename is None:
            raise UploadError(422, "POST /upload needs a multipart part named 'file' whose filename is the destination path.")
        if not sink.complete:
            raise UploadError(400, "Malformed multipart body: the 'file' part is incomplete.")
        if sink.pending:
            await asyncio.to_thread(sink.write_pending)
        await asyncio.to_thread(sink.commit)
        return sink.filename
    except ClientDisconnect:
        raise UploadError(400, "Client disconnected before the upload was complete.") from None
    except OSError as exc:
        raise _upload_error(exc) from None
    finally:
        sink.discard()


def _callbacks(part: _PartState, sink: _UploadSink) -> dict[str, object]:
    """python-multipart callbacks that route the first ``file`` part into ``sink``."""

    def on_part_begin() -> None:
        part.header_field.clear()
        part.header_value.clear()
        part.headers.clear()
        part.header_bytes = 0
        part.is_upload = False

    def count_header(size: int) -> bool:
        """Account for header bytes; False (and the upload failed) once there are too many."""
        part.header_bytes += size
        if part.header_bytes > MAX_PART_HEADER_BYTES:
            part.header_field.clear()
            part.header_value.clear()
            sink.fail(UploadError(413, f"Multipart part headers exceed {MAX_PART_HEADER_BYTES} bytes."))
        return sink.error is None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        if count_header(end - start):
            part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        if count_header(end - start):
            part.header_value += data[start:end]

    def on_header_end() -> None:
        if sink.error is None:
            part.headers[part.header_field.decode("latin-1").strip().lower()] = bytes(part.header_value)
        part.header_field.clear()
        part.header_value.clear()

    def on_headers_finished() -> None:
        if sink.error is not None:
            return
        disposition, options = _content_disposition(part.headers.get("content-disposition", b""))
        filename = options.get("filename")
        if (
            disposition == "form-data"
            and options.get("name") == FILE_FIELD
            and filename is not None
            and sink.filename is None
        ):
            part.is_upload = True
            # Header bytes are latin-1 on the wire; clients put UTF-8 path bytes there.
            sink.begin(filename.encode("latin-1", errors="replace").decode("utf-8", errors="surrogateescape"))

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


def _content_disposition(value: bytes) -> tuple[str, dict[str, str]]:
    """(disposition, parameters) of a part's Content-Disposition, RFC 2231 values included.

    Not python-multipart's parse_options_header: that one shortens IE-style full client paths
    (``C:\\fakepath\\x.txt`` becomes ``x.txt``), which would turn a name the path rules refuse
    (backslash: 403) into a silent upload of a different file.
    """
    text = value.decode("latin-1")
    if ";" not in text:
        return text.strip().lower(), {}
    message = Message()
    message["content-disposition"] = text
    params = message.get_params(header="content-disposition") or [("", "")]
    options: dict[str, str] = {}
    for key, parameter in params[1:]:
        # RFC 2231 values come back as (charset, language, value).
        options[key.lower()] = parameter[-1] if isinstance(parameter, tuple) else parameter
    return params[0][0].strip().lower(), options


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
