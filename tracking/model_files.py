"""The MLflow half of a trained model's folder, written by the sweep process without Keras.

A worker saves a kept model's Keras files (`experiments.serving.keras_files`); this module adds
what MLflow's Keras flavour (`mlflow.keras.save_model`) writes around them, `MLmodel` (flavours,
signature, size) and the environment files, so that the folder loads with `mlflow.keras` and
`mlflow.pyfunc` like one MLflow saved itself. `mlflow.keras` cannot be used here: it imports
Keras, and the sweep process imports no TensorFlow while its workers train. The layout is
MLflow 3.17's; `tests/test_model_files.py` compares it file by file with `mlflow.keras.save_model`
so that an MLflow upgrade that changes it fails there, not in a user's registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow import pyfunc
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.types import Schema, TensorSpec
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _generate_mlflow_version_pinning,
    _mlflow_conda_env,
    _PythonEnv,
)
from mlflow.utils.file_utils import get_total_file_size

from experiments.serving.keras_files import DATA_FOLDER, KerasFiles

FLAVOR = "keras"  # mlflow.keras.FLAVOR_NAME
LOADER_MODULE = "mlflow.keras"


def signature_of(
    input_shape: Sequence[int | None], output_shape: Sequence[int | None]
) -> ModelSignature:
    """Raw float32 images in, class probabilities out (one image's shapes, no batch axis).

    What `infer_signature(sample, model.predict(sample))` gives for these models, without the
    predict call (a fresh trace of the model, ~0.1-0.3 s a trial).
    """
    # MLflow annotates a shape as ints; a None (any height or width) is accepted and kept.
    image = Schema([TensorSpec(np.dtype("float32"), (-1, *input_shape))])  # type: ignore[arg-type]
    scores = Schema([TensorSpec(np.dtype("float32"), (-1, *output_shape))])  # type: ignore[arg-type]
    return ModelSignature(inputs=image, outputs=scores)


def keras_signature(model: Any, sample: np.ndarray) -> ModelSignature:
    """The signature of a keras.Model (trained in this process) for inputs like `sample`."""
    return signature_of(sample.shape[1:], model.output_shape[1:])


def complete_model_folder(folder: str | Path, files: KerasFiles, requirements: list[str]) -> None:
    """Write `MLmodel` and the environment files beside the Keras files a worker saved.

    The same steps, in the same order, as `mlflow.keras.save_model(..., signature=...,
    pip_requirements=requirements)` after its `model.save`; MLflow's check of the requirements
    against the installed packages is skipped: they are read from the installed packages.
    """
    folder = Path(folder)
    model = Model()
    model.signature = signature_of(files.input_shape, files.output_shape)
    model.add_flavor(
        FLAVOR,
        data=DATA_FOLDER,
        keras_version=files.keras_version,
        keras_backend=files.keras_backend,
        save_exported_model=False,
    )
    pyfunc.add_to_model(
        model,
        loader_module=LOADER_MODULE,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    if size := get_total_file_size(str(folder)):
        model.model_size_bytes = size
    model.save(str(folder / MLMODEL_FILE_NAME))
    pins = [_generate_mlflow_version_pinning(), *requirements]
    conda_env = _mlflow_conda_env(additional_pip_deps=pins, install_mlflow=False)
    with open(folder / _CONDA_ENV_FILE_NAME, "w") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    (folder / _REQUIREMENTS_FILE_NAME).write_text("\n".join(pins))
    _PythonEnv.current().to_yaml(str(folder / _PYTHON_ENV_FILE_NAME))
