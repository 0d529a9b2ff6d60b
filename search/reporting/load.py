"""Read a recorded sweep back for the leaderboard and the report: its MLflow records and, for
an Optuna sweep, the states and values stored in the study itself (the engine's truth)."""

from __future__ import annotations

from pathlib import Path

from experiments.outcome import BUDGET_STOPPED
from search.trials.records import SweepView, view_of


def tracking_uri_of(output_dir: str, tracking_uri: str | None) -> str:
    """The store to read: --tracking-uri, else the SQLite store a sweep writes in output_dir."""
    if tracking_uri:
        return tracking_uri
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


def load_view(tracking_uri: str, experiment: str, which: str | None) -> SweepView:
    """The sweep `which` names, with an Optuna study's own states and values where it has one."""
    from tracking.sweep_records import find_sweep, trial_records

    ref = find_sweep(tracking_uri, experiment, which)
    view = view_of(ref, trial_records(tracking_uri, ref))
    if view.engine == "optuna":
        from search.reporting.figures import load_study, study_truth

        study = view.engine_record = load_study(str(view.cfg.search.storage), ref.study)
        truth = study_truth(study) if study is not None else {}
        for row in view.rows:
            if row.trial in truth:
                state, values = truth[row.trial]
                if not (state == "pruned" and row.state == BUDGET_STOPPED):  # said by MLflow
                    row.state = state
                if values is not None and state == "complete":
                    row.values = {o.metric: v for o, v in zip(view.objectives, values, strict=True)}
    return view


def default_report_path(view: SweepView, output_dir: str | Path) -> Path:
    """output_dir/reports/<study>.html: beside the store read (which may have moved)."""
    return Path(output_dir).expanduser().resolve() / "reports" / f"{view.ref.study}.html"
