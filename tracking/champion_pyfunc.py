"""The registered champion as an MLflow pyfunc model, logged with MLflow's "models from code".

MLflow copies this file into the model and runs it when the model is loaded (`mlflow.pyfunc.
load_model`, `mlflow models serve`), so it must stand alone: it imports only mlflow, keras, numpy
and pandas, never sweeplab. Why a pyfunc and not the Keras flavor: the answer carries the class
names (a served model's caller gets labels, not output indices), and `mlflow.keras.log_model`
fails when given an input example in MLflow 3.17, while `mlflow.pyfunc.log_model` stores one.

Input: raw pixels, float32 (N, height, width, channels) in [0, 255]; the Keras model rescales.
Output: one row per image: label, class_index, probability (of that label), probabilities (all
classes, in the order of the model's class names).
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def prediction_frame(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """The pyfunc output for a batch of class probabilities."""
    probabilities = np.asarray(probabilities, dtype="float64")
    index = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "label": [class_names[i] for i in index],
            "class_index": index.astype("int64"),
            "probability": probabilities.max(axis=1),
            "probabilities": [row.tolist() for row in probabilities],
        }
    )


class KerasImageClassifier(PythonModel):
    """Loads the model's `keras_model` and `class_names` artifacts; predicts labels."""

    def load_context(self, context) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        with open(context.artifacts["class_names"]) as handle:
            self.class_names = [str(name) for name in json.load(handle)]

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if isinstance(model_input, dict):  # a named tensor input: {"name": array}
            (model_input,) = model_input.values()
        images = np.asarray(model_input, dtype="float32")
        probabilities = self.model.predict(images, batch_size=64, verbose=0)
        return prediction_frame(probabilities, self.class_names)


mlflow.models.set_model(KerasImageClassifier())
