"""Kubernetes resource quantities (``250m``, ``512Mi``, ``1e3``, ``2``) as plain numbers: what
the router's GOMAXPROCS is derived from, and what the driver's capacity arithmetic adds up."""

from __future__ import annotations

import re
from typing import Any

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``250m``, ``512Mi``, ``1e3``, ``2``) as a float (cores, bytes, …)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, exponent, suffix = match.groups()
    return float(number) * (10 ** int(exponent[1:]) if exponent else _SUFFIX.get(suffix or "", 1.0))
