"""`model=transfer`: a `keras.applications` backbone under a small classification head.

The model takes raw [0, 255] pixels of any size and channel count, like every sweeplab model:
resizing to `model.input_size`, grayscale to 3 channels and the backbone's own `preprocess_input`
are layers inside it, so an exported model is called on raw images. The backbone is one nested
layer named `backbone`, which the two-phase schedule (experiments/training/schedule.py) freezes and
partly unfreezes.
"""

from __future__ import annotations

import keras
from omegaconf import DictConfig

from experiments.errors import UserInputError
from experiments.models.backbones import (
    HEAD_POOLINGS,
    Backbone,
    check_backbone,
    input_size,
    resolve_weights,
)

BACKBONE_LAYER = "backbone"  # the nested backbone's name, which the schedule looks up

# The head's global pooling; its names are HEAD_POOLINGS, which the up-front check (no Keras) uses.
POOLINGS = dict(
    zip(
        HEAD_POOLINGS,
        (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D),
        strict=True,
    )
)


def preprocess_layer(backbone: Backbone) -> keras.layers.Layer | None:
    """A saved-with-the-model layer equal to the backbone's `preprocess_input` on [0, 255].

    A `Rescaling` layer instead of a `Lambda` around the Keras function: it serializes without
    `safe_mode=False`, and tests check it against the real `preprocess_input`.
    """
    if backbone.preprocess == "tf":  # mobilenet, mobilenet_v2, resnet_v2, inception_v3
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    return None  # efficientnet: preprocess_input is the identity; the network rescales itself


def build_backbone(cfg: DictConfig, size: int) -> keras.Model:
    """The headless backbone at size x size x 3, with the configured weights."""
    backbone = check_backbone(cfg, size)
    weights = resolve_weights(cfg, size)
    constructor = getattr(keras.applications, backbone.constructor)
    options: dict = {"alpha": float(cfg.alpha)} if backbone.alphas else {}
    try:
        model = constructor(
            input_shape=(size, size, 3),
            include_top=False,
            weights=weights,
            name=BACKBONE_LAYER,
            **options,
        )
    except ValueError as err:  # a weights file that does not fit this architecture
        raise UserInputError(
            f"model.weights={cfg.weights!r} ({weights}) does not load into "
            f"{backbone.name} at {size}x{size} with its settings: {err}"
        ) from err
    _without_dropout(model)
    return model


def _without_dropout(backbone: keras.Model) -> None:
    """Turn the backbone's own dropout (EfficientNet's stochastic depth) off for good.

    `backbone(x, training=False)` alone does not do it in Keras 3: a Functional model passes the
    `training=True` of `fit` to every layer it runs, overriding the value given when the graph
    was built (keras-team/keras#20285). BatchNormalization is safe anyway (Keras 3 runs a frozen
    BN layer in inference mode, and the schedule keeps BN frozen in both phases); dropout is not,
    so its rate is set to 0, which is also what the saved model records.
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0


def build_transfer(
    cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Raw pixels -> resize -> 3 channels -> preprocess -> backbone -> pooling -> head."""
    size = input_size(cfg, input_shape[0])
    pooling = POOLINGS.get(str(cfg.pooling))
    if pooling is None:
        raise UserInputError(
            f"model.pooling={cfg.pooling!r}; accepted: {', '.join(POOLINGS)} (global pooling of "
            "the backbone's last feature map)."
        )
    if input_shape[-1] not in (1, 3):
        raise UserInputError(
            f"the data has {input_shape[-1]} channels; transfer backbones take 1 (grayscale, "
            "repeated to 3) or 3."
        )
    backbone = build_backbone(cfg, size)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    if tuple(input_shape[:2]) != (size, size):
        x = keras.layers.Resizing(size, size, name="resize")(x)
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    preprocess = preprocess_layer(check_backbone(cfg, size))  # cheap: no Keras, no files
    if preprocess is not None:
        x = preprocess(x)
    # training=False, as in the keras-io fine-tuning guide: the backbone runs in inference mode
    # (BN keeps its ImageNet statistics, no dropout) in both phases. Keras 3 lets `fit` override
    # this inside a Functional model, hence also `_without_dropout` in `build_backbone`.
    x = backbone(x, training=False)
    x = pooling(name="pool")(x)
    if cfg.get("dense_units"):
        x = keras.layers.Dense(int(cfg.dense_units), activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(float(cfg.dropout), name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_out")(x)
    return keras.Model(inputs, outputs, name=f"transfer_{cfg.backbone}")
