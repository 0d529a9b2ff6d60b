"""The training loss: sparse categorical cross-entropy, with optional label smoothing, or a
distillation loss against a teacher's soft targets.

Keras 3's `SparseCategoricalCrossentropy` has no `label_smoothing` (only the categorical one
does), and the pipeline feeds integer labels, which the `accuracy` metric reads as sparse. So a
smoothed loss one-hots the integer labels inside the loss and calls the categorical
cross-entropy with `label_smoothing`: labels, pipeline and metrics stay as they are.

Distillation (`train.distil`, experiments/training/distil.py) feeds each item's target as one
float row [label, teacher p_1, ..., p_classes] (`Split.targets`), so that the teacher's
probabilities travel through every pipeline, the feature cache's included, shuffled and batched
with their images; `DistillationLoss` and `DistilledAccuracy` unpack that row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from experiments.errors import UserInputError


@keras.saving.register_keras_serializable(package="sweeplab")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against (1 - s) one-hot + s / num_classes targets."""

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_ce", **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="sweeplab")
class DistillationLoss(keras.losses.Loss):
    """alpha * CE(true labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T) (Hinton et al.).

    `y_true` rows are [label, teacher probabilities] (`Split.targets`). Every sweeplab model ends
    in a softmax and the teacher (an average of such models) returns probabilities, so the
    logits are recovered as log(probability), clipped at Keras's epsilon: softmax(log p / T) is
    p^(1/T) renormalized, the same as softening the real logits (they differ from log p by a
    per-row constant, which a softmax ignores). T^2 keeps the soft term's gradients at the scale
    of the hard term's as T grows. The hard term keeps the student's own label smoothing.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 0.5,
        label_smoothing: float = 0.0,
        name: str = "distillation",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        labels = ops.cast(y_true[:, 0], "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        hard = keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )
        epsilon = keras.config.epsilon()
        teacher = ops.log(ops.clip(y_true[:, 1:], epsilon, 1.0)) / self.temperature
        student = ops.log(ops.clip(y_pred, epsilon, 1.0)) / self.temperature
        log_teacher = ops.log_softmax(teacher, axis=-1)
        kl = ops.sum(ops.exp(log_teacher) * (log_teacher - ops.log_softmax(student, axis=-1)), -1)
        return self.alpha * hard + (1.0 - self.alpha) * self.temperature**2 * kl

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="sweeplab")
class DistilledAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Accuracy against the label in column 0 of [label, teacher probabilities] rows.

    Named `accuracy`, so a distilled fit logs `accuracy` and `val_accuracy` like any trial, and
    the trial's callbacks, pruning and final metrics read it unchanged.
    """

    def __init__(self, name: str = "accuracy", dtype: str | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, 0], y_pred, sample_weight)


def check_distil(distil: Mapping[str, Any]) -> tuple[float, float]:
    """(temperature, alpha) of `train.distil`: temperature > 0, alpha in [0, 1]."""
    numbers: dict[str, float] = {}
    for key in ("temperature", "alpha"):
        value = distil.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserInputError(f"train.distil.{key}={value!r} must be a number.")
        numbers[key] = float(value)
    temperature, alpha = numbers["temperature"], numbers["alpha"]
    if not temperature > 0:
        raise UserInputError(
            f"train.distil.temperature={temperature} must be above 0 (1: the teacher's own "
            "probabilities; higher: softer)."
        )
    if not 0 <= alpha <= 1:
        raise UserInputError(
            f"train.distil.alpha={alpha} must be from 0 (teacher only) to 1 (true labels only)."
        )
    return temperature, alpha


def training_loss(
    label_smoothing: float | None, distil: Mapping[str, Any] | None = None
) -> str | keras.losses.Loss:
    """Keras's own sparse cross-entropy without smoothing (what models saved so far record);
    the smoothed loss for `train.label_smoothing` in (0, 1), a row of search/config/rules.py
    checked before the sweep; the distillation loss, with that smoothing on its hard term, when
    `distil` (train.distil: temperature, alpha) is set."""
    value = 0.0 if label_smoothing is None else label_smoothing
    if distil is not None:
        temperature, alpha = check_distil(distil)
        return DistillationLoss(temperature, alpha, float(value))
    if value == 0:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCategoricalCrossentropy(float(value))


def training_metrics(distil: Mapping[str, Any] | None = None) -> list[str | keras.metrics.Metric]:
    """["accuracy"], or its distillation twin that reads the label out of the packed targets."""
    return ["accuracy"] if distil is None else [DistilledAccuracy()]
