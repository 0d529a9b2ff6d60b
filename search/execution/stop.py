"""A stop asked by a signal (SIGTERM, or a cluster's SIGUSR2), remembered for the process.

The handlers raise KeyboardInterrupt where the signal lands. Inside a store call or TensorFlow
that interrupt can come out as another error with no trace of it (a library that wraps it, a
connection it broke), which the runner then took for the trial's own failure: on a first trial
even for a config error that stops the sweep with exit 2 (seen under load in
tests/test_clusters.py::test_slurms_stop_signal_stops_a_worker_like_ctrl_c). Once a stop was
asked, every error takes the Ctrl-C path: the trial is marked interrupted and redone on resume.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_ASKED = threading.Event()


def stop_like_ctrl_c(signum: int, frame: Any) -> None:
    """A signal handler (SIGTERM, a cluster's SIGUSR2): ask the stop, then take the Ctrl-C path."""
    ask_stop()
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def ask_stop() -> None:
    """A signal handler asks this process to stop (before it raises KeyboardInterrupt)."""
    _ASKED.set()


def stop_asked() -> bool:
    return _ASKED.is_set()


def forget_stop() -> None:
    """The block a handler guarded is over (search.execution.resume.sigterm_as_interrupt)."""
    _ASKED.clear()
