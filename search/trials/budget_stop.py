"""Stopping a running trial at an epoch end once the time left is the final stage's.

A trial started when it fit may still run into the reserve (search/trials/budget.py): the next
epoch would eat the retraining's time. Its listener checks the budget at each epoch end, one more
epoch as long as its last ahead (`EpochTimer`), and raises `OutOfTime`, which every engine
records as pruned (stopped_by=budget). The single-objective Optuna engine makes the same check in
its pruning callback; `BudgetStop` is the listener where no pruner runs (several objectives).
"""

from __future__ import annotations

import time

from search.trials.budget import Budget


class OutOfTime(Exception):  # noqa: N818 (a stop, not an error: the trial ends pruned)
    """A running trial stopped at an epoch end because the time left is the final stage's."""


def out_of_time(epoch: int) -> str:
    """The reason a trial stopped by the budget carries (the runner's line says search.timeout)."""
    return (  # epochs counted from 1, as the trial line says them
        f"search.timeout: stopped after epoch {epoch + 1}, the time left is the final stage's"
    )


class EpochTimer:
    """How long a running trial's last epoch took, between the epoch ends its listener sees: the
    stop check's `next_epoch`. 0 at the first epoch's end, which includes building the model (and
    its features): the next epoch is no guide to it."""

    def __init__(self) -> None:
        self._ended: float | None = None

    def lap(self) -> float:
        now = time.monotonic()
        last = 0.0 if self._ended is None else now - self._ended
        self._ended = now
        return last


class BudgetStop:
    """An epoch listener (`search.trials.runner.EpochListener`) that stops a running trial at
    its epoch end once `budget.stops_running_trial()`, by raising `OutOfTime`; an engine hands
    it to the runner where no pruning callback makes the check (several objectives), and counts
    `OutOfTime` as pruned (`Engine.is_pruned`)."""

    def __init__(self, budget: Budget, epochs: int | None = None) -> None:
        self.budget = budget
        self.decides = budget.limited  # without a budget a worker never waits for it
        self._last = None if not epochs else int(epochs) - 1  # never stopped: it completes
        self._timer = EpochTimer()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        last = self._timer.lap()
        if epoch != self._last and self.budget.stops_running_trial(last):
            raise OutOfTime(out_of_time(epoch))
