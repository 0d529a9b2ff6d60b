"""The final stage's trainings run in the worker pool, as trials do (issue 28 item 6): with
`search.workers >= 1` the sweep process never fits a model (its re-evaluations, the retraining on
train + validation, the extra seeds and the distilled student train in a worker, which saves the
model for the sweep to load), so its memory stays flat; a worker that dies there is a one-line
reason and the stage goes on with what it has."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import WORKERS
from mlflow.tracking import MlflowClient

from experiments.data.load import load_data
from experiments.data.shared import share
from search.execution.pool import Worker
from search.sweep import sweep
from search.trials.runner import TrialRunner

# Every training of the final stage: 2 re-evaluations, the retraining and a second retrained
# seed, then a student of the 2-model ensemble (shipped or not by final.ship).
FINAL = [
    WORKERS, "search.n_trials=2", "search.pruner=none", "final.top_k=2", "final.seeds=1",
    "final.contender_se=null", "final.retrain=true", "final.retrain_seeds=2", "final.ensemble=2",
    "final.distil=true", "final.register=false",
]  # fmt: skip


def no_fit_here(monkeypatch) -> list[str]:
    """Make any fit or run_trial in this (the sweep) process fail the test; the workers are
    spawned, so they train unpatched. Returns where the final stage's trainings came from."""
    import keras

    import experiments.training.trial as trial_module

    def refused(*args, **kwargs):
        raise AssertionError("the sweep process trained a model")

    monkeypatch.setattr(keras.Model, "fit", refused)
    monkeypatch.setattr(trial_module, "run_trial", refused)
    pids: list[str] = []
    original = Worker.train

    def followed(self, *args, **kwargs):
        pids.append(str(self.pid))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Worker, "train", followed)
    return pids


@pytest.mark.slow
def test_every_final_training_runs_in_a_worker_process(make_config, monkeypatch, capsys) -> None:
    cfg = make_config(*FINAL)
    trainings = no_fit_here(monkeypatch)
    summary = sweep(cfg)
    out = capsys.readouterr().out

    assert summary.finished_trials == 2
    assert out.count("re-evaluated trial") == 2
    assert "final: retraining the best config on train + validation, seed" in out
    assert "final: distilling the ensemble" in out
    # 2 trials, 2 re-evaluations, 2 retrainings, 1 student: each followed in a worker process
    assert len(trainings) == 7 and str(os.getpid()) not in trainings
    assert summary.final is not None
    assert summary.final.source in ("ensemble", "distilled_student")
    parent = MlflowClient(cfg.tracking.tracking_uri).get_run(summary.parent_run_id)
    members = parent.data.tags["sweeplab.final.ensemble_members"]
    assert "retrained on train + validation" in members
    assert "test_accuracy" in parent.data.metrics
    assert not (Path(cfg.output_dir) / ".workers").exists()  # the data and model files: removed


def test_the_retraining_in_a_worker_trains_on_train_and_validation(make_config, monkeypatch):
    """The worker grows its own train + validation copy: every one of those images, as the
    in-process retraining does (tests/test_final.py), recorded as the tested model's."""
    cfg = make_config(WORKERS, "search.n_trials=1", "final.retrain=true", "final.register=false")
    no_fit_here(monkeypatch)
    summary = sweep(cfg)
    parent = MlflowClient(cfg.tracking.tracking_uri).get_run(summary.parent_run_id)
    assert parent.data.tags["sweeplab.final.source"] == "retrained_train_val"
    data = load_data(cfg.data, int(cfg.seed))
    seen = len(data.train) + len(data.val)
    assert parent.data.tags["sweeplab.final.train_images"] == str(seen)


def test_a_grown_share_opens_as_train_plus_validation_without_new_files(make_config, tmp_path):
    """What a worker opens for the retraining: the validation pixels and labels after the
    training split's, read from the files the trials used; the split itself is the
    in-process `train_plus_val`'s, soft targets included."""
    from dataclasses import replace

    from experiments.data.splits import train_plus_val

    data = load_data(make_config().data, 0)
    shared = share(data, tmp_path)
    written = sorted(tmp_path.rglob("*.npy"))
    soft = {n: np.full((len(data.split(n)), data.num_classes), 0.1, "float32") for n in ("train", "val")}  # fmt: skip
    taught = replace(data, **{n: replace(data.split(n), soft=s) for n, s in soft.items()})  # type: ignore[arg-type]
    for source in (data, taught):
        grown = shared.derived(source, grown=True)
        opened, expected = grown.open(), train_plus_val(source)
        np.testing.assert_array_equal(opened.train.x, expected.train.x)
        np.testing.assert_array_equal(opened.train.y, expected.train.y)
        np.testing.assert_array_equal(opened.val.x, data.val.x)
        np.testing.assert_array_equal(opened.test.x, data.test.x)
        assert (opened.train.soft is None) == (source is data)
        if source is taught:
            np.testing.assert_array_equal(opened.train.soft, expected.train.soft)
        assert grown.key != shared.key  # a worker reopens, not reusing the trials' data
    assert shared.derived(taught, True).key != shared.derived(data, True).key
    assert sorted(tmp_path.rglob("*.npy")) == written  # no grown copy written


@pytest.mark.slow
def test_a_worker_that_dies_in_the_final_stage_is_a_reason_not_a_traceback(
    make_config, monkeypatch, capsys
) -> None:
    """Each final-stage training's worker is killed (kill -9) as it starts: the re-evaluation
    and the retraining are skipped with how the worker died, the trial's own model is tested,
    and the sweep ends normally."""
    cfg = make_config(
        WORKERS, "search.n_trials=2", "search.pruner=none", "final.top_k=2", "final.seeds=1",
        "final.contender_se=null", "final.retrain=true", "final.register=false",
    )  # fmt: skip
    original_final, original_train = TrialRunner.train_final, Worker.train
    final = [False]

    def in_final(self, *args, **kwargs):
        final[0] = True
        return original_final(self, *args, **kwargs)

    def killed(self, *args, **kwargs):
        if final[0]:
            os.kill(self.pid, signal.SIGKILL)
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(TrialRunner, "train_final", in_final)
    monkeypatch.setattr(Worker, "train", killed)
    summary = sweep(cfg)
    out = capsys.readouterr().out

    died = "the worker process training this trial died: killed by SIGKILL"
    assert "final: every re-evaluation training failed" in out
    assert f"training failed ({died}" in out
    assert f"config on train + validation failed ({died}" in out
    assert "skipped, the model trained on train is tested instead" in out
    assert summary.final is not None and summary.final.source == "trial_model"
    assert "Traceback" not in out


def test_once_shared_the_sweep_process_maps_the_pixels_rather_than_hold_them(make_config):
    """Once the data is written for the workers, the runner reads the same pixels from that
    file (the final test, the exports), and its own decoded copy is dropped."""
    import mmap

    cfg = make_config(WORKERS)
    data = load_data(cfg.data, int(cfg.seed))
    runner = TrialRunner(cfg, None, {}, data=data)  # type: ignore[arg-type]
    assert runner.data_for(cfg) is data  # loaded: in memory until a worker needs it
    runner._shared_for(data)
    held = runner.data_for(cfg)
    for name in ("train", "val", "test"):
        x = held.split(name).x
        np.testing.assert_array_equal(x, data.split(name).x)
        while not isinstance(x, mmap.mmap) and getattr(x, "base", None) is not None:
            x = x.base
        assert isinstance(x, mmap.mmap), name  # a mapping of the shared file, not a copy
    assert held.fingerprint() == data.fingerprint()
