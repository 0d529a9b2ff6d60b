"""Pruning and failures in real sweeps: a hopeless trial is pruned early, NaN and raising trials
are recorded as failed (Optuna state, MLflow status and tags) and the sweep goes on."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import WORKERS
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from experiments.errors import TooManyFailures, UserInputError
from search.config.study import study_name
from search.engines.optuna.engine import MonitorMissing, ObjectivePruning
from search.sweep import prepare, sweep

GOOD = {
    "optimizer.learning_rate": 0.01,
    "model.conv_blocks": 1,
    "model.filters": 16,
    "model.dropout": 0.0,
    "model.dense_units": 64,
}


def queue(cfg, *trials: dict) -> None:
    """Put these parameter sets first in the sweep's study (the sweep then loads it)."""
    cfg = prepare(cfg)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name(cfg),
        storage=cfg.search.storage,
        direction=cfg.train.direction,
        load_if_exists=True,
    )
    for params in trials:
        study.enqueue_trial(params)


def trial_runs(cfg) -> dict[int, object]:
    """Trial number -> its MLflow run."""
    client = MlflowClient(prepare(cfg).tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return {
        int(r.data.tags["sweeplab.trial_number"]): r
        for r in runs
        if r.data.tags.get("sweeplab.kind") == "trial"
    }


# Both ways a trial trains: in the sweep process and in a worker process, where each epoch's
# verdict (go on, or pruned) and the failure's kind travel over the worker's pipe.
IN_PROCESS_AND_WORKER = pytest.mark.parametrize("where", ["search.workers=0", WORKERS])


@IN_PROCESS_AND_WORKER
def test_median_pruner_stops_a_hopeless_trial_early(make_config, where) -> None:
    cfg = make_config(
        where,
        "search.n_trials=4",
        "train.epochs=3",
        "search.pruner=median",
        "search.pruners.median.n_startup_trials=3",
        "search.pruners.median.n_warmup_steps=0",
        "+space.optimizer.learning_rate={type:float,low:1e-8,high:0.01,log:true}",
        "tracking.log_models=false",
    )
    # Three trials that learn, then one whose learning rate cannot learn in 3 epochs.
    queue(cfg, GOOD, GOOD, GOOD, {**GOOD, "optimizer.learning_rate": 1e-8})
    summary = sweep(cfg)

    study = optuna.load_study(study_name=summary.study_name, storage=prepare(cfg).search.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert summary.finished_trials == 4
    runs = trial_runs(cfg)
    client = MlflowClient(prepare(cfg).tracking.tracking_uri)
    for number in range(3):
        assert len(client.get_metric_history(runs[number].info.run_id, "val_accuracy")) == 3
    pruned = runs[3]
    assert pruned.info.status == "KILLED"  # stopped before its last epoch: not green FINISHED
    assert pruned.data.tags["sweeplab.state"] == "pruned"
    assert pruned.data.tags["sweeplab.stopped_by"] == "pruner"
    assert pruned.data.tags["sweeplab.pruned_at_epoch"] == "0"  # MLflow's 0-based step axis
    assert pruned.data.tags["mlflow.runName"] == "trial-3 (pruned)"
    assert "Pruned after epoch 1 of 3" in pruned.data.tags["mlflow.note.content"]
    assert pruned.data.metrics["train_seconds"] > 0  # training time, as a complete trial's
    assert study.trials[3].user_attrs["stopped_by"] == "pruner"
    curve = client.get_metric_history(pruned.info.run_id, "val_accuracy")
    assert [m.step for m in curve] == [0]  # stopped after its first epoch of 3, curve kept
    assert study.trials[3].intermediate_values[0] < study.trials[0].intermediate_values[0]
    assert study.trials[3].user_attrs["mlflow_run_id"] == pruned.info.run_id


@IN_PROCESS_AND_WORKER
def test_nan_and_raising_trials_are_failed_and_the_sweep_completes(make_config, where) -> None:
    cfg = make_config(
        where,
        "search.n_trials=3",
        "search.pruner=none",
        "+space.optimizer.learning_rate={type:float,low:1e-4,high:1e9,log:true}",
        "+space.model.dense_units={type:categorical,choices:[0,16]}",
        "tracking.log_models=false",
    )
    queue(
        cfg,
        {**GOOD, "optimizer.learning_rate": 1e9, "model.dense_units": 16},  # loss becomes NaN
        {**GOOD, "model.dense_units": 0},  # Dense raises ValueError
        {**GOOD, "model.dense_units": 16},
    )
    summary = sweep(cfg)

    study = optuna.load_study(study_name=summary.study_name, storage=prepare(cfg).search.storage)
    nan, raising, good = study.trials
    assert [t.state for t in study.trials] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert "loss became nan" in nan.user_attrs["failure_reason"]
    assert raising.user_attrs["failure_reason"].startswith("ValueError")
    assert "units=0" in raising.user_attrs["failure_reason"]
    assert summary.finished_trials == 3  # genuine failures count toward n_trials
    assert summary.best_value == pytest.approx(good.value)

    runs = trial_runs(cfg)
    for number, trial in ((0, nan), (1, raising)):
        run = runs[number]
        assert run.info.status == "FAILED"
        assert run.data.tags["sweeplab.state"] == "failed"
        assert run.data.tags["sweeplab.failure_reason"] == trial.user_attrs["failure_reason"]
    assert runs[2].info.status == "FINISHED"


def test_consecutive_failures_stop_the_sweep(make_config) -> None:
    cfg = make_config(
        "search.n_trials=6",
        "search.max_consecutive_failures=2",
        "+space.optimizer.learning_rate={type:float,low:1e-4,high:1e9,log:true}",
        "tracking.log_models=false",
    )
    queue(cfg, *[{**GOOD, "optimizer.learning_rate": 1e9}] * 3)
    with pytest.raises(TooManyFailures, match=r"2 trials failed in a row .*loss became nan"):
        sweep(cfg)
    study = optuna.load_study(
        study_name=study_name(prepare(cfg)), storage=prepare(cfg).search.storage
    )
    assert [t.state for t in study.trials if t.state != TrialState.WAITING] == [TrialState.FAIL] * 2
    assert len(trial_runs(cfg)) == 2


def test_a_trial_is_never_pruned_at_its_last_epoch(tmp_path) -> None:
    """A trial that trained all its epochs completes with its model, whatever the pruner says
    (before: "pruned at epoch 9" of 10)."""
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.9)
    )
    trial = study.ask()
    callback = ObjectivePruning(trial, "val_accuracy", epochs=3)
    low = {"loss": 1.0, "val_accuracy": 0.1}
    callback.on_epoch_end(2, low)  # the last of 3: reported, not pruned
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {2: 0.1}
    with pytest.raises(optuna.TrialPruned):
        ObjectivePruning(study.ask(), "val_accuracy", epochs=3).on_epoch_end(1, low)


