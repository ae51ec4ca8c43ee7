"""Unit tests for sandbox_router.flow_control: pause reasons of the client socket and the sandbox
reading that follows client writing (plus the upstream side of it in sandbox_router.upstream)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.flow_control import (  # noqa: E402
    PAUSE_PENDING, PAUSE_PIPELINE, PAUSE_UPSTREAM, PENDING_WINDOW, FlowControl,
)
from sandbox_router.metrics import RouterMetrics  # noqa: E402
from sandbox_router.routing import AddressPolicy  # noqa: E402
from sandbox_router.upstream import UpstreamConnection, UpstreamPool  # noqa: E402


class Recorder:
    """Stands in for a transport (or an upstream connection): records pause/resume calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_reasons_are_distinct_bits_and_the_window_is_256_kib() -> None:
    assert {PAUSE_UPSTREAM, PAUSE_PIPELINE, PAUSE_PENDING} == {1, 2, 4}
    assert PENDING_WINDOW == 256 * 1024


# (operations, transport calls, reasons left)
SEQUENCES = [
    ([("pause", PAUSE_UPSTREAM)], ["pause"], PAUSE_UPSTREAM),
    ([("pause", PAUSE_UPSTREAM), ("resume", PAUSE_UPSTREAM)], ["pause", "resume"], 0),
    ([("pause", PAUSE_UPSTREAM), ("pause", PAUSE_PIPELINE)], ["pause"], PAUSE_UPSTREAM | PAUSE_PIPELINE),
    ([("pause", PAUSE_UPSTREAM), ("pause", PAUSE_PIPELINE), ("resume", PAUSE_UPSTREAM)], ["pause"], PAUSE_PIPELINE),
    ([("pause", PAUSE_UPSTREAM), ("pause", PAUSE_PIPELINE), ("resume", PAUSE_PIPELINE), ("resume", PAUSE_UPSTREAM)],
     ["pause", "resume"], 0),
    ([("pause", PAUSE_PENDING), ("pause", PAUSE_PENDING), ("resume", PAUSE_PENDING)], ["pause", "resume"], 0),
    ([("resume", PAUSE_UPSTREAM)], [], 0),                                   # nothing to resume
    ([("pause", PAUSE_UPSTREAM), ("resume", PAUSE_PENDING)], ["pause"], PAUSE_UPSTREAM),  # not this reason
    ([("pause", PAUSE_UPSTREAM | PAUSE_PENDING), ("resume", PAUSE_PENDING)], ["pause"], PAUSE_UPSTREAM),
    ([("pause", PAUSE_UPSTREAM), ("resume", PAUSE_UPSTREAM), ("pause", PAUSE_PIPELINE)], ["pause", "resume", "pause"],
     PAUSE_PIPELINE),
]


@pytest.mark.parametrize(("operations", "calls", "left"), SEQUENCES)
def test_reading_is_paused_with_the_first_reason_and_resumed_with_the_last(
        operations: list[tuple[str, int]], calls: list[str], left: int) -> None:
    transport = Recorder()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    for operation, reason in operations:
        (flow.pause_reading if operation == "pause" else flow.resume_reading)(reason)
    assert transport.calls == calls
    assert flow.reasons == left


def test_a_closing_socket_is_never_paused_or_resumed_but_reasons_are_still_kept() -> None:
    transport = Recorder()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    flow.pause_reading(PAUSE_UPSTREAM)
    flow.closed = True
    flow.resume_reading(PAUSE_UPSTREAM)
    flow.pause_reading(PAUSE_PIPELINE)
    assert transport.calls == ["pause"]
    assert flow.reasons == PAUSE_PIPELINE


def test_client_writing_pauses_and_resumes_the_sandbox() -> None:
    flow = FlowControl(Recorder())  # type: ignore[arg-type]
    upstream = Recorder()
    assert not flow.writing_paused
    flow.pause_writing(upstream)
    assert flow.writing_paused and upstream.calls == ["pause"]
    flow.resume_writing(upstream)
    assert not flow.writing_paused and upstream.calls == ["pause", "resume"]
    flow.pause_writing(None)  # no upstream yet: only remembered (applied when one is attached)
    assert flow.writing_paused
    flow.resume_writing(None)
    assert not flow.writing_paused
    assert flow.transport.calls == []  # type: ignore[attr-defined]


def upstream_with(transport: Recorder) -> UpstreamConnection:
    pool = UpstreamPool(None, AddressPolicy(), RouterMetrics(), 4, 4.0)  # type: ignore[arg-type]
    conn = UpstreamConnection(pool, ("127.0.0.1", 1, ""))
    conn.transport = transport  # type: ignore[assignment]
    return conn


def test_the_upstream_pauses_its_reading_once_and_not_when_closed() -> None:
    transport = Recorder()
    conn = upstream_with(transport)
    conn.resume_reading()
    assert transport.calls == [] and not conn.reading_paused
    conn.pause_reading()
    conn.pause_reading()
    assert transport.calls == ["pause"] and conn.reading_paused
    conn.resume_reading()
    conn.resume_reading()
    assert transport.calls == ["pause", "resume"] and not conn.reading_paused
    conn.closed = True
    conn.pause_reading()
    assert transport.calls == ["pause", "resume"] and not conn.reading_paused
    conn.closed = False
    conn.pause_reading()
    conn.closed = True
    conn.resume_reading()
    assert transport.calls == ["pause", "resume", "pause"] and conn.reading_paused
