"""Training-time augmentation as Keras preprocessing layers, wrapped around the model.

Where it lives: in a training wrapper model (Input -> augmentation -> the model, whose first
layer is its own Rescaling), not in the tf.data map. Why:
- Keras's `training` flag switches every layer off outside `fit`, so validation, test and
  prediction can never see augmented images;
- the random layers draw from seeds set per trial (`keras.utils.set_random_seed` plus a seed per
  layer), so a trial is repeatable, which a parallel tf.data map does not promise;
- the decoded, cached input pipeline stays the same for every trial, so the search can vary
  augmentation without re-decoding anything, and the layers run on the accelerator with the model.
The trial exports the inner model (`unwrap`), so an exported model takes raw pixels and carries
no augmentation layers at all.

Config (`data.augmentation`): `flip` is none|horizontal|vertical|horizontal_and_vertical; every
other key is a strength where 0 switches the layer off:
rotation (fraction of a full turn), translation, zoom, crop (largest fraction cut away, then
resized back) and contrast (factor); `fill_mode` is how rotation/translation/zoom fill edges.
`preset` (null: the keys above) names a set of them instead (`PRESETS`: none, flip, light), so
a search can try augmentation as one categorical: a few fixed settings whose frozen-backbone
activations can be cached and shared by every trial that draws them
(experiments/training/feature_cache.py), where continuous strengths make every trial unique.
The names and ranges live in experiments/data/augment_options.py (no Keras), where the config
check reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from experiments.data.augment_options import STRENGTHS, resolve_preset


class RandomCropResize(keras.layers.Layer):
    """Crop a random window of (1 - up to `fraction`) of each side, resized back to full size.

    Keras's RandomCrop changes the output size and resizes at inference; this one keeps the
    size and is the identity outside training.
    """

    def __init__(self, fraction: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fraction, self.seed = float(fraction), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = False):
        if not training or self.fraction <= 0:
            return images
        ops = keras.ops
        shape = ops.shape(images)
        n, height, width = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        scale = keras.random.uniform((n,), 1.0 - self.fraction, 1.0, seed=self.generator)
        dx = keras.random.uniform((n,), 0.0, 1.0, seed=self.generator) * (1.0 - scale) * width
        dy = keras.random.uniform((n,), 0.0, 1.0, seed=self.generator) * (1.0 - scale) * height
        zero = ops.zeros_like(scale)
        transform = ops.stack([scale, zero, dx, zero, scale, dy, zero, zero], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fraction": self.fraction, "seed": self.seed}


def augmentation_layers(cfg: Mapping[str, Any] | None, seed: int) -> list[keras.layers.Layer]:
    """The layers of `data.augmentation` as configured (a preset expanded here)."""
    return layers_for(resolve_preset(cfg), seed)


def layers_for(cfg: Mapping[str, Any], seed: int) -> list[keras.layers.Layer]:
    """The layers of augmentation settings already resolved (`resolve_preset`, once a trial:
    experiments.training.settings), in a fixed order; an empty list when everything is off."""
    if cfg.get("preset") is not None:  # a caller's bug: a named preset would be ignored here
        raise ValueError("layers_for takes resolved settings: call resolve_preset first")
    # Values are checked before any trial, with every value the space can produce: the table
    # search/config/rules.py (flip, fill_mode and each strength's range are rows there).
    flip = str(cfg.get("flip") or "none")
    fill = str(cfg.get("fill_mode") or "reflect")
    strength = {key: float(cfg.get(key) or 0.0) for key in STRENGTHS}
    layers: list[keras.layers.Layer] = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if strength["rotation"]:
        layers.append(
            keras.layers.RandomRotation(strength["rotation"], fill_mode=fill, seed=seed + 1)
        )
    if strength["translation"]:
        t = strength["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode=fill, seed=seed + 2))
    if strength["zoom"]:
        z = strength["zoom"]
        layers.append(keras.layers.RandomZoom(z, z, fill_mode=fill, seed=seed + 3))
    if strength["crop"]:
        layers.append(RandomCropResize(strength["crop"], seed=seed + 4))
    if strength["contrast"]:
        layers.append(
            keras.layers.RandomContrast(strength["contrast"], value_range=(0, 255), seed=seed + 5)
        )
    return layers


def with_augmentation(model: keras.Model, settings: Mapping[str, Any], seed: int) -> keras.Model:
    """`model` itself when augmentation is off, else a training wrapper sharing its weights;
    `settings`: data.augmentation resolved (`resolve_preset`)."""
    layers = layers_for(settings, seed)
    if not layers:
        return model
    inputs = keras.Input(shape=model.input_shape[1:])
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_augmented")
