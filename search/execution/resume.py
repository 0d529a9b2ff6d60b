"""Kill and resume: clean up after dead processes, turn SIGTERM into Ctrl-C, tell how to resume.

Engine-neutral, through `search.engines.Engine`: `recover()` fails the trials dead processes
left running and queues their parameters again, `trial_alive(run)` says whether the trial an
MLflow run records still runs, `interrupted` lists the trials this process cut short and `store`
names where the study lives. The MLflow side (`tracking.recovery`) then closes the runs those
processes left RUNNING.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from tracking.secrets import mask

if TYPE_CHECKING:
    from search.engines import Engine
    from tracking.mlflow_tracker import SweepTracker


def recover(search: Engine, tracker: SweepTracker, study: str) -> None:
    """Before the first trial: fail and re-queue dead trials, close their MLflow runs as KILLED."""
    from tracking.recovery import close_orphaned_runs

    recovered = search.recover()
    closed = close_orphaned_runs(tracker, study, search.trial_alive)
    if recovered or closed:
        trials = ", ".join(f"#{n}" for n in recovered) or "none"
        print(
            f"recovered from a killed run: trial(s) {trials} marked failed and queued again; "
            f"{len(closed)} MLflow run(s) left RUNNING closed as KILLED",
            flush=True,
        )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (kill, a scheduler's stop) takes the Ctrl-C path."""
    from search.execution.stop import forget_stop, stop_like_ctrl_c

    previous = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_stop()


def resume_command() -> str:
    """The command line that started this process, which is also the one that resumes it."""
    return "python -m search.run " + shlex.join(sys.argv[1:])


def print_interrupted(cfg: DictConfig, study: str, search: Engine) -> None:
    """What Ctrl-C / SIGTERM left behind, and the command that resumes."""
    try:
        done: int | str = search.finished()
    except Exception:  # the storage itself was interrupted; the next start will tell
        done = "?"
    lines = [
        f"\ninterrupted: study {study!r} keeps {done} of {cfg.search.n_trials} finished trials "
        f"({search.store}; MLflow: {cfg.tracking.tracking_uri}).",
    ]
    if search.interrupted:
        lines.append(
            "trial(s) " + ", ".join(f"#{n}" for n in search.interrupted) + " cut short: KILLED "
            "in MLflow, redone with the same parameters on resume."
        )
    lines.append(f"resume with: {resume_command()}")
    print(mask("\n".join(lines)), file=sys.stderr, flush=True)


def print_final_interrupted(cfg: DictConfig, study: str) -> None:
    """What Ctrl-C / SIGTERM during the final stage left behind, and the command that resumes:
    the search is kept whole, and the same command runs the final stage again (not twice what
    it recorded: a registered model is not registered again)."""
    lines = [
        f"\ninterrupted in the final stage: study {study!r} keeps its "
        f"{cfg.search.n_trials} finished trials (MLflow: {cfg.tracking.tracking_uri}); the "
        "final stage (test, exports, registration, report) runs again on resume.",
        f"resume with: {resume_command()}",
    ]
    print(mask("\n".join(lines)), file=sys.stderr, flush=True)
