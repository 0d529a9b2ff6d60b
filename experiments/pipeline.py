"""tf.data input pipelines from in-memory splits."""

from __future__ import annotations

import tensorflow as tf

from experiments.data import Split


def to_dataset(split: Split, batch_size: int, *, training: bool, seed: int) -> tf.data.Dataset:
    """Batches of (images, labels); shuffled each epoch (seeded) when training."""
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
