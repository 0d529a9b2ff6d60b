"""The trial the final stage tests and registers.

With a `final.select` rule or several objectives, the champion is the trial the rule picks among
the study's complete trials (read back from MLflow, so both engines are judged by the same
records); otherwise it is the engine's own best, unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from search.final.champion_rule import choose, effective_rule, pareto_front, values_text
from search.trials.objectives import objectives_of
from search.trials.types import Best

if TYPE_CHECKING:  # mlflow loads when a rule reads the trials back
    from search.trials.records import SweepView
    from tracking.mlflow_tracker import SweepTracker


def _rows(cfg: DictConfig, tracker: SweepTracker) -> SweepView:
    """The study's trials as recorded in MLflow (both engines alike)."""
    from search.trials.records import view_of
    from tracking.sweep_records import find_sweep, trial_records

    ref = find_sweep(tracker.tracking_uri, str(cfg.tracking.experiment_name), tracker.parent_id)
    return view_of(ref, trial_records(tracker.tracking_uri, ref))


def within_rule(
    cfg: DictConfig, tracker: SweepTracker, trials: list[Best], chosen: Best
) -> list[Best]:
    """The trials of `trials` the champion rule admits, with `chosen` (its pick) among them:
    the final stage's re-evaluation crowns one of them, so it must never crown a trial the rule
    excludes (a latency over the limit). All of `trials` without a rule. None are left (said)
    when the rule ranks by another metric than train.objective, which the re-evaluation
    measures: its champion is then tested as the rule chose it."""
    rule = effective_rule(cfg)
    if rule is None:
        return trials
    objective = (str(cfg.train.objective), cfg.train.direction == "maximize")
    if (rule.goal.metric, rule.goal.maximize) != objective:
        print(
            f"final: no re-evaluation: the champion rule ranks by {rule.goal.direction} "
            f"{rule.goal.metric}, and re-training with new seeds re-measures "
            f"{cfg.train.objective} only; trial {chosen.number}, the rule's pick, is tested",
            flush=True,
        )
        return []
    admitted = {
        r.run_id for r in _rows(cfg, tracker).rows if r.state == "complete" and rule.admits(r)
    }
    kept = [t for t in trials if t.run_id is not None and t.run_id in admitted]
    return kept if any(t.number == chosen.number for t in kept) else [chosen, *kept]


def champion(cfg: DictConfig, tracker: SweepTracker, study: str, best: Best | None) -> Best | None:
    """The trial to test and register: the rule's pick, or `best` when there is no rule."""
    rule = effective_rule(cfg)
    if rule is None:
        return best
    view = _rows(cfg, tracker)
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


def front_summary(cfg: DictConfig, tracker: SweepTracker, chosen: Best | None) -> list[str]:
    """The closing lines of a multi-objective sweep: its Pareto front (each trial's objective
    values) and the champion rule's choice; none for a single objective."""
    objectives = objectives_of(cfg)
    if len(objectives) < 2:
        return []
    view = _rows(cfg, tracker)
    front = pareto_front(view.rows, objectives)
    directions = ", ".join(f"{o.metric} {o.direction}" for o in objectives)
    lines = [f"Pareto front ({directions}): {len(front)} of {len(view.rows)} trials"]
    lines += [f"  trial {r.trial:>3}  {values_text(r, objectives)}" for r in front]
    rule = effective_rule(cfg)
    picked = next((r for r in view.rows if chosen and r.trial == chosen.number), None)
    if picked is None:
        lines.append("champion: none (no complete trial meets the rule)")
    else:
        how = rule.describe() if rule is not None else "the engine's best"
        lines.append(
            f"champion by the rule ({how}): trial {picked.trial}  {values_text(picked, objectives)}"
        )
    return lines
