"""bench/platform_floor.py: the CRI timings parsed from the node's script, failures kept apart,
and the summary's lines."""

from __future__ import annotations

from bench import platform_floor


def test_cri_rows_are_medians_per_handler_and_errors_stay_out_of_the_numbers(monkeypatch) -> None:
    output = "\n".join(["runsc 500 100 400", "runsc 700 120 420", "runsc 600 110 900",
                        "error runc start: level=fatal msg=...", "runc 150 40 160", "level=fatal stray line"])
    monkeypatch.setattr(platform_floor, "_docker", lambda node, script: output)
    result = platform_floor.cri_floor("node", "image:tag", "runsc")
    assert result["runsc"] == {"runp_ms": 600, "create_ms": 110, "start_ms": 420, "total_ms": 1240}  # total: median of the sums
    assert result["runc"]["total_ms"] == 350
    assert result["errors"] == ["error runc start: level=fatal msg=..."]


def test_the_summary_names_each_floor() -> None:
    report = {"cpus": 2, "load_before": [1, 2, 3],
              "api": {"get_sandbox": {"p50_ms": 9.0, "p90_ms": 12.0, "kube-apiserver_cpu_ms": 5.0},
                      "patch_sandbox": {"p50_ms": 30.0, "p90_ms": 50.0}, "warm_path_writes": 4, "warm_path_floor_ms": 120.0},
              "cri": {"runsc": {"runp_ms": 1, "create_ms": 2, "start_ms": 3, "total_ms": 6}, "errors": ["x"]},
              "in_sandbox_ms": {"true": 16.0, "python": 64.0, "runtime_imports": 660.0},
              "sentry_idle": {"sandboxes": 2, "median_ms_per_s": 20.0, "max_ms_per_s": 25.0}}
    lines = platform_floor.summary(report)
    assert "  API get_sandbox: p50 9.0 ms, p90 12.0 ms (kube-apiserver 5.0 ms CPU)" in lines
    assert "  warm claim floor: 4 serial writes x PATCH p50 = 120.0 ms" in lines
    assert "  CRI runsc: runp 1 + create 2 + start 3 = 6 ms" in lines
    assert any("python3 -c pass 64.0 ms" in line for line in lines)
    assert lines[-1] == "  idle gVisor sandbox: 20.0 ms CPU per second (median of 2)"


def test_requests_are_timed_one_after_the_other() -> None:
    calls = []
    result = platform_floor.timed_requests(calls.append, 5)
    assert calls == [0, 1, 2, 3, 4] and result["n"] == 5 and result["p50_ms"] >= 0


def test_the_warm_path_has_one_write_less_without_claim_annotations() -> None:
    assert platform_floor.warm_path_writes({}) == 4
    assert platform_floor.warm_path_writes({"disable-claim-observability-annotations": "true"}) == 3
    assert platform_floor.warm_path_writes({"disable-claim-observability-annotations": "false"}) == 4


def test_the_in_sandbox_script_times_the_benchs_own_first_command() -> None:
    import shlex

    from automation.bench import FIRST_EXEC_COMMAND

    script = platform_floor.IN_SANDBOX % {"command": FIRST_EXEC_COMMAND}
    compile(script, "in_sandbox", "exec")  # formatting the command in leaves valid Python
    namespace: dict = {}
    exec(script.split("\n# What the runtime gives")[0], namespace)  # noqa: S102 - just the COMMAND line
    assert shlex.split(namespace["COMMAND"]) == ["python", "-c", "print('ready')"]
