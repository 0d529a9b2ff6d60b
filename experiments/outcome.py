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
