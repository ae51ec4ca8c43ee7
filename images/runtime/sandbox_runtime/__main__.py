"""Entry point: ``python -m sandbox_runtime`` validates the environment and serves with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .settings import ConfigError, Settings

SHUTDOWN_GRACE_SECONDS = 5


def main() -> int:
    """Start the server; exit with status 2 and a clear message on bad configuration."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"sandbox_runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if settings.log_level == "trace" else settings.log_level.upper(),
        format="%(levelname)s:     %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=False,
        # On SIGTERM, running commands get this long to finish; then their requests are
        # cancelled, which kills their process groups (see executor.CommandRunner.run).
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
