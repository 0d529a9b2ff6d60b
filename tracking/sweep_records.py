"""Read a finished sweep back from MLflow as plain data, for the leaderboard and the report.

The report code outside `tracking/` never sees an MLflow object: it gets `SweepRef` (the parent
run that identifies a sweep and the config it ran with) and `TrialRecord`s (one per trial run,
across every invocation that continued the same study), both plain dataclasses. Both engines
record trials the same way (`tracking.mlflow_tracker`), so this works for Optuna and Keras Tuner.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.outcome import state_label

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
from mlflow.tracking import MlflowClient

from experiments.errors import UserInputError
from tracking.filters import quoted
from tracking.relocate import relocate

# The tag prefix of `tracking.mlflow_tracker`, repeated so that reading a store does not import
# Keras and TensorFlow (mlflow_tracker holds the Keras callback): the report starts in seconds.
TAG = "sweeplab."

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class SweepRef:
    """The parent run of one sweep invocation: what the report is about."""

    run_id: str
    study: str
    engine: str
    config_yaml: str  # the resolved config the sweep ran with (its config.yaml artifact)
    tags: dict[str, str]
    experiment_id: str
    metrics: dict[str, float] = field(default_factory=dict)  # the final stage's test_* among them


@dataclass
class TrialRecord:
    """One trial as MLflow recorded it (params are the strings MLflow stores)."""

    number: int
    run_id: str
    run_name: str
    state: str  # complete | pruned | failed | interrupted | running
    params: dict[str, str]
    metrics: dict[str, float]
    seconds: float | None
    epochs: int | None
    reason: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def client_for(tracking_uri: str) -> MlflowClient:
    """A client on the store; MLflow's own INFO lines stay off the report's output."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri)


def find_sweep(tracking_uri: str, experiment_name: str, which: str | None) -> SweepRef:
    """The parent run named by `which`: a parent run id, a study name, or None for the latest.

    A study continued by several invocations has several parent runs; the latest one is taken.
    """
    _check_store(tracking_uri)
    relocate(tracking_uri)  # a moved output_dir: its artifacts are found at the new place
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise UserInputError(
            f"no MLflow experiment {experiment_name!r} in {tracking_uri}: run a sweep first "
            "(make run), or name the store with --output-dir / --tracking-uri."
        )
    ids = [experiment.experiment_id]
    if which and _RUN_ID.match(which):
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            run = client.get_run(which)
            if run.data.tags.get(TAG + "kind") == "sweep":
                return _ref(client, run)
    query = f"tags.`{TAG}kind` = 'sweep'"
    if which:
        try:
            query += f" and tags.`{TAG}study` = {quoted(which)}"
        except ValueError as err:  # no study can have this name: sweeps refuse it
            raise UserInputError(f"no sweep {which!r}: {err}.") from err
    runs = client.search_runs(ids, query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        studies = sorted(
            {
                r.data.tags.get(TAG + "study", "?")
                for r in client.search_runs(ids, f"tags.`{TAG}kind` = 'sweep'", max_results=200)
            }
        )
        known = ", ".join(studies) or "none yet"
        raise UserInputError(
            f"no sweep {which!r} in {tracking_uri} (experiment {experiment_name!r}); give a study "
            f"name or a sweep's parent run id. Studies recorded: {known}."
            if which
            else f"no sweep recorded in {tracking_uri} (experiment {experiment_name!r}): run one "
            "first (make run)."
        )
    return _ref(client, runs[0])


def _check_store(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserInputError(
                f"there is no MLflow store at {path}: run a sweep first (make run), or point "
                "--output-dir at the folder a sweep wrote (output_dir=...)."
            )


def _ref(client: MlflowClient, run: Any) -> SweepRef:
    tags = dict(run.data.tags)
    try:
        config = client.download_artifacts(run.info.run_id, "config.yaml")
        text = Path(config).read_text()
    except (mlflow.exceptions.MlflowException, OSError) as err:
        raise UserInputError(
            f"the sweep run {run.info.run_id} has no config.yaml artifact ({err}); it was not "
            "written by `python -m search.run`."
        ) from err
    return SweepRef(
        run.info.run_id,
        tags.get(TAG + "study", ""),
        tags.get(TAG + "engine", ""),
        text,
        tags,
        run.info.experiment_id,
        dict(run.data.metrics),
    )


def trial_records(tracking_uri: str, sweep: SweepRef) -> list[TrialRecord]:
    """Every trial run of the sweep's study (all invocations), one per trial number.

    When a number has several runs (a re-run after a kill), the latest run wins.
    """
    client = client_for(tracking_uri)
    query = f"tags.`{TAG}kind` = 'trial' and tags.`{TAG}study` = {quoted(sweep.study)}"
    runs = client.search_runs(
        [sweep.experiment_id], query, order_by=["attributes.start_time ASC"], max_results=50000
    )
    by_number: dict[int, TrialRecord] = {}
    for run in runs:
        tags = dict(run.data.tags)
        number = int(tags.get(TAG + "trial_number", -1))
        metrics = dict(run.data.metrics)
        state = state_label(
            tags.get(TAG + "state")
            or ("running" if run.info.status == "RUNNING" else "interrupted"),
            tags.get(TAG + "stopped_by"),
        )
        # Training time, for every trial (a pruned one logs it until its stop); a failed or
        # interrupted trial has none: not its MLflow wall time, which counts set-up and records.
        seconds = metrics.get("train_seconds")
        epochs = metrics.get("epochs") or tags.get(TAG + "epochs_trained")
        by_number[number] = TrialRecord(
            number=number,
            run_id=run.info.run_id,
            run_name=run.info.run_name or "",
            state=state,
            params=dict(run.data.params),
            metrics=metrics,
            seconds=None if seconds is None else float(seconds),
            epochs=None if epochs is None else int(float(epochs)),
            reason=tags.get(TAG + "failure_reason", ""),
            tags=tags,
        )
    return [by_number[n] for n in sorted(by_number)]


def metric_curves(tracking_uri: str, run_ids: list[str], metric: str) -> dict[str, list[float]]:
    """Each run's per-epoch history of `metric` (step = epoch), in step order."""
    client = client_for(tracking_uri)
    curves: dict[str, list[float]] = {}
    for run_id in run_ids:
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        curves[run_id] = [m.value for m in history]
    return curves


def log_report(tracking_uri: str, run_id: str, path: Path) -> None:
    """Attach the report to the sweep's parent run (`report/<name>`) and say so in its description."""
    client = client_for(tracking_uri)
    with contextlib.redirect_stderr(io.StringIO()):
        client.log_artifact(run_id, str(path), "report")
    tags = client.get_run(run_id).data.tags
    study = tags.get(TAG + "study", "")
    card = tags.get(TAG + "final.card")  # the shipped-model card, first where a user looks
    client.set_tag(
        run_id,
        "mlflow.note.content",
        (f"{card}\n\n" if card else "")
        + f"Sweep of study {study}. The report (leaderboard, Optuna's plots, the top trials' "
        f"curves, warnings): Artifacts > report/{path.name}, or {path}. In a terminal: "
        f"python -m search.report {study}",
    )
