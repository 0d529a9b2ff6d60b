"""Cutting a transfer model where its frozen part ends, into sub-models that share its layers.

The feature cache (experiments/training/feature_cache.py) trains only what lies above a cut and
feeds it activations computed once. A cut must be a tensor that every path from the image to the
output crosses: MobileNet v1 is a chain, so any layer's input will do, but a residual network
(ResNet, MobileNetV2, EfficientNet) has skip connections around its blocks, and cutting inside a
block would leave the shortcut's tensor out. `single_tensor_cuts` finds the tensors that are the
only one alive between two layers of the backbone's graph.

Every sub-model built here is a Keras Functional model over the whole model's own layer objects
(Keras clones only the graph nodes), so training a sub-model trains the whole model's variables:
there is nothing to copy back, and the whole raw-pixel model is, by construction, what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from experiments.models.transfer import BACKBONE_LAYER


@dataclass(frozen=True)
class Cut:
    """A tensor of the backbone's graph that every path crosses.

    `after` is the index in `backbone.layers` of the last layer below the cut: the cut lies
    between layers `after` and `after + 1`. `name` (the layer that produces the tensor, or the
    input) goes into the cache key.
    """

    after: int
    name: str
    tensor: keras.KerasTensor


def single_tensor_cuts(backbone: keras.Model) -> list[Cut]:
    """Every place between two consecutive layers where exactly one tensor is alive, bottom up.

    `backbone.layers` is in topological order. After layer i, a tensor is alive when it was made
    by a layer at or below i and is read by a layer above i (or is the model's output); where
    only one is alive, every path crosses it.
    """
    graph = {id(node) for nodes in backbone._nodes_by_depth.values() for node in nodes}
    layers = backbone.layers
    made: dict[int, int] = {}  # tensor id -> index of its producing layer
    last_read: dict[int, int] = {}  # tensor id -> index of its last reader
    tensors: dict[int, keras.KerasTensor] = {}
    producer: dict[int, str] = {}
    for index, layer in enumerate(layers):
        node = next(n for n in layer._inbound_nodes if id(n) in graph)
        for tensor in node.input_tensors:
            last_read[id(tensor)] = index
        for tensor in node.output_tensors:
            made[id(tensor)] = index
            tensors[id(tensor)] = tensor
            producer[id(tensor)] = layer.name
    for tensor in backbone.outputs:
        last_read[id(tensor)] = len(layers)
    cuts = []
    for index in range(len(layers)):
        alive = [t for t, at in made.items() if at <= index < last_read.get(t, -1)]
        if len(alive) == 1:
            cuts.append(Cut(index, producer[alive[0]], tensors[alive[0]]))
    return cuts


def cut_below(backbone: keras.Model, first_open: int) -> Cut:
    """The highest single-tensor cut at or below layer index `first_open` (the first trainable
    layer; `len(backbone.layers)` when none is): the cut's input to the trainable part."""
    below = [cut for cut in single_tensor_cuts(backbone) if cut.after < first_open]
    return below[-1]  # index 0 (the input layer) is always a cut


def first_trainable(backbone: keras.Model) -> int:
    """Index in `backbone.layers` of the lowest trainable layer with weights; len if none."""
    for index, layer in enumerate(backbone.layers):
        if layer.trainable and layer.trainable_weights:
            return index
    return len(backbone.layers)


def backbone_input(model: keras.Model) -> keras.KerasTensor:
    """The whole model's tensor that enters the backbone (after resize and preprocessing)."""
    backbone = model.get_layer(BACKBONE_LAYER)
    graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    node = next(n for n in backbone._inbound_nodes if id(n) in graph)
    return node.input_tensors[0]


def backbone_output(model: keras.Model) -> keras.KerasTensor:
    """The whole model's tensor that leaves the backbone (the head's input)."""
    backbone = model.get_layer(BACKBONE_LAYER)
    graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    node = next(n for n in backbone._inbound_nodes if id(n) in graph)
    return node.output_tensors[0]


def extractor(model: keras.Model, cuts: list[Cut]) -> keras.Model:
    """Raw pixels -> the activations at each cut, through the frozen layers (inference only)."""
    backbone = model.get_layer(BACKBONE_LAYER)
    bottom = keras.Model(backbone.inputs, [cut.tensor for cut in cuts], name="frozen_bottom")
    outputs = bottom(backbone_input(model), training=False)
    return keras.Model(model.inputs, outputs, name="feature_extractor")


def head_model(model: keras.Model) -> keras.Model:
    """Backbone output -> class probabilities: the head layers of `model` (phase 1)."""
    return keras.Model(backbone_output(model), model.output, name="head")


def upper_model(model: keras.Model, cut: Cut) -> keras.Model:
    """Activations at `cut` -> class probabilities: the backbone above the cut, then the head."""
    backbone = model.get_layer(BACKBONE_LAYER)
    if cut.after == len(backbone.layers) - 1:  # the backbone's output: nothing of it above
        return head_model(model)
    top = keras.Model(cut.tensor, backbone.output, name="backbone_top")
    head = head_model(model)
    inputs = keras.Input(shape=tuple(cut.tensor.shape[1:]), name="cut_activations")
    return keras.Model(inputs, head(top(inputs, training=False)), name="upper")
