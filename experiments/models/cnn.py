"""`model=cnn`: the seed's Sequential CNN, its depth, width and regularisation set by config."""

from __future__ import annotations

import keras
from omegaconf import DictConfig


def build_cnn(cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The seed's Sequential CNN: conv blocks, Flatten, Dropout, Dense, softmax."""
    layers: list[keras.layers.Layer] = [
        keras.Input(shape=input_shape),
        keras.layers.Rescaling(1.0 / 255.0),
    ]
    size = min(input_shape[:2])
    for block in range(int(cfg.conv_blocks)):
        filters = int(int(cfg.filters) * int(cfg.filter_growth) ** block)
        layers.append(
            keras.layers.Conv2D(filters, int(cfg.kernel_size), padding="same", activation="relu")
        )
        if cfg.batch_norm:
            layers.append(keras.layers.BatchNormalization())
        if size >= 2:  # pool while there is something left to pool
            layers.append(keras.layers.MaxPooling2D(2))
            size //= 2
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dropout(float(cfg.dropout)),
        keras.layers.Dense(int(cfg.dense_units), activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ]
    return keras.Sequential(layers, name="cnn")
