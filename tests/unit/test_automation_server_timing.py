"""automation/server_timing.py: parsing Server-Timing, splitting one command's latency along its
path, and collecting the entries off an SDK sandbox's requests sessions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests

from automation.server_timing import SPLIT_PARTS, ResponseTimings, parse_server_timing, split_latency

ROUTED = "runtime;dur=50.000, router;dur=61.500, connect;dur=0.800;desc=new, sandbox;dur=60.000"


def test_a_combined_header_gives_every_entry_with_its_duration_and_description() -> None:
    entries = parse_server_timing(ROUTED)
    assert entries["runtime"] == {"dur": 50.0, "desc": None}
    assert entries["connect"] == {"dur": 0.8, "desc": "new"}
    assert set(entries) == {"runtime", "router", "connect", "sandbox"}


@pytest.mark.parametrize("value, expected", [
    (None, {}), ("", {}),
    ('cache;desc="Cache Read";dur=23.2', {"cache": {"dur": 23.2, "desc": "Cache Read"}}),
    ("a;dur=abc, a;dur=2", {"a": {"dur": None, "desc": None}}),  # bad dur ignored; the first entry wins
    ("miss, ;dur=3", {"miss": {"dur": None, "desc": None}}),
])
def test_odd_values_parse_as_the_specification_says(value, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_server_timing(value) == expected


def test_the_parts_follow_the_request_and_add_up_to_the_wall_time() -> None:
    split = split_latency(0.0700, parse_server_timing(ROUTED))
    assert split is not None and split["pooled"] is False
    assert split == pytest.approx({"sdk_lookup": 0.0, "path": 0.0085, "connect": 0.0008, "router": 0.0007, "hop": 0.010, "runtime": 0.050,
                                   "pooled": False})
    assert sum(split[part] for part in SPLIT_PARTS) == pytest.approx(0.070)


def test_without_the_runtimes_entry_the_hop_holds_the_sandboxs_whole_time() -> None:
    split = split_latency(0.02, parse_server_timing("router;dur=10, connect;dur=0;desc=pooled, sandbox;dur=9"))
    assert split == pytest.approx({"sdk_lookup": 0.0, "path": 0.01, "connect": 0.0, "router": 0.001, "hop": 0.009, "runtime": None,
                                   "pooled": True})


def test_the_sdks_lookup_is_its_own_part_taken_out_of_the_path() -> None:
    split = split_latency(0.0700, parse_server_timing(ROUTED), lookup_seconds=0.005)
    assert split["sdk_lookup"] == 0.005 and split["path"] == pytest.approx(0.0035)


def test_no_split_without_the_routers_entries_and_no_negative_part() -> None:
    assert split_latency(0.05, parse_server_timing("runtime;dur=3")) is None
    # a caller clock that saw less than the router did (rounding) gives 0, not a negative path
    assert split_latency(0.0099, parse_server_timing("router;dur=10, connect;dur=0, sandbox;dur=10"))["path"] == 0.0


def test_response_timings_read_the_last_response_of_the_sdks_sessions() -> None:
    session, no_retry = requests.Session(), requests.Session()
    looked_up = []

    def get_pod_ip() -> str:
        looked_up.append(True)
        return "10.0.0.7"

    sandbox = SimpleNamespace(connector=SimpleNamespace(session=session, _no_retry_session=no_retry,
                                                        _get_pod_ip=get_pod_ip))
    timings = ResponseTimings()
    assert timings.attach(sandbox) is True
    response = requests.Response()
    response.headers["Server-Timing"] = ROUTED
    for hook in no_retry.hooks["response"]:
        hook(response)
    assert timings.last["sandbox"]["dur"] == 60.0
    assert sandbox.connector._get_pod_ip() == "10.0.0.7" and looked_up  # still the SDK's lookup, now timed
    assert timings.lookup_seconds > 0
    timings.clear()
    assert timings.last == {} and timings.lookup_seconds == 0.0


def test_response_timings_say_so_when_the_sdk_has_no_sessions() -> None:
    assert ResponseTimings().attach(SimpleNamespace()) is False
