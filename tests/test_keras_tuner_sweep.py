"""End-to-end `search=keras_tuner` sweeps: real Keras training on real digits, a real MLflow
store, real Keras Tuner projects on disk. Each tuner kind must leave the MLflow layout an Optuna
sweep of the same space leaves, and re-running must continue the project, not restart it."""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
import mlflow
import numpy as np
import pytest
from conftest import compose_config
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from test_budget import jump_the_clock
from test_sweep import runs_of

from experiments.errors import NoModel, UserInputError
from search.cli.exit_codes import exit_codes
from search.config.study import study_name
from search.engines import make_engine
from search.engines.keras_tuner import KerasTunerEngine
from search.space.spec import flatten_space, parse_space
from search.sweep import prepare, sweep

NO_MODELS = "tracking.log_models=false"


@pytest.fixture(scope="module")
def optuna_child(tmp_path_factory) -> dict:
    """Param keys, tag keys and metric names of one child of an Optuna sweep of the same space."""
    cfg = compose_config(["search.n_trials=1", NO_MODELS], tmp_path_factory.mktemp("optuna"))
    sweep(cfg)
    (child,) = runs_of(cfg, "trial")
    return {
        "params": set(child.data.params),
        "tags": set(child.data.tags),
        "metrics": set(child.data.metrics),
    }


def kt_config(make_config, tuner: str, *overrides: str):
    return make_config("search=keras_tuner", f"search.tuner={tuner}", *overrides)


