"""Export a trained model as a Keras file, a TensorFlow SavedModel and/or TFLite flatbuffers.

All the preprocessing travels inside: `serving_model` puts a Resizing layer (bilinear, as the
training images were resized) in front of the trained model, which rescales (and, for backbones,
preprocesses) itself. So every export takes raw pixels in [0, 255] of any size, float32, shape
(batch, height, width, channels) with one size per batch, and returns class probabilities.
`class_names.json` (the label of each output index) is written next to them.

TFLite comes in three precisions: `tflite` (float32, the same predictions as Keras),
`tflite_float16` (weights stored as float16: about half the size, computed in float32) and
`tflite_int8` (post-training quantization: int8 weights and activations, calibrated on training
images, the few layers quantization hurts most kept float32; 0.37-0.45 of float32's size). The
quantized ones keep float32 input and output, so every
export is called the same way; the quantize / dequantize steps at the edges are two cheap ops.
All three keep the SavedModel's dynamic height and width (shape_signature [-1, -1, -1, C]):
a runtime resizes the input tensor to the image it is given, as `predictors._tflite` does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from experiments.errors import UserInputError
from experiments.serving.selective import selective_int8

if TYPE_CHECKING:
    import keras

FORMATS = ("keras", "saved_model", "tflite", "tflite_float16", "tflite_int8")
TFLITE_FORMATS = ("tflite", "tflite_float16", "tflite_int8")
FILE_NAMES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_int8": "model_int8.tflite",
}
# Calibration images for int8: TensorFlow's guide suggests ~100-500; more only costs time (each
# one runs through the float model once) and rarely moves the ranges.
CALIBRATION_LIMIT = 200


def check_formats(formats: list[str]) -> list[str]:
    """The requested formats, in a fixed order; a UserInputError names an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserInputError(
            f"final.export={list(formats)} names unknown export format(s) {unknown}; accepted: "
            f"{', '.join(FORMATS)} (e.g. final.export=[keras,tflite_int8])."
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


def calibration_images(
    images: np.ndarray | Iterable[np.ndarray] | None, limit: int = CALIBRATION_LIMIT
) -> np.ndarray:
    """Up to `limit` training images as float32 (N, H, W, C) raw pixels, for int8 calibration.

    Int8 quantization fixes each tensor's range from what these images produce, so they must look
    like what the export will be served (raw [0, 255] pixels, the training distribution) and must
    not be test images (the ranges would be tuned on the data that measures the export).
    `images` is an (N, H, W, C) array or an iterable of images (H, W, C) or batches (B, H, W, C);
    only the first `limit` images are read. None or no images raise a UserInputError.
    """
    taken = [] if images is None else list(islice(_single_images(images), limit))
    if not taken:
        raise UserInputError(
            "final.export asks for tflite_int8, but no calibration images were given (got "
            f"{'None' if images is None else 'an empty set'}); int8 quantization fixes each "
            "layer's range from training images, so pass the training split's raw [0, 255] pixels "
            "(an (N, H, W, C) array or an iterable of images, at least one), or choose "
            "tflite_float16 or tflite, which need none."
        )
    batch = np.stack([np.asarray(image, dtype="float32") for image in taken])
    if batch.ndim != 4:
        raise UserInputError(
            f"the calibration images for final.export=tflite_int8 have shape {batch.shape[1:]} "
            "each; accepted: images of shape (height, width, channels), raw [0, 255] pixels."
        )
    if float(batch.max()) <= 1.0:
        raise UserInputError(
            f"the calibration images for final.export=tflite_int8 lie in [{batch.min():.3g}, "
            f"{batch.max():.3g}], but exports take raw [0, 255] pixels (the model rescales "
            "inside); pass the training images before any scaling to [0, 1]."
        )
    return batch


def _single_images(images: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each image of an array, or of an iterable of images or batches, one at a time."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        yield from images
        return
    for item in images:
        item = np.asarray(item)
        if item.ndim == 4:
            yield from item
        else:
            yield item


def export_model(
    model: keras.Model,
    formats: list[str],
    out_dir: Path,
    class_names: list[str],
    calibration: np.ndarray | Iterable[np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write each requested format of `serving_model(model)` under `out_dir` (replaced).

    `calibration`: training images for `tflite_int8` (see `calibration_images`); checked before
    anything is written, so a bad call leaves an earlier export in `out_dir` as it was.
    Returns {format: path}.
    """
    formats = check_formats(formats)
    calibration_batch = calibration_images(calibration) if "tflite_int8" in formats else None
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
    tflite = [f for f in formats if f in TFLITE_FORMATS]
    if tflite:
        with tempfile.TemporaryDirectory() as tmp:  # one SavedModel feeds every TFLite precision
            saved = written.get("saved_model") or export_saved_model(
                model, Path(tmp) / "saved_model"
            )
            for fmt in tflite:
                written[fmt] = convert_to_tflite(
                    saved, out_dir / FILE_NAMES[fmt], fmt, calibration_batch
                )
    return written


def export_saved_model(model: keras.Model, path: Path) -> Path:
    """A TF SavedModel with a `serve` endpoint (and serving_default signature)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def convert_to_tflite(
    saved_model: Path,
    path: Path,
    fmt: str = "tflite",
    calibration: np.ndarray | None = None,
) -> Path:
    """Convert a SavedModel to TFLite at the precision `fmt` names (one of TFLITE_FORMATS).

    tflite: float32, no quantization (the same predictions as Keras). tflite_float16: weights
    stored as float16 and dequantized on load. tflite_int8: int8 weights and activations, ranges
    calibrated on `calibration` (float32 training images, required); input and output stay
    float32. Selective: full-integer int8 lost 2-4 points on a narrow MobileNet, so TFLite's
    quantization debugger measures each layer's int8 error on the same calibration images and the
    worst layers stay float32 while the file stays within `selective.MAX_SIZE_RATIO` (0.45) of
    float32's (`selective.selective_int8`; within 1 point of float32 on cifar10-test, where full
    int8 lost 3.8: docs/benchmarks.md section 12, round 12). Every other layer is int8.
    """
    import tensorflow as tf

    if fmt not in TFLITE_FORMATS:
        raise ValueError(f"{fmt!r} is not a TFLite format; one of {TFLITE_FORMATS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if fmt == "tflite_float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_int8":
        model, _ = selective_int8(saved_model, calibration_images(calibration))
        path.write_bytes(model)
        return path
    path.write_bytes(converter.convert())
    return path
