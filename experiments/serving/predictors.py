"""Load a saved classifier in any of the forms sweeplab writes, behind one predict function.

Forms: a Keras file (.keras), a TF SavedModel folder, a TFLite file (.tflite: float32, float16 or
int8, all with float32 input and output, run by LiteRT's interpreter), or a downloaded MLflow model
folder (a Keras model or the registered champion, both of which hold a .keras file).
Each takes raw pixels (N, H, W, C) float32 in [0, 255] and returns class probabilities; exports and
the champion take any height and width (they resize inside), a trial's model its training size. Class
names come from a `class_names.json` inside the model folder or next to the model (file or folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.errors import UserInputError

BATCH = 64


@dataclass
class Predictor:
    """A loaded model: raw pixels in, probabilities out."""

    predict: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int | None, int | None, int]  # (height, width, channels); None: any
    class_names: list[str] | None

    def labels(self, count: int) -> list[str]:
        """Class names, or the output indices as text when the model came without them."""
        return list(self.class_names) if self.class_names else [str(i) for i in range(count)]


def load_predictor(path: Path) -> Predictor:
    """The model at `path`, in whichever form it is; a file that is there but does not load (a
    junk saved_model.pb, a truncated .keras) is a UserInputError naming it, not a traceback."""
    try:
        return _load(Path(path).expanduser())
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - TensorFlow, Keras and LiteRT raise many kinds
        raise UserInputError(
            f"the model at {str(path)!r} could not be loaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else 'no detail'}); pass a .keras or "
            ".tflite file or a SavedModel folder written by a sweep (final.export), or a "
            "models:/NAME@ALIAS URI."
        ) from err


def _load(path: Path) -> Predictor:
    """The model at `path` by its form (a folder: SavedModel or MLflow model; a file: by suffix)."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return _saved_model(path)
        if (path / "MLmodel").exists():
            found = sorted(path.rglob("*.keras"))
            if found:
                return _keras(found[0], _class_names(path, recursive=True))
            raise UserInputError(
                f"the MLflow model in {str(path)!r} holds no Keras model (.keras file); "
                "sweeplab predicts with the models its sweeps log and register."
            )
    elif path.is_file():
        if path.suffix == ".keras":
            return _keras(path, _class_names(path.parent))
        if path.suffix == ".tflite":
            return _tflite(path)
    elif not path.exists():
        raise UserInputError(
            f"model {str(path)!r} does not exist; pass a models:/NAME@ALIAS or runs:/ URI, a "
            ".keras or .tflite file, or a SavedModel folder."
        )
    raise UserInputError(
        f"model {str(path)!r} is not a model sweeplab can load; accepted: a .keras file, a "
        ".tflite file, a SavedModel folder (with saved_model.pb) or an MLflow model folder "
        "(with MLmodel), or a models:/ or runs:/ URI."
    )


def _class_names(*folders: Path, recursive: bool = False) -> list[str] | None:
    """The first `class_names.json` in the folders (searched below them when recursive)."""
    for folder in folders:
        found = (
            sorted(folder.rglob("class_names.json")) if recursive else [folder / "class_names.json"]
        )
        found = [f for f in found if f.is_file()]
        if found:
            return [str(c) for c in json.loads(found[0].read_text())]
    return None


def _keras(path: Path, class_names: list[str] | None) -> Predictor:
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a bad file
        raise UserInputError(
            f"{str(path)!r} cannot be loaded as a Keras model ({type(err).__name__}: {err})."
        ) from err
    _, height, width, channels = model.input_shape

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=BATCH, verbose=0))

    return Predictor(predict, (height, width, channels), class_names)


def _saved_model(path: Path) -> Predictor:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if hasattr(loaded, "serve"):
        function = loaded.serve
        spec = function.input_signature[0]
    else:
        function = loaded.signatures["serving_default"]
        spec = next(iter(function.structured_input_signature[1].values()))

    def predict(x: np.ndarray, _keep=loaded) -> np.ndarray:  # _keep: the functions' variables
        outputs = [function(tf.constant(x[i : i + BATCH])) for i in range(0, len(x), BATCH)]
        outputs = [next(iter(o.values())) if isinstance(o, dict) else o for o in outputs]
        return np.concatenate([np.asarray(o) for o in outputs])

    _, height, width, channels = spec.shape.as_list()
    return Predictor(predict, (height, width, channels), _class_names(path, path.parent))


def _tflite(path: Path) -> Predictor:
    # LiteRT (ai-edge-litert): tf.lite.Interpreter's successor, which TensorFlow says it will
    # delete; the same runtime that phones and boards run a .tflite file with.
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as err:
        raise UserInputError(f"{str(path)!r} is not a TFLite model ({err}).") from err
    source = interpreter.get_input_details()[0]
    _, height, width, channels = (
        None if int(v) < 0 else int(v) for v in source.get("shape_signature", source["shape"])
    )

    def predict(x: np.ndarray) -> np.ndarray:
        rows = []
        for image in x:  # one at a time: a fixed batch of 1 is what TFLite runtimes expect
            if tuple(source["shape"]) != (1, *image.shape):  # dynamic height and width
                interpreter.resize_tensor_input(source["index"], [1, *image.shape])
                interpreter.allocate_tensors()
                source.update(interpreter.get_input_details()[0])
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
        return np.stack(rows)

    interpreter.allocate_tensors()
    # channels: fixed in an image model's input signature, never -1 (None)
    return Predictor(predict, (height, width, channels), _class_names(path.parent))  # type: ignore[arg-type]
