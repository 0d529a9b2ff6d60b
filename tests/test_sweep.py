"""End-to-end sweeps: real Keras training on real digits, a real MLflow store and Optuna storage."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from search.config.study import study_name
from search.space.spec import flatten_space
from search.sweep import prepare, sweep
from tests.conftest import compose_config
from tracking.mlflow_tracker import TrialRun


def runs_of(cfg, kind: str | None = None) -> list:
    client = MlflowClient(cfg.tracking.tracking_uri.replace("${output_dir}", cfg.output_dir))
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if kind is None or r.data.tags.get("sweeplab.kind") == kind]


@pytest.fixture
def capture_predictions(monkeypatch):
    """Predictions of each model just before it is logged, keyed by run id."""
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    original = TrialRun.log_model

    def log_model(self, model, sample):
        seen[self.run_id] = (sample, model.predict(sample, verbose=0))
        return original(self, model, sample)

    monkeypatch.setattr(TrialRun, "log_model", log_model)
    return seen


def test_two_trial_sweep_end_to_end(make_config, capture_predictions) -> None:
    cfg = make_config("search.n_trials=2", "tracking.log_models=all")
    summary = sweep(cfg)

    parents, children = runs_of(cfg, "sweep"), runs_of(cfg, "trial")
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweeplab.engine"] == "optuna"
    assert parent.data.tags["sweeplab.sampler"] == "tpe"
    assert parent.data.tags["sweeplab.study"] == summary.study_name
    assert parent.data.tags["sweeplab.git_commit"]
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(summary.best_value)
    client = MlflowClient(cfg.tracking.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "space.yaml", "best_params.json"} <= artifacts

    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert set(child.data.params) == set(flatten_space(cfg.space))
        curve = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == [0, 1]  # one point per epoch, step = epoch
        for name in ("loss", "accuracy", "val_loss"):
            assert len(client.get_metric_history(child.info.run_id, name)) == 2
        assert "final_val_accuracy" in child.data.metrics
        trial_cfg = client.download_artifacts(child.info.run_id, "trial_config.yaml")
        assert "learning_rate" in Path(trial_cfg).read_text()
        # The logged model loads back and predicts exactly what the trained model predicted.
        sample, expected = capture_predictions[child.info.run_id]
        loaded = mlflow.keras.load_model(child.data.tags["sweeplab.model_uri"])
        np.testing.assert_allclose(
            loaded.predict(sample, verbose=0), expected, rtol=1e-5, atol=1e-6
        )

    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    assert summary.best_value == pytest.approx(study.best_value)
    assert 0.3 < summary.best_value <= 1.0  # 2 epochs on real digits learn well above chance (0.1)


def test_n_trials_is_the_study_total_across_invocations(make_config, capsys) -> None:
    first = sweep(make_config("search.n_trials=2", "tracking.log_models=false"))
    cfg = make_config("search.n_trials=4", "tracking.log_models=false")
    second = sweep(cfg)
    assert second.study_name == first.study_name
    assert second.parent_run_id != first.parent_run_id
    assert second.finished_trials == 4
    study = optuna.load_study(study_name=first.study_name, storage=cfg.search.storage)
    assert len(study.trials) == 4
    assert len(runs_of(cfg, "sweep")) == 2 and len(runs_of(cfg, "trial")) == 4

    capsys.readouterr()
    third = sweep(cfg)  # already complete: trains nothing, says so
    assert "study is complete" in capsys.readouterr().out
    assert third.parent_run_id is None and third.finished_trials == 4
    assert len(runs_of(cfg)) == 6
    assert all(r.info.status == "FINISHED" for r in runs_of(cfg))


def test_default_study_name_follows_what_defines_a_trial(make_config) -> None:
    base = study_name(make_config())
    assert base.startswith("default-")
    assert study_name(make_config("search.n_trials=50", "search.timeout=60")) == base
    assert study_name(make_config("+space.model.kernel_size={type:int,low:3,high:5}")) != base
    assert study_name(make_config("model.kernel_size=5")) != base
    assert study_name(make_config("seed=7")) != base
    assert study_name(make_config("+sweep=cnn")).startswith("cnn-")
    assert study_name(make_config("search.study_name=mine", "seed=7")) == "mine"


def test_space_edited_on_the_command_line_reaches_the_trials(make_config) -> None:
    """A changed bound, an added entry and a removed one: what the trials sample and train."""
    cfg = make_config(
        "search.n_trials=2",
        "tracking.log_models=false",
        "final.enabled=false",
        "space.optimizer.learning_rate.low=0.004",
        "space.optimizer.learning_rate.high=0.005",
        "+space.model.kernel_size={type:categorical,choices:[5]}",
        "~space.model.dropout",
    )
    sweep(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    for child in runs_of(cfg, "trial"):
        params = child.data.params
        assert set(params) == {
            "optimizer.learning_rate",
            "model.conv_blocks",
            "model.filters",
            "model.dense_units",
            "model.kernel_size",
        }
        assert 0.004 <= float(params["optimizer.learning_rate"]) <= 0.005
        trial_cfg = client.download_artifacts(child.info.run_id, "trial_config.yaml")
        trained = OmegaConf.load(trial_cfg)
        assert trained.model.kernel_size == 5 and trained.model.dropout == 0.25  # the default
        assert trained.optimizer.learning_rate == float(params["optimizer.learning_rate"])


def test_the_ui_command_opens_this_sweeps_store_as_make_ui_does(tmp_path) -> None:
    """runs/ -> `make ui` (the README's line); another output_dir of the project -> `make ui
    OUT=...`; anywhere else the full line, with what `make ui` sets (one server process)."""
    from search.config.stores import PROJECT, ui_command

    def command(output_dir: Path) -> str:
        return ui_command(prepare(compose_config([], output_dir)))

    assert command(PROJECT / "runs") == "make ui"
    assert command(PROJECT / "runs_mo") == "make ui OUT=runs_mo"
    elsewhere = command(tmp_path / "sweeps")
    store = (tmp_path / "sweeps").resolve()
    assert elsewhere == (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
        f"--backend-store-uri sqlite:///{store / 'mlflow.db'} "
        f"--default-artifact-root {store / 'mlartifacts'} --host 127.0.0.1 --workers 1"
    )
