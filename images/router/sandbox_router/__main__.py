"""Entry point: `python -m sandbox_router`."""

from __future__ import annotations

import asyncio
import logging
import sys

from .app import run
from .settings import SettingsError, load_settings

log = logging.getLogger("sandbox_router")


def main() -> int:
    """Load settings, install uvloop when available and serve until SIGTERM/SIGINT."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"sandbox-router: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.allow_unauthenticated:
        log.warning("ALLOW_UNAUTHENTICATED_ROUTER=true: anyone who can reach this port can use every "
                    "sandbox. Development only.")
    if settings.resolver == "dns":
        log.warning("ROUTER_RESOLVER=dns: targets come from the caller's X-Sandbox-Pod-IP or Service names, "
                    "limited only by the address policy. Local tests only; use watch in a cluster.")
    if settings.allow_loopback_pod_ip:
        log.warning("ROUTER_ALLOW_LOOPBACK_POD_IP=true: loopback pod IPs are accepted. Local tests only.")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is pinned, but the router still works without it
        log.warning("uvloop is not installed; falling back to the default asyncio event loop")
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
