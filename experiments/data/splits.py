"""Image data split once per sweep into train / validation / test: the types every source returns.

Pixels stay raw in [0, 255] (uint8 where the source has integers, float32 otherwise) and reach
the model as float32 in [0, 255]: rescaling lives inside the model (a `Rescaling` layer) so that
an exported model takes raw pixels. The split is stratified and seeded, so every trial of a sweep,
and a re-run of any trial, sees exactly the same images in each split. The test split is kept for
one final evaluation: nothing in the search reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.errors import UserInputError

SPLITS = ("train", "val", "test")
# Data keys that shape a trial's training but not the loaded images: trials that differ only in
# these share one loaded dataset.
TRAINING_ONLY_KEYS = ("augmentation", "class_weights")


@dataclass(frozen=True)
class Split:
    """One split: raw pixels (N, H, W, C) and integer labels (N,).

    `x` is an in-memory array, a read-only `np.memmap` (data.cache=file), or None when images are
    decoded from `files` every epoch (data.cache=none). `soft`, when set, is a teacher's class
    probabilities (N, classes) for distillation (experiments/training/distil.py): the pipeline
    then feeds `targets()` instead of the bare labels, and `y` stays the integer labels that
    everything else (counts, class weights, metrics) reads.
    """

    x: np.ndarray | None
    y: np.ndarray
    files: tuple[str, ...] = ()
    soft: np.ndarray | None = None
    # The splits this one concatenates, in order (train + validation, `train_plus_val`): the
    # feature cache reads their entries rather than building the same activations again.
    parts: tuple[Split, ...] = field(default=(), repr=False, compare=False)

    def targets(self) -> np.ndarray:
        """What a pipeline feeds as each item's target: int32 labels (N,), or with `soft` set,
        float32 rows [label, p_1, ..., p_classes] (N, 1 + classes) that the distillation loss
        and metric unpack (experiments/models/losses.py). One array, so that every pipeline
        gathers, shuffles and batches labels and soft targets together by the same index."""
        labels = self.y.astype(np.int32)
        if self.soft is None:
            return labels
        if self.soft.ndim != 2 or len(self.soft) != len(labels):
            raise ValueError(
                f"soft targets of shape {self.soft.shape} do not fit {len(labels)} labels"
            )
        return np.concatenate(
            [labels[:, None].astype(np.float32), self.soft.astype(np.float32)], axis=1
        )

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
    info: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int, int] | None = None
    decoder: Callable[[str], np.ndarray] | None = None  # for splits without pixels in memory
    digest: str | None = None  # content fingerprint computed at load time, when known

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.shape is not None:
            return self.shape
        return tuple(self.train.x.shape[1:])  # type: ignore[union-attr]  # no shape: pixels in memory

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {SPLITS}")
        return getattr(self, name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, for the record."""
        return {
            name: {c: int((self.split(name).y == i).sum()) for i, c in enumerate(self.class_names)}
            for name in SPLITS
        }

    def fingerprint(self) -> str:
        """A short content hash of every split's pixels and labels."""
        return self.digest if self.digest is not None else self._content_hash

    @functools.cached_property
    def _content_hash(self) -> str:
        """Hashed once per object (a sweep asks a few times a trial; 450 MB of 224 px photos
        take about a second): a `dataclasses.replace` copy is a new object and hashes anew."""
        digest = hashlib.sha256()
        for name in SPLITS:
            split = self.split(name)
            digest.update(np.ascontiguousarray(split.x).tobytes())
            digest.update(np.ascontiguousarray(split.y).tobytes())
        return digest.hexdigest()[:16]

    def sample(self, n: int, split: str = "val") -> np.ndarray:
        """The first `n` images of a split as float32 raw pixels (a model signature's example)."""
        part = self.split(split)
        if part.x is not None:
            return np.asarray(part.x[:n], dtype=np.float32)
        assert self.decoder is not None
        return np.stack([self.decoder(f) for f in part.files[:n]]).astype(np.float32)

    def class_weight(self) -> dict[int, float]:
        """Balanced class weights from the training split: n / (classes * count of the class)."""
        counts = np.bincount(self.train.y, minlength=self.num_classes).astype(float)
        total = counts.sum()
        return {
            i: float(total / (self.num_classes * c)) if c else 0.0 for i, c in enumerate(counts)
        }

    def describe(self) -> dict[str, Any]:
        """What the run records about the data: source, shape, classes, counts, fingerprint."""
        return {
            "source": self.source,
            **self.info,
            "image_shape": list(self.image_shape),
            "class_names": list(self.class_names),
            "counts": self.counts(),
            "sizes": {name: len(self.split(name)) for name in SPLITS},
            "fingerprint": self.fingerprint(),
        }


def train_plus_val(data: ImageData) -> ImageData:
    """`data` with the validation images added to the training split (test untouched): what
    `final.retrain` trains on. Soft targets (distillation) follow their images when both splits
    have them. Here, not in the final stage, because a worker process grows its own copy
    (experiments/data/shared.py), so the sweep process never holds one."""
    train, val = data.train, data.val
    pixels = None if train.x is None else np.concatenate([train.x, val.x])  # None: decoded files
    soft = None
    if train.soft is not None and val.soft is not None:
        soft = np.concatenate([train.soft, val.soft])
    grown = Split(
        pixels, np.concatenate([train.y, val.y]), train.files + val.files, soft, (train, val)
    )
    return dataclasses.replace(data, train=grown)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both fractions in (0, 1) with room left for training images."""
    for name, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UserInputError(f"{name}={value} must be a fraction strictly between 0 and 1.")
    if val_fraction + test_fraction >= 1.0:
        raise UserInputError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no "
            "training images; their sum must be below 1."
        )


def check_max_per_class(value: object) -> int | None:
    """`data.max_per_class`: a whole number of 2 or more (a class needs images in two splits)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise UserInputError(
            f"data.max_per_class={value!r} must be a whole number of 2 or more, or null for every "
            "image."
        )
    return value


def per_class_sample(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `limit` items per class, a seeded random choice, in ascending order.

    Classes are drawn in label order, so one seed picks the same items for every source.
    """
    keep = [
        rng.choice(members, size=min(int(limit), len(members)), replace=False)
        for members in (np.flatnonzero(labels == label) for label in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def stratified_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Split into train / validation / test with the class balance kept in each."""
    check_fractions(val_fraction, test_fraction)
    x_rest, x_test, y_rest, y_test = holdout(x, y, test_fraction, seed, "data.test_fraction")
    x_train, x_val, y_train, y_val = holdout(
        x_rest, y_rest, val_fraction / (1.0 - test_fraction), seed, "data.val_fraction"
    )
    return Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test)


def holdout(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One stratified cut: (x_keep, x_held, y_keep, y_held); too few images is a user error."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed)
    except ValueError as err:
        counts = np.bincount(np.asarray(y).astype(int))
        raise UserInputError(
            f"cannot hold out {name}={fraction:.3g} of {len(y)} images with every class in both "
            f"parts (smallest class: {counts[counts > 0].min()} images): {err}. Add images, "
            "lower the fraction, or raise data.max_per_class."
        ) from err
