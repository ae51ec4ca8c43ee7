"""The controller's tuning flags: which of its command-line flags a stack may set, how each value
is checked, the named profiles, and the ``--flag=value`` arguments they become.

Only flags that change how fast or how much the controller works are here (workers, API client
limits and connections, write coalescing, events and annotations, warm-pool refill pacing). Flags
that change what it exposes or trusts (pprof, webhooks, leader election, metrics addresses) are
not settable through this table: a stack that names one gets an error, not a silently weaker
controller. The names are those of the pinned release (v0.5.6); a release that lacks a flag
refuses to start with it, so profiles only use flags every release this package accepts has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$|^0$")


@dataclass(frozen=True)
class Flag:
    """One tunable flag: its value kind and what it does (shown in errors and docs)."""

    kind: str
    """``int``, ``float``, ``bool`` or ``duration`` (Go syntax: ``250ms``, ``1m30s``)."""
    doc: str
    minimum: float = 0


TUNABLE_FLAGS: dict[str, Flag] = {
    "sandbox-concurrent-workers": Flag("int", "parallel Sandbox reconciles (release default 100)", 1),
    "sandbox-claim-concurrent-workers": Flag("int", "parallel SandboxClaim reconciles (release default 50)", 1),
    "sandbox-template-concurrent-workers": Flag("int", "parallel SandboxTemplate reconciles (release default 1)", 1),
    "sandbox-warm-pool-concurrent-workers": Flag("int", "parallel SandboxWarmPool reconciles (release default 1)", 1),
    "kube-api-qps": Flag("float", "client-side API request rate; -1 = unlimited (release default)", -1),
    "kube-api-burst": Flag("int", "client-side API burst (release default 10)", 1),
    "api-connections": Flag("int", "HTTP/2 connections for non-watch API traffic (release default 1)", 1),
    "separate-watch-connection": Flag("bool", "a connection of its own for list/watch streams (release default false)"),
    "cache-label-selectors": Flag("bool", "cache only pods and Services the controller labelled (release default false)"),
    "disable-claim-events": Flag("bool", "no Kubernetes Events from the claim controller (release default false)"),
    "disable-claim-observability-annotations": Flag(
        "bool", "no timestamp/trace annotations on claims: one API write less per claim, and no "
        "controller-side phase breakdown in `bench` (release default false)"),
    "sandbox-write-behind-window": Flag("duration", "coalescing window for metadata-only Sandbox writes; 0 = off (release default)"),
    "sandbox-warm-pool-max-batch-size": Flag("int", "sandboxes created or deleted per warm-pool round (release default 300)", 1),
    "sandbox-warm-pool-max-refill-rate": Flag("float", "refill pace in sandboxes/s per pool; 0 = unpaced (release default)"),
    "sandbox-warm-pool-replenish-delay": Flag("duration", "wait before refilling after members leave the pool; 0 = none (release default)"),
    "sandbox-warm-pool-readiness-grace-period": Flag("duration", "how long a pool member may stay non-Ready before it is replaced (release default 5m)"),
    "enable-warm-pool-eviction": Flag("bool", "mark warm-pool pods as safe to evict (release default true)"),
}

# Named starting points; ``controllerFlags`` entries override them one by one.
# - release: exactly the release's own defaults (no flag added);
# - latency: what shortens claim → Ready on a small cluster: list/watch traffic on its own
#   connection so watch events do not queue behind the claim burst's writes, a second connection
#   for writes, caches scoped to the controller's own pods, and no Events (one API write less per
#   claim). Claim annotations stay on: `bench` reads them for its controller-side breakdown.
# - interactive (the default): for agents that run a command as soon as their claim is Ready. No
#   claim annotations (one API write less per claim), and the pool waits 2 s before it refills,
#   so a claim's first commands do not share the node with the replacement's boot. Measured side
#   by side (docs/controller-write-path.json, 2 rounds of 8): warm claim → first result 0.230 →
#   0.187 s, first command 0.146 → 0.109 s; cold unchanged within noise (2.00 → 2.08 s). The
#   cost: a burst within 2 s of the last adoption finds the pool smaller; `bench` loses the
#   controller-side (annotation) part of its breakdown.
PROFILES: dict[str, dict[str, str]] = {
    "interactive": {
        "disable-claim-observability-annotations": "true",
        "sandbox-warm-pool-replenish-delay": "2s",
    },
    "release": {},
    "latency": {
        "separate-watch-connection": "true",
        "api-connections": "2",
        "cache-label-selectors": "true",
        "disable-claim-events": "true",
        "sandbox-warm-pool-concurrent-workers": "2",
    },
}
DEFAULT_PROFILE = "interactive"


def check_value(name: str, value: Any) -> tuple[Optional[str], Optional[str]]:
    """``(normalised value, None)`` or ``(None, what is wrong)`` for one flag's value."""
    flag = TUNABLE_FLAGS[name]
    text = str(value).strip().lower() if isinstance(value, bool) else str(value).strip()
    if flag.kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower(), None
        return None, "expected true or false"
    if flag.kind == "duration":
        if DURATION.match(text):
            return text, None
        return None, "expected a Go duration such as 250ms, 2s or 1m30s"
    try:
        number = int(text) if flag.kind == "int" else float(text)
    except ValueError:
        return None, f"expected {'an integer' if flag.kind == 'int' else 'a number'}"
    if isinstance(value, bool) or number < flag.minimum:
        return None, f"expected {'an integer' if flag.kind == 'int' else 'a number'} >= {flag.minimum:g}"
    return (str(number) if flag.kind == "int" else text), None


def effective_flags(profile: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The profile's flags with the explicit overrides on top (both already checked)."""
    return {**PROFILES[profile], **overrides}


def as_arguments(flags: Mapping[str, str]) -> list[str]:
    """``--name=value`` arguments, in a stable order (so a no-op ``up`` changes nothing)."""
    return [f"--{name}={flags[name]}" for name in sorted(flags)]


def merge_arguments(existing: list[str], flags: Mapping[str, str]) -> list[str]:
    """The container's arguments with each tuned flag set once: an existing ``--name`` or
    ``--name=value`` of a tuned flag is replaced, everything else kept in order."""
    tuned = set(flags)

    def name_of(argument: str) -> Optional[str]:
        if not argument.startswith("-"):
            return None
        return argument.lstrip("-").split("=", 1)[0]

    kept = [a for a in existing if name_of(a) not in tuned]
    return kept + as_arguments(flags)
