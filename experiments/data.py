"""Image data as arrays of raw pixels, split once per sweep into train / validation / test.

Pixels stay in [0, 255] as float32: rescaling lives inside the model (a `Rescaling` layer) so that
an exported model takes raw pixels. The split is stratified and seeded, so every trial of a sweep,
and a re-run of any trial, sees exactly the same images in each split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from experiments.errors import UserInputError

SOURCES = ("digits",)


@dataclass(frozen=True)
class Split:
    """One split: images (N, H, W, C) float32 in [0, 255] and integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class ImageData:
    """A dataset split three ways, with class names in label order."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    source: str
    info: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, for the record."""
        return {
            name: {c: int((split.y == i).sum()) for i, c in enumerate(self.class_names)}
            for name, split in (("train", self.train), ("val", self.val), ("test", self.test))
        }

    def fingerprint(self) -> str:
        """A short content hash of every split's pixels and labels."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(np.ascontiguousarray(split.x).tobytes())
            digest.update(np.ascontiguousarray(split.y).tobytes())
        return digest.hexdigest()[:16]


def load_data(cfg: DictConfig, seed: int) -> ImageData:
    """Load the configured source and split it (stratified, seeded)."""
    if cfg.source == "digits":
        x, y, class_names = _load_digits(int(cfg.image_size))
    else:
        raise UserInputError(
            f"data.source={cfg.source!r} is not a known data source; accepted: {', '.join(SOURCES)}."
        )
    train, val, test = stratified_split(
        x, y, float(cfg.val_fraction), float(cfg.test_fraction), seed
    )
    return ImageData(train, val, test, class_names, source=str(cfg.source))


def stratified_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Split into train / validation / test with the class balance kept in each."""
    from sklearn.model_selection import train_test_split

    for name, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UserInputError(f"{name}={value} must be a fraction strictly between 0 and 1.")
    if val_fraction + test_fraction >= 1.0:
        raise UserInputError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no "
            "training images; their sum must be below 1."
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=y_rest,
        random_state=seed,
    )
    return Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test)


def _load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 8x8 digits (values 0..16) as [0, 255] images of image_size x image_size."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise UserInputError(f"data.image_size={image_size} is too small; use 8 or more.")
    digits = load_digits()
    images = (digits.images.astype("float32") * (255.0 / 16.0))[..., None]
    if image_size != 8:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    class_names = [str(i) for i in range(10)]
    return images.astype("float32"), digits.target.astype("int32"), class_names
