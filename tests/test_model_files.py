"""A kept trial's model folder, written in two halves (the worker's Keras files, the sweep's
MLflow files), is the folder `mlflow.keras.save_model` writes: the same files, the same `MLmodel`
apart from its creation stamp, and it loads with `mlflow.keras` and `mlflow.pyfunc`."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow.keras
import mlflow.pyfunc
import numpy as np
import yaml
from sklearn.datasets import load_digits

from experiments.serving.keras_files import save_keras_files
from tracking.mlflow_tracker import _model_requirements
from tracking.model_files import complete_model_folder, keras_signature

STAMPS = ("utc_time_created", "model_uuid", "model_size_bytes")


def trained_model() -> tuple[keras.Model, np.ndarray]:
    """A small CNN trained for one epoch on the real 8x8 digit scans."""
    digits = load_digits()
    x = (digits.images[..., None] * (255 / 16)).astype("float32")[:400]
    y = digits.target[:400]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, x


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_two_halves_make_the_folder_mlflow_writes(tmp_path) -> None:
    model, x = trained_model()
    requirements = _model_requirements()
    by_mlflow, by_halves = tmp_path / "mlflow", tmp_path / "halves"
    mlflow.keras.save_model(
        model, str(by_mlflow), signature=keras_signature(model, x), pip_requirements=requirements
    )
    files = save_keras_files(model, x[:1], by_halves)
    complete_model_folder(by_halves, files, requirements)

    assert files_of(by_halves) == files_of(by_mlflow)
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml", "data/keras_module.txt"):
        assert (by_halves / name).read_text() == (by_mlflow / name).read_text(), name
    ours, theirs = (yaml.safe_load((f / "MLmodel").read_text()) for f in (by_halves, by_mlflow))
    assert set(ours) == set(theirs)
    assert {k: v for k, v in ours.items() if k not in STAMPS} == {
        k: v for k, v in theirs.items() if k not in STAMPS
    }
    assert ours["model_size_bytes"] > 0

    expected = model.predict(x, verbose=0)
    loaded = mlflow.keras.load_model(str(by_halves)).predict(x, verbose=0)
    served = np.asarray(mlflow.pyfunc.load_model(str(by_halves)).predict(x))
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
