"""What a trial's model costs to ship, measured in the format the user ships (final.export_target).

A multi-objective sweep trades accuracy against `model_bytes` or `latency_ms`. Measured on the
Keras model in memory (experiments/evaluation/cost.py: weight bytes, a compiled predict on the
host), those figures rank trials by a model nobody deploys: an int8 TFLite file is about a third
of the float32 weights and runs through another runtime, whose speed does not follow Keras's layer
for layer. With a target, each trial's model is exported to that format in a scratch folder
(`export_model`, as the final stage writes it: int8 calibrated on training images) and measured
from the file as the final stage measures every export (experiments/serving/measure.py): size on
disk, and the median ms of single-image calls through the file's own runtime, on validation
images (the test split stays untouched). The export costs seconds a trial, so it runs only when a
cost metric decides something (`CostPlan.target` is None otherwise, search/trials/objectives.py).

This module sits above serving and evaluation (it uses both) and below the worker, which calls
it where the trial trained, as the sweep process does for a trial trained in-process. `CostPlan`
imports nothing heavy: the config checks build one before TensorFlow is imported.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

    from experiments.data.splits import ImageData

FILE_COSTS = ("model_bytes", "latency_ms")  # the costs a format changes; model_params does not


@dataclass(frozen=True)
class CostPlan:
    """Which cost metrics a trial measures, and on what: the Keras model in memory (target None)
    or its export in format `target` (one of experiments.serving.export.FORMATS)."""

    names: tuple[str, ...]
    target: str | None = None


def trial_costs(model: keras.Model, data: ImageData, plan: CostPlan) -> dict[str, float]:
    """The cost metrics `plan` names for `model`, trained on `data`.

    With a target, `model_bytes` is the exported file's (or SavedModel folder's) size on disk and
    `latency_ms` the median of single-image calls of the loaded file on up to TIMED_IMAGES
    validation images; `model_params` stays the Keras count (a format stores the same weights).
    """
    from experiments.evaluation import cost  # Keras: imported where a model is measured
    from experiments.serving.export import CALIBRATION_LIMIT, export_model
    from experiments.serving.measure import TIMED_IMAGES, batch1_ms, export_size
    from experiments.serving.predictors import load_predictor

    file_costs = [n for n in plan.names if n in FILE_COSTS]
    if plan.target is None or not file_costs:
        return cost.model_costs(model, data.sample(1), plan.names)
    in_memory = tuple(n for n in plan.names if n not in FILE_COSTS)
    costs = cost.model_costs(model, data.sample(1), in_memory)
    calibration = data.sample(CALIBRATION_LIMIT, "train") if plan.target == "tflite_int8" else None
    with tempfile.TemporaryDirectory(prefix="trial-export-") as tmp:
        paths = export_model(model, [plan.target], Path(tmp), data.class_names, calibration)
        path = paths[plan.target]
        if "model_bytes" in file_costs:
            costs["model_bytes"] = float(export_size(path))
        if "latency_ms" in file_costs:
            costs["latency_ms"] = batch1_ms(load_predictor(path), data.sample(TIMED_IMAGES))
    return costs
