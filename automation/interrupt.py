"""Interrupting the driver: SIGINT and SIGTERM stop every tunnel first, then unwind the driver
normally, so ``finally`` blocks still delete claims and restore the warm pool; during a Pulumi
engine command a first Ctrl-C lets the engine cancel cleanly instead (its state saved, the stack
lock released), and a second one forces.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Optional

from automation.tunnel import close_all_tunnels

_ENGINE_BUSY = threading.Event()
_ENGINE_INTERRUPTED = threading.Event()


class engine_operation:  # noqa: N801 - used as a context manager, reads like a statement
    """While a Pulumi engine command runs, a first Ctrl-C lets the engine cancel cleanly: the
    engine (same process group) gets the SIGINT too, finishes its in-flight steps, writes its
    state and releases the stack lock; the driver keeps reading its output until it exits.
    Killing the driver at once would close the engine's output pipe and leave a locked stack."""

    def __enter__(self) -> "engine_operation":
        _ENGINE_INTERRUPTED.clear()
        _ENGINE_BUSY.set()
        return self

    def __exit__(self, *exc: object) -> None:
        _ENGINE_BUSY.clear()
        if _ENGINE_INTERRUPTED.is_set() and exc[0] is None:
            raise KeyboardInterrupt


def engine_was_interrupted() -> bool:
    """True once a Ctrl-C arrived during the current or last engine command."""
    return _ENGINE_INTERRUPTED.is_set()


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    close_all_tunnels()
    if signum == signal.SIGINT and _ENGINE_BUSY.is_set() and not _ENGINE_INTERRUPTED.is_set():
        _ENGINE_INTERRUPTED.set()
        print("interrupt: the Pulumi engine is cancelling cleanly (state saved, lock released); "
              "press Ctrl-C again to force", file=sys.stderr, flush=True)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_cleanup() -> None:
    """Make SIGINT and SIGTERM stop every tunnel first, then unwind the driver normally
    (KeyboardInterrupt / SystemExit(143)), so ``finally`` blocks still delete claims."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
