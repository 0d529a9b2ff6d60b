"""The two-phase fine-tuning schedule of models with a pretrained backbone.

Phase 1 trains the head with the backbone frozen, at `optimizer.learning_rate`, for
`model.fine_tune.head_epochs` epochs. Phase 2 unfreezes the backbone's top `unfreeze_layers`
layers that have weights (or `unfreeze_fraction` of them when set), BatchNormalization not counted
and kept frozen (the backbone runs in inference mode, so its statistics are not overwritten by
small batches and its internal dropout is off: experiments/models/transfer.py), compiles
again at the learning rate times `lr_multiplier`, and trains on up to `train.epochs` in all.

Phase 2 calls `fit` with `initial_epoch`, so every callback (MLflow's per-epoch logger, pruning)
sees one continuous epoch axis. A callback placed first adds `phase`, `trainable_params` and
`frozen_params` to each epoch's logs, so the trackers record them like any other metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
from omegaconf import DictConfig

from experiments.models.transfer import BACKBONE_LAYER

Fit = Callable[..., keras.callbacks.History]
Compile = Callable[[float], None]  # (re)compile what `fit` trains, at lr x multiplier
# (fit, compile) of what trains in a phase (1 or 2), asked for once the backbone's layers are
# frozen or opened for it: the whole model, or a sub-model on cached activations
# (experiments/training/feature_cache.py).
Trainer = Callable[[int], tuple[Fit, Compile]]


def is_two_phase(model_cfg: DictConfig) -> bool:
    """True for models that configure a fine-tune schedule (model.fine_tune)."""
    return model_cfg.get("fine_tune") is not None


def unfreeze_count(fine_tune: DictConfig, n_layers: int) -> int:
    """How many of the backbone's top tunable layers (see `tunable_layers`) phase 2 unfreezes."""
    fraction = fine_tune.get("unfreeze_fraction")  # both: rows of search/config/rules.py
    if fraction is not None:
        return round(float(fraction) * n_layers)
    return min(int(fine_tune.unfreeze_layers), n_layers)


def tunable_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """The layers `unfreeze_layers` counts, bottom to top: those with weights, except BN.

    Activations, padding, pooling and additions have nothing to train, and BatchNormalization
    stays frozen in both phases, so counting them would open fewer layers than the number says
    (a MobileNet block is conv, BN, ReLU: N=3 used to open one convolution).
    """
    return [
        layer
        for layer in backbone.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]


def unfreeze_top(backbone: keras.Model, count: int) -> list[str]:
    """Make exactly the top `count` tunable layers trainable, all others frozen; their names."""
    backbone.trainable = True
    tunable = tunable_layers(backbone)
    opened = {id(layer) for layer in tunable[len(tunable) - count :]} if count > 0 else set()
    for layer in backbone.layers:
        layer.trainable = id(layer) in opened
    return [layer.name for layer in tunable if id(layer) in opened]


def param_counts(model: keras.Model) -> tuple[int, int]:
    """(trainable, frozen) parameter counts; frozen includes BatchNormalization statistics."""

    def count(weights: list) -> int:
        return int(sum(np.prod(w.shape) for w in weights))

    return count(model.trainable_weights), count(model.non_trainable_weights)


class PhaseMarker(keras.callbacks.Callback):
    """Adds the current phase and parameter counts to each epoch's logs (place it first).

    The counts are the whole model's, also when a phase trains a sub-model on cached activations.
    """

    def __init__(self, whole: keras.Model) -> None:
        super().__init__()
        self.phase = 1
        self.whole = whole

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        trainable, frozen = param_counts(self.whole)
        logs.update(phase=self.phase, trainable_params=trainable, frozen_params=frozen)


def fit_two_phase(
    model: keras.Model,
    cfg: DictConfig,
    trainer: Trainer,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """Run both phases on one epoch axis; returns the merged history."""
    fine_tune = cfg.model.fine_tune
    total = int(cfg.train.epochs)
    head_epochs = min(int(fine_tune.head_epochs), total)
    backbone = model.get_layer(BACKBONE_LAYER)
    marker = PhaseMarker(model)
    callbacks = [marker, *callbacks]
    history: dict[str, list[float]] = {}
    if head_epochs > 0:
        backbone.trainable = False
        fit, compile_model = trainer(1)
        compile_model(1.0)
        _extend(history, fit(epochs=head_epochs, initial_epoch=0, callbacks=callbacks).history)
        if not math.isfinite(history.get("loss", [math.nan])[-1]):
            return history
    if total > head_epochs:
        unfreeze_top(backbone, unfreeze_count(fine_tune, len(tunable_layers(backbone))))
        fit, compile_model = trainer(2)
        compile_model(float(fine_tune.lr_multiplier))
        marker.phase = 2
        _extend(history, fit(epochs=total, initial_epoch=head_epochs, callbacks=callbacks).history)
    return history


def _extend(history: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    for name, values in more.items():
        history.setdefault(name, []).extend(values)
