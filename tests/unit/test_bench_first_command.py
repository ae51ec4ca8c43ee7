"""bench/first_command.py: medians per mode, over warm claims only."""

from __future__ import annotations

from bench import first_command


def test_medians_per_mode_count_only_claims_that_were_warm() -> None:
    samples = [{"mode": "at-once", "warm": True, "claim_ready_seconds": 0.1, "first_exec_seconds": 0.2, "second_exec_seconds": 0.1},
               {"mode": "at-once", "warm": True, "claim_ready_seconds": 0.3, "first_exec_seconds": 0.4, "second_exec_seconds": 0.1},
               {"mode": "at-once", "warm": False, "claim_ready_seconds": 2.0, "first_exec_seconds": 9.0, "second_exec_seconds": 9.0},
               {"mode": "after-refill", "warm": True, "claim_ready_seconds": 0.1, "first_exec_seconds": 0.09,
                "second_exec_seconds": 0.07}]
    summary = first_command.summarize(samples)
    assert summary["at-once"] == {"claim_ready_seconds": 0.2, "first_exec_seconds": 0.3, "second_exec_seconds": 0.1, "count": 2}
    assert summary["after-refill"]["first_exec_seconds"] == 0.09 and summary["after-refill"]["count"] == 1
