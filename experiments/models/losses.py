"""The training loss: sparse categorical cross-entropy, with optional label smoothing.

Keras 3's `SparseCategoricalCrossentropy` has no `label_smoothing` (only the categorical one
does), and the pipeline feeds integer labels, which the `accuracy` metric reads as sparse. So a
smoothed loss one-hots the integer labels inside the loss and calls the categorical
cross-entropy with `label_smoothing`: labels, pipeline and metrics stay as they are.
"""

from __future__ import annotations

import keras


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


def training_loss(label_smoothing: float | None) -> str | keras.losses.Loss:
    """Keras's own sparse cross-entropy without smoothing (what models saved so far record);
    the smoothed loss for `train.label_smoothing` in (0, 1), a row of search/config/rules.py
    checked before the sweep."""
    value = 0.0 if label_smoothing is None else label_smoothing
    if value == 0:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCategoricalCrossentropy(float(value))
