"""tf.data input pipelines for one split: shuffle (seeded), batch, cast, prefetch.

Three ways the pixels can be held (`data.cache`):
- memory: an array in RAM, gathered a batch at a time inside tf.data (no Python per batch);
- file: a read-only `np.memmap` of decoded images on disk, for sets larger than memory; batches
  of shuffled indices are gathered from it in one Python call per batch;
- none: file paths, decoded every epoch: a parallel, order-keeping `map` over batches of paths,
  each batch decoded by a thread pool.
Every pipeline is deterministic under its seed: the shuffle is seeded and maps keep their order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from experiments.data.splits import ImageData, Split


def dataset(
    data: ImageData, split: str, batch_size: int, *, training: bool, seed: int
) -> tf.data.Dataset:
    """Batches of (float32 raw images, int32 labels) of one split; shuffled each epoch if training.

    A split with soft targets yields float32 rows [label, probabilities] instead (`Split.targets`).
    """
    return split_dataset(
        data.split(split), data.image_shape, batch_size, training, seed, data.decoder
    )


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
    """From an in-memory split: shuffled indices, batched, then one gather + cast per batch.

    Gathering a whole batch at once keeps tf.data's per-image overhead out of the loop: measured
    as fast as slicing float32 arrays, with the pixels held as uint8 (a quarter of the memory).
    """
    return gathered(index_batches(len(split), batch_size, training, seed), split)


def index_batches(n: int, batch_size: int, training: bool, seed: int) -> tf.data.Dataset:
    """Batches of indices into a split of `n` items, in a new seeded order each epoch if training.

    The order of epoch k is that of the k-th iterator over this one object: pipelines that
    `gathered` builds on the same object (one per training phase) continue one sequence of
    epochs, as one pipeline reused by both phases does.
    """
    ds = tf.data.Dataset.range(n)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def gathered_from_numpy(indices: tf.data.Dataset, split: Split) -> tf.data.Dataset:
    """Like `gathered`, but each batch is taken from the NumPy array in one Python call.

    For large float arrays (cached activations: hundreds of MB), where `tf.constant` would first
    copy the whole array into a tensor, which took seconds per phase; a batch costs one copy.
    """
    images, labels = split.x, split.targets()
    assert images is not None

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(images[index], dtype=np.float32), labels[index]

    ds = indices.map(
        lambda idx: tf.numpy_function(gather, [idx], (tf.float32, _dtype(labels)), stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(_shaped(tuple(images.shape[1:]), labels)).prefetch(tf.data.AUTOTUNE)


def gathered(indices: tf.data.Dataset, split: Split) -> tf.data.Dataset:
    """(float32 x, int32 y) batches gathered from an in-memory split at `indices`' batches (y:
    float32 rows of label and soft targets when the split has `soft`, `Split.targets`)."""
    images, labels = tf.constant(split.x), tf.constant(split.targets())

    def gather(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(tf.gather(images, index), tf.float32), tf.gather(labels, index)

    ds = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _memmap_dataset(
    split: Split, shape: tuple[int, int, int], batch_size: int, training: bool, seed: int
) -> tf.data.Dataset:
    images, labels = split.x, split.targets()
    assert images is not None  # a memory-mapped split: its pixels are there

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(index)  # sequential reads from the file; the batch order does not matter
        return np.asarray(images[order], dtype=np.float32), labels[order]

    ds = tf.data.Dataset.range(len(split))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda idx: tf.numpy_function(gather, [idx], (tf.float32, _dtype(labels)), stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(_shaped(shape, labels)).prefetch(tf.data.AUTOTUNE)


def _decoded_dataset(
    split: Split,
    shape: tuple[int, int, int],
    batch_size: int,
    training: bool,
    seed: int,
    decoder: Callable[[str], np.ndarray],
) -> tf.data.Dataset:
    def decode(paths: np.ndarray) -> np.ndarray:
        return np.stack(list(_pool().map(lambda p: decoder(p.decode()), paths))).astype(np.float32)

    targets = split.targets()
    ds = tf.data.Dataset.from_tensor_slices((list(split.files), targets))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(  # one Python call per batch, its images decoded in threads
        lambda paths, y: (tf.numpy_function(decode, [paths], tf.float32, stateful=False), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(_shaped(shape, targets)).prefetch(tf.data.AUTOTUNE)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Threads that decode images (PIL releases the GIL while decoding)."""
    return ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 2))


def _dtype(targets: np.ndarray) -> tf.DType:
    """int32 for labels, float32 for rows of label and soft targets (`Split.targets`)."""
    return tf.as_dtype(targets.dtype)


def _shaped(shape: tuple[int, int, int], targets: np.ndarray) -> Callable:
    """numpy_function forgets static shapes; Keras needs them back (the targets' from `targets`:
    (None,) for labels, (None, 1 + classes) with soft targets)."""

    def set_shape(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.ensure_shape(x, (None, *shape))
        return x, tf.ensure_shape(y, (None, *targets.shape[1:]))

    return set_shape
