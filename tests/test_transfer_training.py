"""The two-phase schedule on real data: what each phase trains, MLflow's epoch axis, accuracy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from transfer_helpers import (
    copy_sign_language_subsample,
    make_keras_home,
    offline,  # noqa: F401  (a fixture, used by name)
    transfer_config,
)

from experiments.data.load import load_data
from experiments.training.trial import run_trial
from search.sweep import sweep


class BackboneSnapshots(keras.callbacks.Callback):
    """The backbone's weights at the start and end of each `fit` (one fit per phase).

    The whole model's backbone: with the feature cache, `fit` trains a sub-model that shares its
    layers, so `self.model` is that sub-model; `watch` is handed the whole model when it is built.
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[dict[str, list[np.ndarray]]] = []
        self.whole: keras.Model | None = None

    def watch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from experiments.training import trial

        build = trial.build_model

        def keep(*args):
            self.whole = build(*args)
            return self.whole

        monkeypatch.setattr(trial, "build_model", keep)

    def _take(self) -> None:
        assert self.whole is not None
        backbone = self.whole.get_layer("backbone")
        self.snapshots.append(
            {layer.name: [np.array(w) for w in layer.get_weights()] for layer in backbone.layers}
        )

    def on_train_begin(self, logs=None) -> None:
        self._take()

    def on_train_end(self, logs=None) -> None:
        self._take()


def changed(before: dict, after: dict, name: str) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True))


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("cached", ["true", "false"])
def test_phase_1_freezes_the_backbone_and_phase_2_trains_only_the_top_layers(
    tmp_path, monkeypatch, cached
) -> None:
    keras_home = make_keras_home(tmp_path, monkeypatch)
    top = 12
    cfg = transfer_config(
        tmp_path,
        f"keras_home={keras_home}",
        "train.epochs=3",
        "model.fine_tune.head_epochs=1",
        f"model.fine_tune.unfreeze_layers={top}",
        "model.fine_tune.lr_multiplier=1.0",
        "optimizer.learning_rate=0.01",
        f"model.feature_cache.enabled={cached}",
    )
    data = load_data(cfg.data, int(cfg.seed))
    snapshots = BackboneSnapshots()
    snapshots.watch(monkeypatch)
    result = run_trial(cfg, data, [snapshots])
    assert result.feature_cache.used == (cached == "true")

    assert result.history["phase"] == [1, 2, 2]
    assert len(snapshots.snapshots) == 4  # begin/end of phase 1, begin/end of phase 2
    begin_1, end_1, begin_2, end_2 = snapshots.snapshots
    backbone = result.model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]
    weighted = [n for n in names if end_1[n]]

    # Phase 1: not one backbone weight moved (BatchNormalization statistics included).
    assert not [n for n in weighted if changed(begin_1, end_1, n)]

    # Phase 2: BatchNormalization layers unchanged (gamma, beta and moving statistics), and
    # exactly the top N weighted non-BN layers changed (BN is not counted in N), nothing below.
    is_bn = {
        layer.name: isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers
    }
    tunable = [n for n in weighted if not is_bn[n]]
    expected = set(tunable[-top:])
    moved = {n for n in weighted if changed(begin_2, end_2, n)}
    assert not {n for n in moved if is_bn[n]}
    assert len(expected) == top and moved == expected
    span = names[names.index(tunable[-top]) :]
    assert any(is_bn[n] for n in span)  # the test covers BN layers inside the opened span

    # Parameter counts per epoch: the head only in phase 1, more in phase 2; the total constant.
    trainable, frozen = result.history["trainable_params"], result.history["frozen_params"]
    head = sum(int(np.prod(w.shape)) for w in result.model.get_layer("head_out").weights)
    assert trainable[0] == head and trainable[1] == trainable[2] > head
    assert len({t + f for t, f in zip(trainable, frozen, strict=True)}) == 1


def _check_two_phase_sweep(cfg, summary, chance: float) -> None:
    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("sweeplab.kind") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    epochs = int(cfg.train.epochs)
    for run in trials:
        # Trained on cached activations of the frozen backbone, recorded on the run.
        tags = run.data.tags
        assert tags["sweeplab.feature_cache"] == "cached"
        assert (
            int(tags["sweeplab.feature_cache.hits"]) + int(tags["sweeplab.feature_cache.misses"])
            > 0
        )
        head_epochs = int(run.data.params["model.fine_tune.head_epochs"])
        history = {
            name: sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
            for name in ("phase", "val_accuracy", "trainable_params", "frozen_params")
        }
        # One continuous epoch axis across both phases, with the phase marked on each epoch.
        for name, points in history.items():
            assert [m.step for m in points] == list(range(epochs)), name
        assert [m.value for m in history["phase"]] == [1] * head_epochs + [2] * (
            epochs - head_epochs
        )
    assert summary.best_value > 4 * chance  # far above chance


@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_two_trial_transfer_sweep_on_sign_language_folder(tmp_path, monkeypatch) -> None:
    """Real photos (a copied per-class subsample) through data=directory, the real sweep,
    MLflow store and study: both phases train and validation accuracy is far above chance."""
    keras_home = make_keras_home(tmp_path, monkeypatch)
    folder = copy_sign_language_subsample(tmp_path / "sign", per_class=40)
    cfg = transfer_config(
        tmp_path,
        "data=directory",
        f"data.path={folder}",
        f"keras_home={keras_home}",
        "data.image_size=96",
        "model.input_size=96",
        "train.epochs=5",
        "train.batch_size=16",
        "search.n_trials=2",
        "tracking.log_models=false",
        # This test is about the two phases: every trial runs all its epochs at 96 px with a
        # phase 2, and the best trial is tested as it is (no pruner, no re-evaluation).
        "search.pruner=none",
        "final.top_k=0",
        "space.model.fine_tune.head_epochs.high=3",
        "~space.data",  # no augmentation sampled either: every trial can use the feature cache
        "search.staged.enabled=false",  # two two-phase trials, no screen (tests/test_staged.py)
    )
    cfg.space.optimizer.learning_rate.low = 0.005  # a few steps per epoch: a brisk head
    summary = sweep(cfg)
    _check_two_phase_sweep(cfg, summary, chance=1 / 10)
