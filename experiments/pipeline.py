"""tf.data input pipelines for one split: shuffle (seeded), batch, cast, prefetch.

Three ways the pixels can be held (`data.cache`):
- memory: an array in RAM, sliced by tf.data itself (the fastest: no Python per batch);
- file: a read-only `np.memmap` of decoded images on disk, for sets larger than memory; batches
  of shuffled indices are gathered from it in one Python call per batch;
- none: file paths, decoded every epoch by a parallel, order-keeping `map`.
Every pipeline is deterministic under its seed: the shuffle is seeded and maps keep their order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from experiments.data import Split


def split_dataset(
    split: Split,
    shape: tuple[int, int, int],
    batch_size: int,
    training: bool,
    seed: int,
    decoder: Callable[[str], np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], int32 labels) from a split however it is held."""
    if split.x is None:
        assert decoder is not None, "a split without pixels needs a decoder"
        return _decoded_dataset(split, shape, batch_size, training, seed, decoder)
    if isinstance(split.x, np.memmap):
        return _memmap_dataset(split, shape, batch_size, training, seed)
    return to_dataset(split, batch_size, training=training, seed=seed)


def to_dataset(split: Split, batch_size: int, *, training: bool, seed: int) -> tf.data.Dataset:
    """From an in-memory split: slices are shuffled, batched, then cast to float32 per batch."""
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y.astype(np.int32)))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if split.x.dtype != np.float32:  # type: ignore[union-attr]
        ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _to_float(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(x, tf.float32), y


def _memmap_dataset(
    split: Split, shape: tuple[int, int, int], batch_size: int, training: bool, seed: int
) -> tf.data.Dataset:
    images, labels = split.x, split.y.astype(np.int32)

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(index)  # sequential reads from the file; the batch order does not matter
        return np.asarray(images[order], dtype=np.float32), labels[order]

    ds = tf.data.Dataset.range(len(split))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda idx: tf.numpy_function(gather, [idx], (tf.float32, tf.int32), stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(_shaped(shape)).prefetch(tf.data.AUTOTUNE)


def _decoded_dataset(
    split: Split,
    shape: tuple[int, int, int],
    batch_size: int,
    training: bool,
    seed: int,
    decoder: Callable[[str], np.ndarray],
) -> tf.data.Dataset:
    def decode(path: bytes) -> np.ndarray:
        return decoder(path.decode()).astype(np.float32)

    ds = tf.data.Dataset.from_tensor_slices((list(split.files), split.y.astype(np.int32)))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda path, y: (tf.numpy_function(decode, [path], tf.float32, stateful=False), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size).map(_shaped(shape)).prefetch(tf.data.AUTOTUNE)


def _shaped(shape: tuple[int, int, int]) -> Callable:
    """numpy_function forgets static shapes; Keras needs them back."""

    def set_shape(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.ensure_shape(x, (None, *shape))
        return x, tf.ensure_shape(y, (None,))

    return set_shape
