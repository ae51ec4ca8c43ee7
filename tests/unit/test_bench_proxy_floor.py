"""bench/proxy_floor.py: the relay's command, the halt-poll window's restore, the rotation of
paths per round and the added-latency summary (no sockets, no wrk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import proxy_floor


def test_the_relay_is_a_bare_tcp_forwarder_on_loopback() -> None:
    cmd = proxy_floor.relay_command("/usr/bin/socat", 4000, 5000)
    assert cmd == ["/usr/bin/socat", "TCP-LISTEN:4000,bind=127.0.0.1,reuseaddr,fork,nodelay", "TCP:127.0.0.1:5000,nodelay"]


def test_the_halt_poll_window_is_restored_even_when_the_run_fails(tmp_path: Path) -> None:
    knob = tmp_path / "guest_halt_poll_ns"
    knob.write_text("0\n")
    poll = proxy_floor.HaltPoll(200000, knob)
    assert poll.available
    with pytest.raises(RuntimeError):
        with poll:
            assert knob.read_text() == "200000"
            raise RuntimeError("wrk failed")
    assert knob.read_text() == "0"
    assert not proxy_floor.HaltPoll(1, tmp_path / "absent").available


def test_each_round_rotates_the_order_so_every_path_goes_first_once() -> None:
    orders = [order for _, order in proxy_floor.rotations(4)]
    assert {order[0] for order in orders} == set(proxy_floor.PATHS)
    assert all(sorted(order) == sorted(proxy_floor.PATHS) for order in orders)


def test_added_latency_and_throughput_are_over_direct() -> None:
    level = {"direct": {"rps": 10000.0, "p50_ms": 0.05}, "relay": {"rps": 5000.0, "p50_ms": 0.12},
             "ours": {"rps": 4000.0, "p50_ms": 0.15}, "python": {"rps": None, "p50_ms": None}}
    summary = proxy_floor.level_summary(level)
    assert summary["relay_added_p50_ms"] == 0.07 and summary["ours_added_p50_ms"] == 0.1
    assert summary["relay_over_direct"] == 0.5 and summary["python_over_direct"] is None


def test_medians_ignore_missing_values() -> None:
    runs = [{"rps": 1.0, "p50_ms": 0.1, "p99_ms": None}, {"rps": 3.0, "p50_ms": 0.3, "p99_ms": 1.0}]
    assert proxy_floor.medians(runs) == {"rps": 2.0, "p50_ms": 0.2, "p99_ms": 1.0, "switches_per_request": None}


def test_extra_router_variants_are_summarised_like_the_fixed_paths() -> None:
    paths = ("direct", "relay", "ours", "python", "ours_gomaxprocs1")
    level = {name: {"rps": 100.0, "p50_ms": 0.1} for name in paths}
    level["ours_gomaxprocs1"] = {"rps": 50.0, "p50_ms": 0.15}
    summary = proxy_floor.level_summary(level, paths)
    assert summary["ours_gomaxprocs1_added_p50_ms"] == 0.05 and summary["ours_gomaxprocs1_over_direct"] == 0.5
    assert [order[0] for _, order in proxy_floor.rotations(5, paths)] == list(paths)


def test_context_switches_add_up_every_thread_of_the_process_and_its_children(tmp_path: Path) -> None:
    def task(pid: int, tid: int, voluntary: int, involuntary: int, children: str = "") -> None:
        folder = tmp_path / str(pid) / "task" / str(tid)
        folder.mkdir(parents=True)
        (folder / "status").write_text(f"Name:\tx\nvoluntary_ctxt_switches:\t{voluntary}\n"
                                       f"nonvoluntary_ctxt_switches:\t{involuntary}\n")
        (folder / "children").write_text(children)

    task(10, 10, 5, 1, "20 ")
    task(10, 11, 3, 0)
    task(20, 20, 7, 2)  # a child serving one connection
    assert proxy_floor.context_switches(10, tmp_path) == 18
    assert proxy_floor.context_switches(99, tmp_path) == 0  # gone: nothing to count
