"""One command's latency split along its path, from the ``Server-Timing`` entries the router and
the runtime put on its response.

The router adds ``router`` (request head read → the sandbox's response head), ``connect``
(getting a sandbox connection; ``desc`` says ``pooled`` or ``new``) and ``sandbox`` (request sent →
the sandbox's response head); the runtime adds ``runtime`` (its handler: for ``/execute`` the
command's whole run). With the caller's own wall time they give consecutive, non-overlapping
parts (seconds):

- ``sdk_lookup``: the official SDK's own Kubernetes lookup before a sandbox's first request (it
  GETs the Sandbox for its pod IP, the ``X-Sandbox-Pod-IP`` hint our router does not need),
  timed around the SDK's lookup function; 0 when the SDK did not look up;
- ``path``: the rest of the caller's time outside the router: the SDK, the tunnel to the router
  (``kubectl port-forward``: API server, kubelet) and both directions of that connection;
- ``connect``: the router getting a connection to the sandbox (0 when pooled);
- ``router``: the router's own work on the request (parsing, auth, routing);
- ``hop``: router → pod and back, and the runtime's HTTP server around its handler;
- ``runtime``: the runtime's handler.

:class:`ResponseTimings` collects the entries off an official-SDK sandbox's HTTP sessions.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

SPLIT_PARTS = ("sdk_lookup", "path", "connect", "router", "hop", "runtime")
"""The parts of one command's latency, in the order a request meets them."""


def parse_server_timing(value: Optional[str]) -> dict[str, dict[str, Any]]:
    """``name -> {"dur": ms or None, "desc": text or None}`` for each entry of a (possibly
    combined, comma-joined) ``Server-Timing`` value; the first entry of a name wins. Malformed
    parameters are ignored, as the specification asks."""
    entries: dict[str, dict[str, Any]] = {}
    for entry in (value or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        if not name or name in entries:
            continue
        metric: dict[str, Any] = {"dur": None, "desc": None}
        for param in params:
            key, _, raw = param.partition("=")
            key, raw = key.strip().lower(), raw.strip().strip('"')
            if key == "dur":
                try:
                    metric["dur"] = float(raw)
                except ValueError:
                    pass
            elif key == "desc":
                metric["desc"] = raw
        entries[name] = metric
    return entries


def split_latency(wall_seconds: float, entries: Mapping[str, Mapping[str, Any]],
                  lookup_seconds: float = 0.0) -> Optional[dict[str, Any]]:
    """The parts of ``SPLIT_PARTS`` (seconds, rounded to µs, never negative: clocks of two
    processes and rounding can make a part a hair below zero) plus ``pooled``; None when the
    router's entries are missing (a router that does not write them, or one with
    ``ROUTER_SERVER_TIMING=false``). Without a ``runtime`` entry ``hop`` holds the whole sandbox
    time and ``runtime`` is None."""
    def ms(name: str) -> Optional[float]:
        dur = (entries.get(name) or {}).get("dur")
        return dur / 1000 if isinstance(dur, (int, float)) else None

    router, connect, sandbox, runtime = ms("router"), ms("connect"), ms("sandbox"), ms("runtime")
    if router is None or connect is None or sandbox is None:
        return None
    inside = runtime if runtime is not None else 0.0
    parts = {"sdk_lookup": lookup_seconds, "path": wall_seconds - router - lookup_seconds, "connect": connect,
             "router": router - connect - sandbox,
             "hop": sandbox - inside, "runtime": runtime}
    split: dict[str, Any] = {k: (None if v is None else round(max(v, 0.0), 6)) for k, v in parts.items()}
    split["pooled"] = (entries.get("connect") or {}).get("desc") == "pooled"
    return split


class ResponseTimings:
    """Keeps the ``Server-Timing`` entries of the last response an SDK sandbox's HTTP sessions
    received, and the seconds the SDK's pod-IP lookups took since the last ``clear``. ``attach``
    hooks the sessions of ``k8s_agent_sandbox``'s connector (its ``session`` and
    ``_no_retry_session``, both ``requests.Session``) and wraps its ``_get_pod_ip`` in a timer
    (the lookup itself is unchanged); it returns False when the SDK has no such sessions, and
    the caller then goes without a split."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}
        self.lookup_seconds = 0.0

    def attach(self, sandbox: Any) -> bool:
        connector = getattr(sandbox, "connector", None)
        sessions = [getattr(connector, name, None) for name in ("session", "_no_retry_session")]
        hooked = False
        for session in sessions:
            hooks = getattr(session, "hooks", None)
            if isinstance(hooks, dict) and isinstance(hooks.get("response"), list):
                hooks["response"].append(self._record)
                hooked = True
        lookup = getattr(connector, "_get_pod_ip", None)
        if hooked and callable(lookup):
            connector._get_pod_ip = self._timed(lookup)
        return hooked

    def clear(self) -> None:
        self.last = {}
        self.lookup_seconds = 0.0

    def _timed(self, lookup: Callable[[], Any]) -> Callable[[], Any]:
        def timed() -> Any:
            started = time.perf_counter()
            try:
                return lookup()
            finally:
                self.lookup_seconds += time.perf_counter() - started
        return timed

    def _record(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.last = parse_server_timing(response.headers.get("Server-Timing"))
        return response
