"""Selective int8: the layers that quantization hurts most kept in float32 (TFLite's debugger).

Full-integer int8 loses 2-4 points of test accuracy on a narrow MobileNet (docs/benchmarks.md
section 12). TFLite's quantization debugger (`tf.lite.experimental.QuantizationDebugger`) runs an
instrumented int8 model on images and measures, for each quantized layer, how far its int8 output
is from the float output, in units of the layer's quantization step: rmse / scale, where rounding
alone gives 1/sqrt(12) = 0.29. Selective quantization converts the same calibrated model again
with some layers denylisted: they run in float32 between a dequantize and a quantize op, the rest
stays int8, and the file grows by three bytes per weight of each float layer.

`Int8Debugger` calibrates once and measures once; `convert` then writes any selection cheaply (the
quantizer alone reruns). Which layers to keep float is a policy: `top`, `above` and
`within_size` below. `selective_int8` is the one `tflite_int8` exports use: the largest errors
first, as long as the file stays within MAX_SIZE_RATIO of float32's. The images must be training
images: they fix the ranges and pick the layers, so test images would tune the export on the data
that measures it.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.quiet import silenced_stderr

ROUNDING_FLOOR = 1 / math.sqrt(12)  # rmse / scale of uniform rounding: an error-free layer's
# The int8 file may grow to this share of float32's with float layers. MobileNet 0.25 (cifar10-test,
# docs/benchmarks.md section 12, round 12): full int8 is 0.37 of float32 and loses 3.8 points at
# 224 px, 2.0 at 96 px; within 0.45 it keeps within 1 point at both (0.40 missed at 96 px). On
# sign-language at 96 px it loses 1.6 (full int8 2.3): only the wide layers, float32's size, help.
MAX_SIZE_RATIO = 0.45


@dataclass(frozen=True)
class LayerError:
    """One quantized layer: its output tensor (the name `denylisted_nodes` takes), its op, and the
    rmse of its int8 output against float, in quantization steps (averaged over the images)."""

    tensor: str
    op: str
    rmse_per_step: float


class Int8Debugger:
    """A SavedModel calibrated for int8 on `calibration` images, each layer's error measured on
    the same images, and any selection of float layers converted.

    Images: float32 raw pixels (N, H, W, C), fed one at a time at their own size, as
    `convert_to_tflite` calibrates: training images (the layers are chosen on them).
    """

    def __init__(self, saved_model: Path, calibration: np.ndarray) -> None:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Float kernels allowed beside int8: a denylisted layer must be able to stay float.
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [ops.TFLITE_BUILTINS_INT8, ops.TFLITE_BUILTINS]
        converter.representative_dataset = _one_by_one(calibration)
        self._debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_one_by_one(calibration)
        )
        self._debugger.run()
        self.errors = _layer_errors(self._debugger)

    def convert(self, float_layers: Sequence[str]) -> bytes:
        """The int8 model with the layers named in `float_layers` (output tensors) kept float32.

        Layers not in `errors` cannot be denylisted; at least one layer must stay int8 (the
        debugger needs one quantized layer to attach to).
        """
        import tensorflow as tf

        unknown = set(float_layers) - {e.tensor for e in self.errors}
        if unknown:
            raise ValueError(f"not quantized layers of this model: {sorted(unknown)}")
        if len(set(float_layers)) >= len(self.errors):
            raise ValueError("every layer denylisted: convert to float32 TFLite instead")
        self._debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=list(float_layers)
        )
        return self._debugger.get_nondebug_quantized_model()


def selective_int8(
    saved_model: Path, images: np.ndarray, max_ratio: float = MAX_SIZE_RATIO
) -> tuple[bytes, list[str]]:
    """int8 TFLite of `saved_model`, calibrated and debugged on `images` (training images), with
    the layers of largest error kept float32 while the file stays <= `max_ratio` x float32's.

    Returns the model and the output tensors of the layers kept float (none when no layer's error
    is above rounding, or none fits). The quantizer's C++ log lines (two per candidate) and the
    debugger's deprecation warning for `tf.lite.Interpreter` (it still runs in TF 2.21) are muted.
    """
    import tensorflow as tf

    with silenced_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        float_bytes = len(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
        debugger = Int8Debugger(saved_model, images)
        kept, model = within_size(debugger, int(max_ratio * float_bytes))
    return model, kept


def top(errors: Sequence[LayerError], count: int) -> list[str]:
    """The `count` layers with the largest error."""
    return [e.tensor for e in sorted(errors, key=lambda e: -e.rmse_per_step)[:count]]


def above(errors: Sequence[LayerError], threshold: float) -> list[str]:
    """Every layer whose error exceeds `threshold` steps (TF's tutorial keeps those over 0.7)."""
    return [e.tensor for e in errors if e.rmse_per_step > threshold]


def within_size(
    debugger: Int8Debugger, max_bytes: int, threshold: float = ROUNDING_FLOOR
) -> tuple[list[str], bytes]:
    """Layers kept float from the largest error down, each only if the file stays <= `max_bytes`.

    A layer's float weights cost 3 bytes each over int8, so a wide layer with a large error can
    cost more than the budget while several small ones fit; each candidate is converted and its
    real size checked (the quantizer alone reruns: under 0.1 s each). Layers at or under
    `threshold` steps are not worth any bytes. Returns the kept layers and the converted model.
    """
    kept: list[str] = []
    model = debugger.convert(kept)
    for layer in top(debugger.errors, len(debugger.errors) - 1):
        error = next(e.rmse_per_step for e in debugger.errors if e.tensor == layer)
        if error <= threshold:
            break
        candidate = debugger.convert([*kept, layer])
        if len(candidate) <= max_bytes:
            kept, model = [*kept, layer], candidate
    return kept, model


def _one_by_one(images: np.ndarray) -> Callable[[], object]:
    """A dataset factory: each image alone as a batch of one, at its own size."""
    batch = np.asarray(images, dtype="float32")
    return lambda: ([image[None]] for image in batch)


def _layer_errors(debugger) -> list[LayerError]:
    """rmse / scale of each layer, from the debugger's own statistics dump (graph order).

    The dump is the public record that pairs each layer's mean squared error with its output
    scale and the tensor name that `denylisted_nodes` takes.
    """
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    errors = []
    for row in csv.DictReader(dump):
        rmse, scale = math.sqrt(float(row["mean_squared_error"])), float(row["scale"])
        # A zero scale is a constant tensor: nothing to round.
        steps = rmse / scale if scale > 0 else 0.0
        errors.append(LayerError(row["tensor_name"], row["op_name"], steps))
    return errors
