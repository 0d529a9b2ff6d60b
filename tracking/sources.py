"""Read back what a trial run logged, so that `search.rerun` can train the same trial again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from experiments.errors import UserInputError
from tracking.mlflow_tracker import TAG, SweepTracker


@dataclass
class TrialSource:
    """A logged trial: its resolved config (YAML), tags and final metrics."""

    run_id: str
    run_name: str
    config_yaml: str
    tags: dict[str, str]
    metrics: dict[str, float]


def trial_source(tracker: SweepTracker, run_id: str) -> TrialSource:
    """The trial run `run_id` of the tracker's store, with its `trial_config.yaml`."""
    client = tracker.client
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise UserInputError(
            f"run {run_id!r} is not in the MLflow store {tracker.tracking_uri} ({err.message}). "
            "Give the id of a trial run (MLflow UI: a child run of a sweep) and the store it "
            "lives in (--output-dir or --tracking-uri)."
        ) from err
    if run.data.tags.get(TAG + "kind") != "trial":
        raise UserInputError(
            f"run {run_id!r} is a {run.data.tags.get(TAG + 'kind', 'non-sweeplab')} run, not a "
            "trial; give the id of a trial run (a child run of a sweep)."
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        path = client.download_artifacts(run_id, "trial_config.yaml")
    except (MlflowException, OSError) as err:
        raise UserInputError(
            f"run {run_id!r} has no readable trial_config.yaml artifact ({err}); only runs "
            "logged by sweeplab with their artifacts can be re-run."
        ) from err
    return TrialSource(
        run_id,
        run.info.run_name or run_id,
        Path(path).read_text(),
        dict(run.data.tags),
        dict(run.data.metrics),
    )
