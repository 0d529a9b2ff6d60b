"""A moved output folder keeps working: artifacts, logged models, the report and a new sweep."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from search.sweep import sweep
from tests.conftest import compose_config, run_cli

ONE_TRIAL = ["search.n_trials=1", "final.enabled=false", "train.epochs=1"]


def test_moved_output_dir_finds_its_artifacts(tmp_path) -> None:
    before = tmp_path / "before" / "runs"
    summary = sweep(compose_config(ONE_TRIAL, before))
    after = tmp_path / "after" / "runs"
    after.parent.mkdir()
    shutil.move(before, after)

    done = run_cli("search.report", "--output-dir", str(after), "--html")
    assert done.returncode == 0, done.stderr
    assert (after / "reports" / f"{summary.study_name}.html").is_file()
    assert not before.exists()  # nothing written at the old place

    client = MlflowClient(f"sqlite:///{after}/mlflow.db")
    config = client.download_artifacts(summary.parent_run_id, "config.yaml", str(tmp_path))
    assert "sweep_name" in Path(config).read_text()
    trial = client.get_run(summary.best_run_id)
    assert trial.info.artifact_uri.startswith((after / "mlartifacts").as_uri())
    mlflow.set_tracking_uri(f"sqlite:///{after}/mlflow.db")
    model = mlflow.keras.load_model(trial.data.tags["sweeplab.model_uri"])
    assert model.count_params() == trial.data.metrics["model_params"]

    # A sweep continued at the new place writes its artifacts there.
    more = sweep(compose_config([*ONE_TRIAL[1:], "search.n_trials=2"], after))
    assert more.finished_trials == 2 and not before.exists()
    assert client.get_run(more.parent_run_id).info.artifact_uri.startswith(after.as_uri())