def test_a_misspelled_monitor_cannot_switch_pruning_off(make_config) -> None:
    with pytest.raises(UserInputError, match="val_acc"):
        sweep(make_config("train.objective=val_acc"))
    # The per-epoch callback itself refuses a metric that training does not report.
    trial = optuna.create_study().ask()
    callback = ObjectivePruning(trial, "val_accuracy")
    with pytest.raises(MonitorMissing, match="val_accuracy"):
        callback.on_epoch_end(0, {"loss": 1.0, "val_acc": 0.5})


@pytest.mark.parametrize(
    "override",
    [
        "search.pruner=patience",
        "+search.pruners.median.warmup=3",
        "search.heartbeat_interval=0",
        "search.max_consecutive_failures=0",
    ],
)
def test_bad_pruning_and_heartbeat_settings_fail_before_training(make_config, override) -> None:
    cfg = make_config(override)
    with pytest.raises(UserInputError):
        sweep(cfg)
    assert not (Path(cfg.output_dir) / "mlflow.db").exists()


def test_an_interrupted_trials_mark_survives_a_storage_session_the_interrupt_broke(
    tmp_path, monkeypatch
) -> None:
    """An interrupt inside a storage call (a per-epoch report) leaves the session broken, so the
    first write after it fails; the mark and the re-queue are written on the next try."""
    from optuna.distributions import FloatDistribution

    from search.engines.optuna.engine import OptunaEngine

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    engine = OptunaEngine.__new__(OptunaEngine)  # only its study is used here
    engine.study = study
    writes: list[str] = []
    original = optuna.Trial.set_user_attr

    def broken_once(self, key, value):
        writes.append(key)
        if len(writes) == 1:
            raise optuna.exceptions.StorageInternalError("This transaction is closed")
        return original(self, key, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", broken_once)
    engine._note_interrupted(trial, {"x": trial.params["x"]}, "run-1")
    marked = study.trials[0].user_attrs
    assert marked["interrupted"] == "Ctrl-C or SIGTERM" and marked["mlflow_run_id"] == "run-1"
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs.get("retry_of") for t in queued] == [0]
