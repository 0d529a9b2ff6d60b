"""Load the configured data source and split it (stratified, seeded): the source dispatcher.

Each source lives in its own module and returns an `ImageData` (experiments.data.splits); this
module only chooses between them, so imports run one way: load -> sources -> splits.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.data.splits import TRAINING_ONLY_KEYS, ImageData, stratified_split
from experiments.errors import UserInputError

SOURCES = ("digits", "directory", "keras")


def loading_key(cfg: DictConfig, seed: int) -> str:
    """What decides the loaded images: the data config minus training-only keys, and the seed."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    kept = {k: v for k, v in container.items() if k not in TRAINING_ONLY_KEYS}
    return OmegaConf.to_yaml(OmegaConf.create(kept), sort_keys=True) + f"seed={seed}"


def load_data(cfg: DictConfig, seed: int) -> ImageData:
    """Load the configured source and split it (stratified, seeded)."""
    source = cfg.get("source")
    if source == "digits":
        x, y, class_names = _load_digits(int(cfg.image_size))
        train, val, test = stratified_split(
            x, y, float(cfg.val_fraction), float(cfg.test_fraction), seed
        )
        return ImageData(train, val, test, class_names, source="digits")
    if source == "directory":
        from experiments.data.directory import load_directory

        return load_directory(cfg, seed)
    if source == "keras":
        from experiments.data.keras_datasets import load_keras

        return load_keras(cfg, seed)
    raise UserInputError(
        f"data.source={source!r} is not a known data source; accepted: {', '.join(SOURCES)} "
        "(choose with data=NAME)."
    )


def _load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 8x8 digits (values 0..16) as [0, 255] images of image_size x image_size."""
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise UserInputError(f"data.image_size={image_size} is too small; use 8 or more.")
    digits = load_digits()
    images = (digits.images.astype("float32") * (255.0 / 16.0))[..., None]
    if image_size != 8:
        images = resize_bilinear(images, image_size)
    class_names = [str(i) for i in range(10)]
    return images.astype("float32"), digits.target.astype("int32"), class_names


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """`tf.image.resize(images, (size, size), "bilinear")` in NumPy (equal within 2e-4 on [0, 255]).

    Half-pixel centres, no antialiasing, as TensorFlow does it; in NumPy so that the sweep
    process, which loads the data for its workers, never imports TensorFlow.
    """
    rows = _interpolation(images.shape[1], size)
    cols = _interpolation(images.shape[2], size)
    lower, upper, frac = rows
    images = images[:, lower] * (1 - frac)[:, None, None] + images[:, upper] * frac[:, None, None]
    lower, upper, frac = cols
    return images[:, :, lower] * (1 - frac)[:, None] + images[:, :, upper] * frac[:, None]


def _interpolation(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows (below, above) and the weight of the one above, for each output row."""
    position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(int)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(int)
    return lower, upper, (position - floor).astype("float32")