def check_layout(cfg, summary, tuner: str, n_children: int, optuna_child: dict) -> list:
    """One FINISHED parent, `n_children` FINISHED children with Optuna's keys; returns them."""
    client = MlflowClient(cfg.tracking.tracking_uri)
    (parent,) = runs_of(cfg, "sweep")
    children = runs_of(cfg, "trial")
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert (tags["sweeplab.engine"], tags["sweeplab.tuner"]) == ("keras_tuner", tuner)
    assert tags["sweeplab.sampler"] == tuner and tags["sweeplab.study"] == summary.study_name
    assert {"config.yaml", "space.yaml", "best_params.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(summary.best_value)
    assert len(children) == n_children
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["sweeplab.engine"] == "keras_tuner"
        assert child.data.tags["sweeplab.tuner"] == tuner
        assert set(child.data.params) == optuna_child["params"] == set(flatten_space(cfg.space))
        assert optuna_child["metrics"] <= set(child.data.metrics)
        assert optuna_child["tags"] - {
            "sweeplab.optuna_study",
            "sweeplab.optuna_trial",
            "mlflow.runName",
        } <= set(child.data.tags)
        epochs = int(child.data.metrics["epochs"])
        curve = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == list(range(epochs))
        assert curve[-1].value == pytest.approx(child.data.metrics["final_val_accuracy"])
    best = max(children, key=lambda c: c.data.metrics["final_val_accuracy"])
    assert summary.best_value == pytest.approx(best.data.metrics["final_val_accuracy"])
    assert summary.best_run_id == best.info.run_id
    assert summary.finished_trials == n_children
    return children


def test_random_tuner_records_what_optuna_records(make_config, optuna_child) -> None:
    cfg = kt_config(make_config, "random", "search.n_trials=2")
    summary = sweep(cfg)
    children = check_layout(cfg, summary, "random", 2, optuna_child)
    client = MlflowClient(cfg.tracking.tracking_uri)
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 2  # train.epochs
    # The best trial's model is logged and loads back as a 10-class classifier of raw pixels.
    best = next(c for c in children if c.info.run_id == summary.best_run_id)
    model = mlflow.keras.load_model(best.data.tags["sweeplab.model_uri"])
    assert model.predict(np.zeros((3, 8, 8, 1), "float32"), verbose=0).shape == (3, 10)
    assert len({tuple(sorted(c.data.params.items())) for c in children}) == 2


def test_bayesian_tuner_records_what_optuna_records(make_config, optuna_child) -> None:
    # One random point, then the Gaussian process proposes the second trial.
    cfg = kt_config(
        make_config,
        "bayesian",
        "search.n_trials=2",
        "search.bayesian.num_initial_points=1",
        NO_MODELS,
    )
    check_layout(cfg, sweep(cfg), "bayesian", 2, optuna_child)


def test_hyperband_rounds_are_tagged_and_train_their_epochs(make_config, optuna_child) -> None:
    # max_epochs 2, factor 2: bracket 1 runs two 1-epoch trials, then promotes the better one
    # to round 1 with 2 epochs.
    cfg = kt_config(
        make_config,
        "hyperband",
        "search.n_trials=3",
        "search.hyperband.max_epochs=2",
        "search.hyperband.factor=2",
        NO_MODELS,
    )
    children = check_layout(cfg, sweep(cfg), "hyperband", 3, optuna_child)
    by_round = sorted(children, key=lambda c: int(c.data.tags["sweeplab.trial_number"]))
    rounds = [
        (c.data.tags["sweeplab.hyperband_bracket"], c.data.tags["sweeplab.hyperband_round"])
        for c in by_round
    ]
    assert rounds == [("1", "0"), ("1", "0"), ("1", "1")]
    assert [int(c.data.metrics["epochs"]) for c in by_round] == [1, 1, 2]
    assert [c.data.tags["sweeplab.hyperband_epochs"] for c in by_round] == ["1", "1", "2"]
    promoted = by_round[2]
    source = promoted.data.tags["sweeplab.hyperband_promoted_from"]
    (parent_trial,) = [
        c for c in by_round[:2] if c.data.tags["sweeplab.keras_tuner_trial_id"] == source
    ]
    assert promoted.data.params == parent_trial.data.params
    assert parent_trial.data.metrics["final_val_accuracy"] == max(
        c.data.metrics["final_val_accuracy"] for c in by_round[:2]
    )
    # The trial config records the round's epochs; the params do not.
    client = MlflowClient(cfg.tracking.tracking_uri)
    trial_cfg = Path(
        client.download_artifacts(promoted.info.run_id, "trial_config.yaml")
    ).read_text()
    assert "epochs: 2" in trial_cfg and not any(k.startswith("tuner") for k in promoted.data.params)


@pytest.mark.parametrize(
    ("tuner", "extra"),
    [
        ("random", []),
        # Resuming Hyperband must keep the bracket: the third trial is the round-1 promotion.
        pytest.param(
            "hyperband",
            ["search.hyperband.max_epochs=2", "search.hyperband.factor=2"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_rerun_continues_the_keras_tuner_project(make_config, capsys, tuner, extra) -> None:
    first = sweep(kt_config(make_config, tuner, "search.n_trials=2", NO_MODELS, *extra))
    cfg = kt_config(make_config, tuner, "search.n_trials=3", NO_MODELS, *extra)
    second = sweep(cfg)
    assert second.study_name == first.study_name and second.finished_trials == 3
    children = runs_of(cfg, "trial")
    assert sorted(int(c.data.tags["sweeplab.trial_number"]) for c in children) == [0, 1, 2]
    new = [c for c in children if c.data.tags["mlflow.parentRunId"] == second.parent_run_id]
    assert len(new) == 1 and new[0].info.status == "FINISHED"
    if tuner == "hyperband":
        assert new[0].data.tags["sweeplab.hyperband_round"] == "1"
    projects = list((Path(cfg.output_dir) / "keras_tuner").iterdir())
    assert len(projects) == 1

    capsys.readouterr()
    third = sweep(cfg)  # complete: trains nothing, says so
    assert "study is complete" in capsys.readouterr().out
    assert third.parent_run_id is None and third.finished_trials == 3
    assert len(runs_of(cfg)) == 5
    assert all(r.info.status == "FINISHED" for r in runs_of(cfg))


def diverging(cfg):
    """Every trial trains at a learning rate whose loss becomes NaN: each one fails.

    (A value no trial can use, such as model.conv_blocks=0, is refused before any training:
    tests/test_bad_input.py. A NaN loss depends on the sampled values, so it is a trial's
    failure and counts.)"""
    with open_dict(cfg):
        cfg.space.optimizer.learning_rate = {"type": "categorical", "choices": [1e9]}
    return cfg


@pytest.mark.parametrize("engine", ["keras_tuner", "optuna"])
def test_failed_trials_stop_the_search_the_same_way_in_both_engines(
    make_config, capsys, engine
) -> None:
    overrides = ("search.n_trials=5", "search.max_consecutive_failures=2", NO_MODELS)
    if engine == "keras_tuner":
        cfg = diverging(kt_config(make_config, "random", *overrides))
    else:
        cfg = diverging(make_config("search.pruner=none", *overrides))
    with pytest.raises(SystemExit) as stopped, exit_codes():  # what `python -m search.run` does
        sweep(cfg)
    assert stopped.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith(
        "sweeplab: error: 2 trials failed in a row (search.max_consecutive_failures=2); "
        "the last one: loss became nan"
    ), err
    assert "Traceback" not in err
    runs = runs_of(cfg)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = runs_of(cfg, "trial")
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["sweeplab.state"] == "failed"
        assert child.data.tags["sweeplab.failure_reason"].startswith("loss became nan")
    assert runs_of(cfg, "sweep")[0].info.status == "FAILED"
    # The study was saved with both trials failed: reloading finds them, and genuine failures
    # count as finished in both engines (the protocol's members and signatures, and the rest
    # of the contract: tests/test_engine_contract.py).
    cfg = prepare(cfg)
    reloaded = make_engine(cfg, parse_space(cfg.space, cfg), study_name(cfg))
    assert reloaded.finished() == 2
    if engine == "keras_tuner":
        assert isinstance(reloaded, KerasTunerEngine)
        statuses = [t.status for t in reloaded.oracle.trials.values()]
        assert statuses == [kt.engine.trial.TrialStatus.FAILED] * 2


def test_keras_tuner_accepts_null_max_consecutive_failures(make_config) -> None:
    cfg = diverging(
        kt_config(
            make_config,
            "random",
            "search.n_trials=3",
            "search.max_consecutive_failures=null",  # never stop, as with Optuna
            NO_MODELS,
        )
    )
    with pytest.raises(NoModel, match="has no model: none of its 3 counted trial"):
        sweep(cfg)  # a sweep without a model does not succeed (exit status 3)
    children = runs_of(cfg, "trial")
    assert [c.info.status for c in children] == ["FAILED"] * 3


def test_timeout_stops_between_trials(make_config, capsys, monkeypatch) -> None:
    """The budget runs out during trial 0 (a budget too small for it is refused before it: the
    clock jumps at the check before trial 1): no trial 1 starts."""
    jump_the_clock(monkeypatch, at_reading=2)  # after trial 0's plan line, before trial 1
    cfg = kt_config(make_config, "random", "search.n_trials=5", "search.timeout=600", NO_MODELS)
    summary = sweep(cfg)
    assert summary.finished_trials == 1 and len(runs_of(cfg, "trial")) == 1
    assert (
        "search.timeout: the time left is the final stage's; no new trial"
        in capsys.readouterr().out
    )


@pytest.mark.slow
def test_project_with_another_space_is_not_continued(make_config) -> None:
    sweep(
        kt_config(make_config, "random", "search.n_trials=1", "search.project_name=mine", NO_MODELS)
    )
    cfg = kt_config(
        make_config,
        "random",
        "search.n_trials=2",
        "search.project_name=mine",
        "+space.model.kernel_size={type:int,low:3,high:5}",
        NO_MODELS,
    )
    with pytest.raises(UserInputError, match="another search space"):
        sweep(cfg)
    assert len(runs_of(cfg, "trial")) == 1


@pytest.mark.parametrize(
    ("override", "mention"),
    [
        ("search.tuner=grid", "search.tuner='grid'"),
        ("search.hyperband.factor=1", "search.hyperband.factor=1"),
        ("search.max_consecutive_failures=0", "search.max_consecutive_failures=0"),
        ("search.bayesian.beta=-1", "search.bayesian.beta=-1"),
    ],
)
def test_bad_tuner_settings_fail_before_anything_is_written(make_config, override, mention) -> None:
    tuner = "hyperband" if "hyperband" in override else "bayesian"
    cfg = kt_config(make_config, tuner, override)
    with pytest.raises(UserInputError, match=mention.replace(".", r"\.")):
        sweep(cfg)
    assert not (Path(cfg.output_dir) / "mlflow.db").exists()
    assert not (Path(cfg.output_dir) / "keras_tuner").exists()
