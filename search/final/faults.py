"""Fault injection for the kill/resume tests: `fault_point(step)` kills the sweep at one step of
its final stage. Its own module, so the final stage's modules (stage, reevaluate) and the sweep
can each call it without importing one another."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "SWEEPLAB_FAULT_AT"  # tests: the final-stage step at which the sweep kills itself


def fault_point(step: str) -> None:
    """SIGKILL this process when $SWEEPLAB_FAULT_AT names `step` (`step:SIGINT`: Ctrl-C).

    The kill/resume tests must land a kill -9 at one precise step of the final stage; a kill
    timed from outside would race those steps. The steps, in order: reevaluation (before its
    first training, search/final/reevaluate.py), retraining (before it), ensemble (the shipped
    average built, before its test), after each of tested, exported and registered
    (`done_step`, search/final/stage.py), and report (before the HTML report is written, after
    registration, search/sweep.py). Unset, this does nothing. The signal is raised in this
    thread (`signal.raise_signal`), whose handler runs before it returns, so the step it lands
    in is exact.
    """
    at, _, how = os.environ.get(FAULT_ENV, "").partition(":")
    if at == step:
        print(f"fault injected: killed at {step}", flush=True)
        signal.raise_signal(getattr(signal, how or "SIGKILL"))
