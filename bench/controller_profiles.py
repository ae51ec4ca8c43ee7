"""Controller profiles side by side: ``bench/config_compare.py`` with one candidate per
``controllerProfile`` (plus an optional "custom" one: the first profile and ``--flags``), in
alternating rounds of up + bench. The report is ``out/bench/controller_profiles.json``; the stack
ends on the profile it started with (``--restore``, default: the first).

    python bench/controller_profiles.py gvisor [--profiles release,latency] [--rounds 2] [-n 20]
        [--concurrency 1,4] [--flags '{"sandbox-write-behind-window": "250ms"}']
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from config_compare import Candidate, compare, summary_lines  # noqa: E402


def candidates(profiles: str, flags: str) -> list[Candidate]:
    """One candidate per profile (its flags unset), and "custom" = the first profile + ``flags``."""
    chosen = [Candidate(p, {"controllerProfile": p, "controllerFlags": ""}) for p in profiles.split(",")]
    if flags:
        chosen.append(Candidate("custom", {"controllerProfile": chosen[0].name, "controllerFlags": flags}))
    return chosen


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--profiles", default="release,latency")
    parser.add_argument("--flags", default="", help="JSON object: a 'custom' candidate = first profile + these flags")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--restore", default=None)
    args = parser.parse_args(argv)
    chosen = candidates(args.profiles, args.flags)
    restore = args.restore or chosen[0].name
    report = compare(args.stack, chosen, report_name="controller_profiles", rounds=args.rounds, n=args.n,
                     concurrency=args.concurrency, restore=Candidate(restore, {"controllerProfile": restore,
                                                                                "controllerFlags": ""}))
    print("\n" + "\n".join(summary_lines(
        f"controller profiles, {args.rounds} alternating rounds of n={args.n} (pooled: median of the rounds)",
        report["comparison"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
