"""Sandbox runtime: a small HTTP server that runs commands and moves files inside one sandbox.

It speaks the wire contract of the upstream ``python-runtime-sandbox`` example so the official
``k8s-agent-sandbox`` SDK (``commands.run``, ``files.write/read/list/exists``) works unchanged.
Start it with ``python -m sandbox_runtime``; configuration comes from ``SANDBOX_*`` environment
variables (see :mod:`sandbox_runtime.settings`).
"""

__version__ = "1.0.0"
