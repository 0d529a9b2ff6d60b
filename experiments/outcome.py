"""How a trial ended, in one enum that every engine, the runner and the tracker share.

In the spirit of Optuna's `TrialState`: the engines map their own states onto it (Optuna's FAIL
splits into FAILED and INTERRUPTED by a user attr, Keras Tuner's statuses map one to one), the
runner decides it, and `tracking/` records its value as the `sweeplab.state` tag. It lives in a
leaf module of `experiments/` so that `search/` and `tracking/` can both import it without
importing each other or an engine.
"""

from __future__ import annotations

from enum import StrEnum


class TrialOutcome(StrEnum):
    """The end of one trial; the value is the `sweeplab.state` tag of its MLflow run."""

    COMPLETE = "complete"  # trained to the end, objective recorded
    PRUNED = "pruned"  # stopped early by the pruner: a deliberately short, valid result
    FAILED = "failed"  # NaN loss or an exception: a genuine result (counts toward n_trials)
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or a dead process: redone on resume

    @property
    def counts_as_finished(self) -> bool:
        """Whether the trial counts toward `search.n_trials` (all but an interrupted one)."""
        return self is not TrialOutcome.INTERRUPTED


# The one set of names a person reads for how a trial ended: the terminal line, the leaderboard,
# the HTML report and the MLflow run (name, description) all use these. A pruned trial is split
# by who stopped it (tag sweeplab.stopped_by, Optuna user attr `stopped_by`): the engine's pruner,
# or the budget (search.timeout: the time left was the final stage's).
BUDGET_STOPPED = "stopped by the budget"
STOPPED_EARLY = ("pruned", BUDGET_STOPPED)  # trained fewer epochs than planned, on purpose


def state_label(state: str, stopped_by: str | None = None) -> str:
    """The name of a trial's end: complete, pruned, stopped by the budget, failed, interrupted
    (or running); `state` is a `TrialOutcome` value, `stopped_by` pruner | budget."""
    if state == TrialOutcome.PRUNED and stopped_by == "budget":
        return BUDGET_STOPPED
    return str(state)


def stopped_words(stopped_by: str | None, epochs_trained: int, epochs_planned: int | None) -> str:
    """How a trial stopped early, epochs counted from 1 for people: "pruned after epoch 2 of 10"
    or "stopped by the budget (search.timeout) after epoch 2 of 10"."""
    of = f" of {epochs_planned}" if epochs_planned else ""
    who = f"{BUDGET_STOPPED} (search.timeout)" if stopped_by == "budget" else "pruned"
    return f"{who} after epoch {epochs_trained}{of}"
