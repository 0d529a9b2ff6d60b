"""The trial the final stage tests and registers.

With a `final.select` rule or several objectives, the champion is the trial the rule picks among
the study's complete trials (read back from MLflow, so both engines are judged by the same
records); otherwise it is the engine's own best, unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from search.final.champion_rule import choose, effective_rule
from search.trials.types import Best

if TYPE_CHECKING:  # mlflow loads when a rule reads the trials back
    from tracking.mlflow_tracker import SweepTracker


def champion(cfg: DictConfig, tracker: SweepTracker, study: str, best: Best | None) -> Best | None:
    """The trial to test and register: the rule's pick, or `best` when there is no rule."""
    rule = effective_rule(cfg)
    if rule is None:
        return best
    from search.trials.records import view_of
    from tracking.sweep_records import find_sweep, trial_records

    ref = find_sweep(tracker.tracking_uri, str(cfg.tracking.experiment_name), tracker.parent_id)
    view = view_of(ref, trial_records(tracker.tracking_uri, ref))
    row = choose(view.rows, rule, view.objectives)
    if row is None:
        print(
            f"final.select: no complete trial meets the rule ({rule.describe()}); no champion "
            "is tested or registered. Loosen the limits or run more trials.",
            flush=True,
        )
        return None
    value = row.values.get(str(cfg.train.objective))
    if value is None:
        value = row.metrics.get(f"final_{cfg.train.objective}", float("nan"))
    print(f"champion by rule ({rule.describe()}): trial {row.trial}", flush=True)
    return Best(float(value), row.trial, dict(row.params), row.run_id)
