"""Model builders, chosen by `model.name`.

Every model takes raw pixels in [0, 255] and does its own rescaling, so the trained model can be
exported and called on raw images. Builders get the model config, the input shape and the number
of classes and return an uncompiled `keras.Model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
from omegaconf import DictConfig

from experiments.errors import UserInputError
from experiments.models.branched import build_branched
from experiments.models.cnn import build_cnn
from experiments.models.losses import training_loss, training_metrics
from experiments.models.transfer import build_transfer

Builder = Callable[[DictConfig, tuple[int, int, int], int], keras.Model]


BUILDERS: dict[str, Builder] = {
    "cnn": build_cnn,
    "branched": build_branched,
    "transfer": build_transfer,
}


def build_model(
    cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Build the model that `cfg.name` names."""
    builder = BUILDERS.get(str(cfg.name))
    if builder is None:
        raise UserInputError(
            f"model.name={cfg.name!r} is not a known model; accepted: {', '.join(sorted(BUILDERS))}."
        )
    return builder(cfg, input_shape, num_classes)


def compile_model(
    model: keras.Model,
    lr_multiplier: float = 1.0,
    *,
    optimizer_cfg: DictConfig,
    label_smoothing: float | None = None,
    distil: Mapping[str, Any] | None = None,
) -> None:
    """Compile for sparse labels with a fresh optimizer at its learning rate times a multiplier;
    `label_smoothing` (train.label_smoothing) > 0 smooths the targets (experiments/models/losses.py);
    `distil` (train.distil: temperature, alpha) trains against a teacher's soft targets, which
    the data then carries (`Split.soft`, experiments/training/distil.py).
    """
    optimizer = build_optimizer(optimizer_cfg)
    if lr_multiplier != 1.0:
        optimizer.learning_rate = float(optimizer.learning_rate) * float(lr_multiplier)
    loss = training_loss(label_smoothing, distil)
    model.compile(optimizer=optimizer, loss=loss, metrics=training_metrics(distil))


def build_optimizer(cfg: DictConfig) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer from `optimizer.name` and its remaining keys as arguments."""
    options = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return keras.optimizers.get({"class_name": str(cfg.name), "config": options})
    except (ValueError, TypeError) as err:
        raise UserInputError(
            f"optimizer {dict(cfg)} cannot be built: {err}. Accepted names are Keras optimizers "
            "(adam, sgd, rmsprop, adamw, ...) with their own keyword arguments."
        ) from err
