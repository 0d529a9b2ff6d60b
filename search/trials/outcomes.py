"""The rules every engine shares about how trials end.

What counts as finished (`experiments.outcome.TrialOutcome.counts_as_finished`), how consecutive
failures stop a sweep (`FailureStreak`, exit status 3 through `TooManyFailures`), the failure
text recorded in the engine and in MLflow, and whether an error was really a Ctrl-C: one
implementation, so that `search=optuna` and `search=keras_tuner` cannot drift apart.
"""

from __future__ import annotations

from experiments.errors import TooManyFailures, TrialFailed, WorkerError
from experiments.outcome import TrialOutcome
from search.execution.pool import TIMED_OUT


def is_finished(outcome: TrialOutcome | None) -> bool:
    """Whether a trial counts toward `search.n_trials`; None: still running or waiting."""
    return outcome is not None and outcome.counts_as_finished


def failure_reason(err: BaseException) -> str:
    """One line or paragraph saying why a trial failed, as recorded in the engine and MLflow."""
    return (
        str(err) if isinstance(err, TrialFailed | WorkerError) else f"{type(err).__name__}: {err}"
    )


def was_interrupted(err: BaseException) -> bool:
    """Whether `err` is, or was raised while handling, a KeyboardInterrupt.

    Ctrl-C inside TensorFlow or a store write can surface as another error whose context is the
    interrupt; it must still take the Ctrl-C path (trial redone, exit 130), not count as failed.
    After a stop signal (search/execution/stop.py) every error is taken for the interrupt.
    """
    from search.execution.stop import stop_asked

    if stop_asked():
        return True
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


class FailureStreak:
    """Counts failed trials in a row; `search.max_consecutive_failures` of them stop the sweep.

    A complete or pruned trial ends the streak; an interrupted one neither adds nor ends it.
    `limit` None never stops (the config's null); a row of search/config/rules.py has validated it.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.last_reason = ""

    def record(self, outcome: TrialOutcome, reason: str = "") -> None:
        if outcome is TrialOutcome.FAILED:
            self.count += 1
            self.last_reason = reason
        elif outcome is not TrialOutcome.INTERRUPTED:
            self.count = 0

    @property
    def stop_reason(self) -> str | None:
        """The message that stops the sweep, or None while it may go on."""
        if self.limit is None or self.count < self.limit:
            return None
        return (
            f"{self.count} trials failed in a row (search.max_consecutive_failures={self.limit}); "
            f"the last one: {self.last_reason.splitlines()[0][:300] if self.last_reason else '?'}. "
            "Each failed trial is in MLflow with its reason (tag sweeplab.failure_reason). Check "
            "the search space and fixed settings (a learning rate that diverges, a model too big "
            "for memory), or raise search.max_consecutive_failures (null: never stop); the same "
            "command continues the study."
        )

    def raise_if_exceeded(self) -> None:
        """Raise `TooManyFailures` (exit status 3) once the streak reached the limit."""
        if self.stop_reason:
            raise TooManyFailures(self.stop_reason)


def forgiven(outcomes: list[tuple[TrialOutcome | None, str]]) -> int:
    """How many trials, of (outcome, failure reason) pairs, do not count toward n_trials
    although finished: those stopped by search.trial_timeout, while no trial has completed.

    A study whose every trial timed out used to be "complete" with no model, and re-running it
    with a sane search.trial_timeout said "nothing to train": the timeout judged the budget,
    not the configs. Once one trial completes, timed-out trials count like other failures (the
    study has a model; more trials are search.n_trials' business).
    """
    if any(outcome is TrialOutcome.COMPLETE for outcome, _ in outcomes):
        return 0
    return sum(
        outcome is TrialOutcome.FAILED and reason.startswith(TIMED_OUT)
        for outcome, reason in outcomes
    )


def no_model(study: str, finished: int) -> str:
    """The error paragraph of a sweep that ended with no completed trial (exit status 3)."""
    return (
        f"study {study!r} has no model: none of its {finished} counted trial(s) completed (each "
        "failed or was pruned; the reasons are above and in MLflow, tag "
        "sweeplab.failure_reason), so nothing was tested, registered or exported. Trials stopped "
        "by search.trial_timeout do not count while no trial has completed: run again with a "
        "larger search.trial_timeout (or null) to train them; for other failures fix their "
        "cause, or raise search.n_trials to try more configs."
    )
