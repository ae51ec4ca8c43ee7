"""Sandbox router: authenticated, validating HTTP/WebSocket reverse proxy to agent-sandbox pods.

Run with `python -m sandbox_router`; configuration comes from the environment (see settings.py
and images/router/README.md).
"""

__version__ = "0.1.0"
