"""Export a trained model as a Keras file, a TensorFlow SavedModel and/or a TFLite flatbuffer.

All the preprocessing travels inside: `serving_model` puts a Resizing layer (bilinear, as the
training images were resized) in front of the trained model, which rescales (and, for backbones,
preprocesses) itself. So every export takes raw pixels in [0, 255] of any size, float32, shape
(batch, height, width, channels) with one size per batch, and returns class probabilities.
`class_names.json` (the label of each output index) is written next to them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.errors import UserInputError

if TYPE_CHECKING:
    import keras

FORMATS = ("keras", "saved_model", "tflite")
FILE_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite"}


def check_formats(formats: list[str]) -> list[str]:
    """The requested formats, in a fixed order; a UserInputError names an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserInputError(
            f"final.export={list(formats)} names unknown export format(s) {unknown}; accepted: "
            f"{', '.join(FORMATS)} (e.g. final.export=[keras,tflite])."
        )
    return [f for f in FORMATS if f in formats]


def serving_model(model: keras.Model) -> keras.Model:
    """`model` behind a Resizing layer to its input size: takes images of any height and width."""
    import keras

    _, height, width, channels = model.input_shape
    if height is None or width is None:  # already takes any size
        return model
    images = keras.Input((None, None, channels), name="images")
    resized = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")(images)
    # training=False: inference only (dropout and batch-norm updates stay out of the graph).
    return keras.Model(images, model(resized, training=False), name=f"{model.name}_serving")


def export_model(
    model: keras.Model, formats: list[str], out_dir: Path, class_names: list[str]
) -> dict[str, Path]:
    """Write each requested format of `serving_model(model)` under `out_dir` (replaced).

    Returns {format: path}.
    """
    formats = check_formats(formats)
    model = serving_model(model)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    written: dict[str, Path] = {}
    (out_dir / "class_names.json").write_text(json.dumps(list(class_names)))
    if "keras" in formats:
        written["keras"] = out_dir / FILE_NAMES["keras"]
        model.save(written["keras"])
    if "saved_model" in formats:
        written["saved_model"] = export_saved_model(model, out_dir / FILE_NAMES["saved_model"])
    if "tflite" in formats:
        written["tflite"] = out_dir / FILE_NAMES["tflite"]
        if "saved_model" in written:
            convert_to_tflite(written["saved_model"], written["tflite"])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                saved = export_saved_model(model, Path(tmp) / "saved_model")
                convert_to_tflite(saved, written["tflite"])
    return written


def export_saved_model(model: keras.Model, path: Path) -> Path:
    """A TF SavedModel with a `serve` endpoint (and serving_default signature)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def convert_to_tflite(saved_model: Path, path: Path) -> Path:
    """Convert a SavedModel to float32 TFLite (no quantization: same predictions as Keras)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    path.write_bytes(converter.convert())
    return path
