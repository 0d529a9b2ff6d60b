"""`model=branched`: the seed's multi-branch functional model.

Parallel convolution branches see the same image with different kernel sizes (small kernels for
strokes, large ones for shapes); their feature maps are concatenated along the channels and
classified by dense layers. Every branch pools the same number of times with 'same' padding, so the
maps line up for the concatenation at any input size.
"""

from __future__ import annotations

import keras
from omegaconf import DictConfig

from experiments.errors import UserInputError


def branch_kernel_sizes(cfg: DictConfig) -> list[int]:
    """The kernel size of each of the `model.branches` branches."""
    branches, kernels = int(cfg.branches), [int(k) for k in cfg.kernel_sizes]
    if branches < 1 or branches > len(kernels):
        raise UserInputError(
            f"model.branches={branches} needs 1 to {len(kernels)} branches: branch i uses "
            f"model.kernel_sizes[i] and model.kernel_sizes={kernels} has {len(kernels)}. Add "
            "kernel sizes or lower model.branches."
        )
    if any(k < 1 for k in kernels[:branches]):
        raise UserInputError(f"model.kernel_sizes={kernels} must all be 1 or more.")
    return kernels[:branches]


def build_branched(
    cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Input -> N parallel conv branches -> concatenate -> Flatten -> dense layers -> softmax."""
    kernels = branch_kernel_sizes(cfg)
    blocks = int(cfg.conv_blocks)
    inputs = keras.Input(shape=input_shape)
    scaled = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    pools = 0
    size = min(input_shape[:2])
    while pools < blocks and size >= 2:  # pool while there is something left to pool
        pools, size = pools + 1, size // 2
    outputs = []
    for kernel in kernels:
        x = scaled
        for block in range(blocks):
            filters = int(cfg.filters) * int(cfg.filter_growth) ** block
            x = keras.layers.Conv2D(
                filters, kernel, padding="same", activation="relu", name=f"k{kernel}_conv{block}"
            )(x)
            if cfg.batch_norm:
                x = keras.layers.BatchNormalization(name=f"k{kernel}_bn{block}")(x)
            if block < pools:
                x = keras.layers.MaxPooling2D(2, name=f"k{kernel}_pool{block}")(x)
        outputs.append(x)
    x = keras.layers.Concatenate(name="branches")(outputs) if len(outputs) > 1 else outputs[0]
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(float(cfg.dropout))(x)
    for index in range(int(cfg.dense_layers)):
        x = keras.layers.Dense(int(cfg.dense_units), activation="relu", name=f"dense{index}")(x)
    outputs_ = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs_, name="branched")
