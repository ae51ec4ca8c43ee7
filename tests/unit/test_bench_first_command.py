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
    assert summary["at-once"] == {"claim_ready_seconds": 0.2, "first_exec_seconds": 0.3, "second_exec_seconds": 0.1, "count": 2,
                                    "first_split": None, "second_split": None}
    assert summary["after-refill"]["first_exec_seconds"] == 0.09 and summary["after-refill"]["count"] == 1


def test_the_split_of_each_command_is_a_median_per_part() -> None:
    def split(path: float, connect: float) -> dict:
        return {"sdk_lookup": 0.02, "path": path, "connect": connect, "router": 0.0001, "hop": 0.002, "runtime": None, "pooled": connect == 0}

    samples = [{"mode": "at-once", "warm": True, "claim_ready_seconds": 0.1, "first_exec_seconds": 0.2,
                "second_exec_seconds": 0.1, "first_split": split(0.03, 0.002), "second_split": split(0.01, 0.0)},
               {"mode": "at-once", "warm": True, "claim_ready_seconds": 0.1, "first_exec_seconds": 0.2,
                "second_exec_seconds": 0.1, "first_split": split(0.05, 0.004), "second_split": None}]
    row = first_command.summarize(samples)["at-once"]
    assert row["first_split"] == {"sdk_lookup": 0.02, "path": 0.04, "connect": 0.003, "router": 0.0001, "hop": 0.002, "runtime": None}
    assert row["second_split"]["path"] == 0.01  # a command without a split is left out, not counted as zero
    assert first_command.summarize(samples)["after-refill"]["first_split"] is None
