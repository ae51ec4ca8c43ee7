"""Run a child process and stream its stdout/stderr as ``RunPluginResponse`` messages."""

from __future__ import annotations

import queue
import subprocess
import threading
from typing import IO, Iterator, Mapping, Sequence

from pulumi.runtime.proto import language_pb2

_CHUNK = 64 * 1024


def _pump(stream: IO[bytes], kind: str, out: "queue.Queue[tuple[str, bytes]]") -> None:
    """Copy one pipe into the queue chunk by chunk; an empty chunk marks its end."""
    try:
        while True:
            chunk = stream.read1(_CHUNK) if hasattr(stream, "read1") else stream.read(_CHUNK)
            if not chunk:
                break
            out.put((kind, chunk))
    finally:
        out.put((kind, b""))


def stream_process(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, is_cancelled
) -> Iterator[language_pb2.RunPluginResponse]:
    """Start ``argv`` and yield its output, then its exit code as the last message.

    ``is_cancelled`` is polled so the child is killed when the engine drops the stream.
    """
    proc = subprocess.Popen(
        list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    chunks: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", chunks), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", chunks), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    open_streams = 2
    try:
        while open_streams:
            try:
                kind, data = chunks.get(timeout=0.5)
            except queue.Empty:
                if is_cancelled():
                    proc.kill()
                continue
            if not data:
                open_streams -= 1
                continue
            if kind == "stdout":
                yield language_pb2.RunPluginResponse(stdout=data)
            else:
                yield language_pb2.RunPluginResponse(stderr=data)
        yield language_pb2.RunPluginResponse(exitcode=proc.wait())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
