"""train.label_smoothing: integer labels, smoothed targets, accuracy still the metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.errors import UserInputError
from experiments.models.build import build_optimizer, compile_model
from experiments.models.losses import SmoothedSparseCategoricalCrossentropy, training_loss
from search.checks import check_config


def test_smoothed_loss_equals_categorical_cross_entropy_with_smoothing() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=16).astype("float32")
    labels = rng.integers(0, 5, size=16)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(
        np.eye(5, dtype="float32")[labels], probs
    )
    got = SmoothedSparseCategoricalCrossentropy(0.2)(labels.reshape(-1, 1), probs)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert float(got) != pytest.approx(float(plain), rel=1e-3)  # smoothing changes the loss
    assert training_loss(0.0) == "sparse_categorical_crossentropy"


def test_a_smoothed_model_trains_reports_accuracy_and_reloads(tmp_path) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    optimizer = OmegaConf.create({"name": "adam", "learning_rate": 0.01, "weight_decay": 1e-4})
    compile_model(model, optimizer_cfg=optimizer, label_smoothing=0.1)
    history = model.fit(x / 16, y, epochs=3, batch_size=64, verbose=0).history
    assert history["accuracy"][-1] > 0.5  # the accuracy metric reads the integer labels
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.label_smoothing == pytest.approx(0.1)
    assert float(model.optimizer.weight_decay) == pytest.approx(1e-4)
    assert float(build_optimizer(optimizer).weight_decay) == pytest.approx(1e-4)


@pytest.mark.parametrize("value", [1.0, -0.1, "lots", True])
def test_bad_label_smoothing_is_refused_before_training(make_config, value) -> None:
    cfg = make_config()
    OmegaConf.update(cfg, "train.label_smoothing", value, force_add=True)
    with pytest.raises(UserInputError, match="train.label_smoothing=.* must be a number from 0"):
        check_config(cfg, models=False)
