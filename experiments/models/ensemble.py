"""The average of several trained classifiers, as one Keras model that takes raw pixels.

An ensemble is what a sweep can ship for free: the final stage has already trained several
models of its best configs (the trials themselves, their re-evaluations on new seeds, the
retraining on train + validation), and their seeds disagree on many images. Averaging their
class probabilities cancels part of that noise (measured in docs/transfer.md "The shipped
model: an ensemble"). The result is an ordinary functional model, so testing, registering,
serving and every export treat it like a single one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def average_model(members: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of the members' softmax outputs.

    The members must take the same input (raw pixels of one shape) and predict the same classes.
    They are renamed member_0, member_1, ... because a functional model needs unique layer
    names and every trial's model carries its builder's name.
    """
    import keras

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
    shape = tuple(members[0].input_shape[1:])
    outputs = {tuple(m.output_shape[1:]) for m in members}
    if any(tuple(m.input_shape[1:]) != shape for m in members) or len(outputs) != 1:
        raise ValueError("the members of an ensemble must share their input and output shapes")
    images = keras.Input(shape, name="images")
    for number, member in enumerate(members):
        member.name = f"member_{number}"
    # training=False: inference only, as the members were tested (dropout off, batch-norm frozen).
    predictions = [member(images, training=False) for member in members]
    return keras.Model(images, keras.layers.Average(name="average")(predictions), name=name)
