"""Why a warm claim's first command is slower than a cold one's: the same warm claim, its first
command run either at once (as users do) or only after the pool's refill is Ready, alternating
in one run so drift hits both alike.

When a claim adopts a warm sandbox the pool controller at once creates a replacement, and that
gVisor sandbox boots (runsc create, the runtime server's imports) on the same node while the
claim's first command runs. A cold claim (pool 0) starts no refill. This bench separates that:
per claim it records the SDK's claim→Ready, then the first and second command's seconds, with
``mode`` ``at-once`` or ``after-refill`` (the refill waited for, and the namespace settled, first).
Each command is also split along its path by the router's and runtime's ``Server-Timing``
entries (automation/server_timing.py): what the first command pays that the second does not
shows up in the part that pays it (a new tunnel stream, a new sandbox connection, the command).

    PYTHONPATH=. python bench/first_command.py [STACK] [-n 6]

Output: ``out/bench/first_command.json`` and a summary (median per mode). Needs a deployed stack;
the pool's replica count is left as it was.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from automation.bench import FIRST_EXEC_COMMAND  # noqa: E402
from automation.kube import kube_args  # noqa: E402
from automation.paths import default_paths  # noqa: E402
from automation.server_timing import SPLIT_PARTS, ResponseTimings, split_latency  # noqa: E402
from automation.session import deployed_by_name, sdk_session  # noqa: E402

MODES = ("at-once", "after-refill")


def one_claim(client: Any, cluster: Any, target: Any, mode: str) -> dict[str, Any]:
    """Claim from the pool, run the first command (at once, or after the refill is Ready),
    then a second one; the claim is deleted."""
    cluster.wait_settled(target.namespace, target.warm_pool, target.warm_pool_replicas)
    started = time.monotonic()
    sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=120)
    ready = time.monotonic() - started
    try:
        waited = 0.0
        if mode == "after-refill":
            waited = cluster.wait_pool_refilled(target.namespace, target.warm_pool, target.warm_pool_replicas,
                                                claimed_pod=sandbox.sandbox_id)
            time.sleep(1.0)  # the replacement's last status writes
        timings = ResponseTimings()
        hooked = timings.attach(sandbox)
        seconds, splits = [], []
        for _ in range(2):
            timings.clear()
            command_started = time.monotonic()
            sandbox.commands.run(FIRST_EXEC_COMMAND)
            seconds.append(time.monotonic() - command_started)
            splits.append(split_latency(seconds[-1], timings.last, timings.lookup_seconds) if hooked else None)
        return {"mode": mode, "warm": sandbox.sandbox_id != sandbox.claim_name, "claim_ready_seconds": round(ready, 4),
                "refill_wait_seconds": round(waited, 3), "first_exec_seconds": round(seconds[0], 4),
                "second_exec_seconds": round(seconds[1], 4), "first_split": splits[0], "second_split": splits[1]}
    finally:
        client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)


def summarize(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for mode in MODES:
        mine = [s for s in samples if s["mode"] == mode and s["warm"]]
        out[mode] = {key: round(statistics.median(s[key] for s in mine), 4) if mine else None
                     for key in ("claim_ready_seconds", "first_exec_seconds", "second_exec_seconds")}
        out[mode]["count"] = len(mine)
        for which in ("first", "second"):
            parts = {}
            for part in SPLIT_PARTS:
                values = [v for v in ((s.get(f"{which}_split") or {}).get(part) for s in mine) if v is not None]
                parts[part] = round(statistics.median(values), 6) if values else None
            out[mode][f"{which}_split"] = parts if any(v is not None for v in parts.values()) else None
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", default="gvisor")
    parser.add_argument("-n", type=int, default=6, help="claims per mode")
    parser.add_argument("--out", default=str(REPO / "out" / "bench" / "first_command.json"))
    args = parser.parse_args(argv)
    config, target, cluster = deployed_by_name(default_paths(), args.stack)
    samples = []
    with sdk_session(target, cluster, kube_args(config)) as session:
        for index in range(args.n):
            for mode in (MODES if index % 2 == 0 else MODES[::-1]):
                sample = one_claim(session.client, cluster, target, mode)
                samples.append(sample)
                print(f"claim {len(samples)} ({mode}): ready {sample['claim_ready_seconds']}s, first command "
                      f"{sample['first_exec_seconds']}s, second {sample['second_exec_seconds']}s"
                      + (f" (refill waited {sample['refill_wait_seconds']}s)" if mode == "after-refill" else ""),
                      flush=True)
    report = {"schema": "first-command/2", "stack": args.stack, "n": args.n, "samples": samples,
              "summary": summarize(samples)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for mode, row in report["summary"].items():
        print(f"{mode:13} (n={row['count']}): claim->Ready {row['claim_ready_seconds']}s, first command "
              f"{row['first_exec_seconds']}s, second {row['second_exec_seconds']}s")
        for which in ("first", "second"):
            if row.get(f"{which}_split"):
                print(f"{'':13}   {which} command p50 by Server-Timing: " + ", ".join(
                    f"{part} {'-' if v is None else f'{v * 1000:.1f}ms'}" for part, v in row[f"{which}_split"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
