"""What a sweep does around its search , called from `search.sweep` by small hooks.

- `check`: objectives and the champion rule are checked with the rest of the config, before any
  training (Keras Tuner with several objectives is refused here).
- `champion`: with a `final.select` rule or several objectives, the champion is the trial the
  rule picks among the study's complete trials (read back from MLflow); otherwise the engine's
  own best, unchanged.
- `report`: the HTML report, written to output_dir/reports/<study>.html and logged on the
  parent run; its time is printed, so what it adds to a sweep is visible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from search.objectives import check_objectives, pruning_note
from search.select import choose, effective_rule, rule_of


def check(cfg: DictConfig) -> None:
    """Fail on bad objectives or a bad champion rule; say when pruning is off."""
    check_objectives(cfg)
    rule_of(cfg)
    note = pruning_note(cfg)
    if note:
        print(note, flush=True)


def champion(cfg: DictConfig, tracker: Any, study: str, best: Any) -> Any:
    """The trial to test and register: the rule's pick, or `best` when there is no rule."""
    rule = effective_rule(cfg)
    if rule is None:
        return best
    from search.runner import Best
    from search.sweep_view import view_of
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


def report(cfg: DictConfig, tracker: Any, study: str) -> Path | None:
    """Write the sweep's HTML report and log it on the parent run; None if it could not be.

    A report that fails must not fail a sweep whose trials are recorded: it says why, and
    `python -m search.report --html` can write it again.
    """
    from search.report import default_report_path, load_view
    from search.sweep_report import write
    from tracking.run_tags import ml_view_url
    from tracking.sweep_records import log_report

    link = ml_view_url("http://127.0.0.1:5000", tracker.experiment_id, tracker.parent_id)
    print(f"this sweep in the MLflow UI (make ui): {link}", flush=True)
    started = time.perf_counter()
    try:
        view = load_view(tracker.tracking_uri, str(cfg.tracking.experiment_name), tracker.parent_id)
        path = default_report_path(view, str(cfg.output_dir))
        write(view, tracker.tracking_uri, path)
        log_report(tracker.tracking_uri, tracker.parent_id, path)
    except Exception as err:  # noqa: BLE001 - reported, the sweep's records stay valid
        print(f"report: not written ({type(err).__name__}: {err})", flush=True)
        return None
    print(f"report: {path} ({time.perf_counter() - started:.1f}s)", flush=True)
    return path
