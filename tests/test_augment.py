"""Augmentation layers: on only in training, repeatable under a seed, searchable, not exported."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from experiments.data.augment import augmentation_layers, with_augmentation
from experiments.data.augment_options import resolve_preset
from experiments.data.load import load_data
from experiments.errors import UserInputError
from experiments.models.build import build_model
from experiments.training.trial import fresh_session, run_trial
from search.config.rules import check_values

EVERYTHING = {
    "flip": "horizontal_and_vertical",
    "rotation": 0.1,
    "translation": 0.1,
    "zoom": 0.2,
    "crop": 0.3,
    "contrast": 0.5,
    "fill_mode": "reflect",
}


def images(n=6, size=16) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("key", ["flip", "rotation", "translation", "zoom", "crop", "contrast"])
def test_each_layer_changes_images_in_training_only(key) -> None:
    value = EVERYTHING[key]
    (layer,) = augmentation_layers({key: value}, seed=1)
    x = images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == x.shape and not np.allclose(out, x)
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3  # still raw pixels


def test_off_means_no_wrapper_and_bad_values_are_named(make_config) -> None:
    cfg = make_config()
    model = build_model(cfg.model, (16, 16, 3), 3)
    resolved = resolve_preset(cfg.data.augmentation)
    assert with_augmentation(model, resolved, 0) is model  # all off by default
    with pytest.raises(ValueError, match="resolve_preset first"):  # a named preset, unresolved
        with_augmentation(model, {"preset": "light"}, 0)
    with pytest.raises(UserInputError, match="unknown key"):
        augmentation_layers({"blur": 1}, 0)
    for bad, needle in [  # values: rows of the config table, checked before any trial
        ("data.augmentation.flip=sideways", "flip='sideways' must be one of none, horizontal"),
        ("data.augmentation.zoom=2.0", "zoom=2.0 must be a number from 0 to 0.9"),
    ]:
        with pytest.raises(UserInputError, match=needle):
            check_values(make_config(bad), [])


def test_the_wrapper_is_the_model_at_inference_and_repeatable_in_training(make_config) -> None:
    cfg = make_config()
    x = images()
    outputs = []
    for _ in range(2):
        fresh_session(7)
        model = build_model(cfg.model, (16, 16, 3), 3)
        wrapped = with_augmentation(model, EVERYTHING, 7)
        assert wrapped is not model
        np.testing.assert_allclose(
            wrapped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
        )
        outputs.append(keras.ops.convert_to_numpy(wrapped(x, training=True)))
        assert not np.allclose(outputs[-1], model.predict(x, verbose=0))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)  # same seed, same augmentation


def test_a_trial_with_augmentation_trains_and_returns_the_plain_model(make_config) -> None:
    cfg = make_config(
        "train.epochs=1",
        "data.augmentation.flip=horizontal",
        "data.augmentation.crop=0.2",
        "data.augmentation.contrast=0.3",
        "data.class_weights=true",
    )
    data = load_data(cfg.data, int(cfg.seed))
    results = [run_trial(cfg, data) for _ in range(2)]
    names = [layer.__class__.__name__ for layer in results[0].model.layers]
    assert (
        "RandomFlip" not in names and "RandomCropResize" not in names
    )  # exported: no augmentation
    assert names[0] == "Rescaling"
    assert results[0].history["loss"] == results[1].history["loss"]  # deterministic under the seed
