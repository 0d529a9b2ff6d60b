"""Kill and resume: clean up after dead processes, turn SIGTERM into Ctrl-C, tell how to resume.

Engine-neutral: an engine may offer `recover() -> list[int]` (fail its trials left RUNNING by
dead processes and queue their parameters again), `trial_alive(run) -> bool | None` (whether the
trial an MLflow run records is still running) and `interrupted: list[int]` (trials this process
cut short). The MLflow side (`tracking.recovery`) then closes the runs those processes left
RUNNING.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig


def recover(search: Any, tracker: Any, study: str) -> None:
    """Before the first trial: fail and re-queue dead trials, close their MLflow runs as KILLED."""
    from tracking.recovery import close_orphaned_runs

    recovered = search.recover() if hasattr(search, "recover") else []
    closed = close_orphaned_runs(tracker, study, getattr(search, "trial_alive", lambda run: None))
    if recovered or closed:
        trials = ", ".join(f"#{n}" for n in recovered) or "none"
        print(
            f"recovered from a killed run: trial(s) {trials} marked failed and queued again; "
            f"{len(closed)} MLflow run(s) left RUNNING closed as KILLED",
            flush=True,
        )


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (kill, a scheduler's stop) takes the Ctrl-C path."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_command() -> str:
    """The command line that started this process, which is also the one that resumes it."""
    return "python -m search.run " + shlex.join(sys.argv[1:])


def print_interrupted(cfg: DictConfig, study: str, search: Any) -> None:
    """What Ctrl-C / SIGTERM left behind, and the command that resumes."""
    try:
        done = search.finished()
    except Exception:  # the storage itself was interrupted; the next start will tell
        done = "?"
    lines = [
        f"\ninterrupted: study {study!r} keeps {done} of {cfg.search.n_trials} finished trials "
        f"(Optuna: {cfg.search.storage}; MLflow: {cfg.tracking.tracking_uri}).",
    ]
    cut = getattr(search, "interrupted", [])
    if cut:
        lines.append(
            "trial(s) " + ", ".join(f"#{n}" for n in cut) + " cut short: marked failed in "
            "the study and KILLED in MLflow, parameters queued again."
        )
    lines.append(f"resume with: {resume_command()}")
    print("\n".join(lines), file=sys.stderr, flush=True)
