"""Entry point: ``python -m sandbox_runtime`` validates the environment, listens at once, then
imports the application and serves it with uvicorn on that socket.

Why listen first: the kubelet's readiness probe runs once a second, and a cold sandbox is Ready
only at the first probe that succeeds. Importing the server under gVisor takes a good part of a
second, so the probe that comes during the imports used to fail and the next one, a second later,
made the pod Ready. With the socket listening before the imports, that probe's connection waits
in the backlog and is answered as soon as the application runs: Ready comes up to a second sooner.
"""

from __future__ import annotations

import socket
import sys

from .settings import ConfigError, Settings

SHUTDOWN_GRACE_SECONDS = 5
BACKLOG = 2048


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def main() -> int:
    """Start the server; exit with status 2 and a clear message on bad configuration."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"sandbox_runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    sock = listen(settings.host, settings.port)

    import logging

    import uvicorn

    from .app import create_app

    logging.basicConfig(
        level=logging.DEBUG if settings.log_level == "trace" else settings.log_level.upper(),
        format="%(levelname)s:     %(name)s: %(message)s",
    )
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level,
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=False,
        # On SIGTERM, running commands get this long to finish; then their requests are
        # cancelled, which kills their process groups (see executor.CommandRunner.run).
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    ))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
