"""Entry point: ``python -m pulumi_language_python [engine flags] ENGINE_ADDRESS``.

Prints the port of its gRPC server on stdout, which is how the engine finds a plugin.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from concurrent import futures

import grpc
from pulumi.runtime.proto import language_pb2_grpc

from .runtime import PythonLanguageRuntime

_MAX_MESSAGE = 400 * 1024 * 1024  # same ceiling the engine uses for its own messages


def _engine_address(argv: list[str]) -> str:
    """Pick the engine address out of the engine's argument list, skipping its logging/tracing flags."""
    positional: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in ("--tracing", "-tracing", "--root", "-root"):
            skip_next = True
        elif not arg.startswith("-"):
            positional.append(arg)
    return positional[0] if positional else ""


def main(argv: list[str]) -> int:
    """Serve until the engine kills us."""
    parser = argparse.ArgumentParser(prog="pulumi-language-python", add_help=True)
    parser.add_argument("--exec", dest="exec_script", required=True, help="path of pulumi-language-python-exec")
    known, rest = parser.parse_known_args(argv)
    if not os.path.isfile(known.exec_script):
        print(f"missing executor {known.exec_script}: run `make toolchain-pulumi`", file=sys.stderr)
        return 1
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(
        PythonLanguageRuntime(_engine_address(rest), known.exec_script), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # The engine ends plugins with SIGINT, then SIGKILL: stop quietly instead of printing a traceback.
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    signal.signal(signal.SIGINT, lambda *_: server.stop(0))
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
