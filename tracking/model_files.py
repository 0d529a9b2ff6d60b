"""A trained model as MLflow model files, written by the worker process that trained it.

The worker (experiments/worker.py) imports this module in a background thread once it is ready,
beside its first trial, so the imports below (MLflow, its Keras flavour and the pyfunc modules
that the first save would otherwise import: 1-3 s of CPU in all) are not on the first kept
trial's critical path. No store is touched here: the sweep logs the folder
(`TrialRun.log_model_files`).
"""

from __future__ import annotations

import keras
import mlflow.keras
import mlflow.pyfunc  # noqa: F401 - imported by the first save_model otherwise (0.35 s)
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from tracking.mlflow_tracker import _model_requirements


def keras_signature(model: keras.Model, sample: np.ndarray) -> ModelSignature:
    """Raw float32 images in, class probabilities out, read off the model's shapes.

    What `infer_signature(sample, model.predict(sample))` gives for these models, without the
    predict call (a fresh trace of the model, ~0.1-0.3 s a trial).
    """
    image = Schema([TensorSpec(np.dtype("float32"), (-1, *sample.shape[1:]))])
    scores = Schema([TensorSpec(np.dtype("float32"), (-1, *model.output_shape[1:]))])
    return ModelSignature(inputs=image, outputs=scores)


def warm_up() -> None:
    """The first save's one-time work, done ahead (the worker runs it beside its first trial).

    MLflow checks a model's requirements against the installed packages on every save; the
    first check maps every installed distribution to its modules, 0.7 s here, then cached.
    """
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(_model_requirements())


def save_model_files(model: keras.Model, sample: np.ndarray, folder: str) -> None:
    """Save `model` as an MLflow Keras model folder with its signature."""
    mlflow.keras.save_model(
        model,
        folder,
        signature=keras_signature(model, sample),
        pip_requirements=_model_requirements(),
    )
