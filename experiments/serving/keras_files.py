"""The Keras half of a kept trial's MLflow model folder, written by the worker that trained it.

MLflow's Keras flavour lays a model out as `data/model.keras` and `data/keras_module.txt`, with
`MLmodel` and the environment files beside them. A worker writes only the Keras half (Keras's
own save) and says what the other half needs (`KerasFiles`); the sweep process, which has MLflow
imported anyway, writes the rest (`tracking.model_files.complete_model_folder`). So a worker
never imports MLflow: that import and MLflow's first-save work (about 1 s of CPU) used to run
beside a worker's first trial and slowed it by about 0.6 s on a 2-core machine.

TensorFlow-free at import: the sweep process unpickles `KerasFiles` from a worker's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FOLDER = "data"  # MLflow's Keras flavour: data/model.keras, data/keras_module.txt
MODEL_FILE = "model.keras"
MODULE_FILE = "keras_module.txt"


@dataclass(frozen=True)
class KerasFiles:
    """What the MLflow half of the folder needs to know about the saved model."""

    keras_version: str
    keras_backend: str
    input_shape: tuple[int | None, ...]  # one raw image, without the batch axis
    output_shape: tuple[int | None, ...]  # the class scores, without the batch axis


def save_keras_files(model: Any, sample: Any, folder: str | Path) -> KerasFiles:
    """Save `model` (a keras.Model) where MLflow's Keras flavour keeps it inside `folder`."""
    import keras

    data = Path(folder) / DATA_FOLDER
    data.mkdir(parents=True)
    (data / MODULE_FILE).write_text(keras.__name__)
    model.save(data / MODEL_FILE)
    return KerasFiles(
        keras.__version__,
        keras.backend.backend(),
        tuple(int(d) for d in sample.shape[1:]),
        tuple(None if d is None else int(d) for d in model.output_shape[1:]),
    )
