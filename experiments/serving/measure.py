"""Measure each export as it really runs: accuracy, size on disk and latency, from the file itself.

An export is chosen for where it will run, so its figures must come from the written file read by
the runtime that serves it (LiteRT for .tflite, TensorFlow for a SavedModel, Keras for .keras), not
from the Keras model it was made from: quantization and conversion change predictions. Files are
loaded with `predictors.load_predictor`, the loader `search.predict` uses, so a measured export and
a predicted one run the same code. `measures_table` turns the records into plain rows (ints, short
floats, strings) to log as JSON and render in HTML.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from experiments.serving.export import FORMATS
from experiments.serving.predictors import Predictor, load_predictor

TIMED_IMAGES = 20  # single-image calls timed per export: a stable median, seconds not minutes
WARMUP_CALLS = 3  # untimed first calls: allocation, graph tracing, TFLite tensor resizing


@dataclass(frozen=True)
class ExportMeasure:
    """One export's figures: accuracy on `images` test images, bytes on disk, ms per image."""

    format: str
    accuracy: float
    size_bytes: int
    ms_per_image: float  # median of `timed` calls with one image each (batch 1)
    images: int  # test images scored for accuracy
    timed: int  # single-image calls behind ms_per_image


def export_size(path: Path) -> int:
    """Bytes on disk: a file's size, or the sum of a folder's files (a SavedModel)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def measure_export(
    path: Path,
    fmt: str,
    images: np.ndarray,
    labels: np.ndarray,
    timed: int = TIMED_IMAGES,
    warmup: int = WARMUP_CALLS,
) -> ExportMeasure:
    """Accuracy, size and batch-1 latency of the export at `path` (written as format `fmt`).

    `images`: test images (N, H, W, C), raw [0, 255] pixels, uint8 or float; `labels`: (N,) class
    indices. Accuracy is over all N images, predicted by the loaded file. Latency is the median
    wall time of single-image predict calls on the first min(`timed`, N) images, after `warmup`
    untimed calls: batch 1 is how a served model meets requests, and the median ignores the
    occasional scheduler hiccup on a shared machine. `timed` bounds the cost (tests stay fast).
    """
    if fmt not in FORMATS:
        raise ValueError(f"{fmt!r} is not an export format; one of {FORMATS}")
    x = np.asarray(images, dtype="float32")
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 4 or len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"need (N, H, W, C) images and N labels with N > 0; got {x.shape} and {y.shape}"
        )
    if timed < 1 or warmup < 0:
        raise ValueError(f"timed must be >= 1 and warmup >= 0; got {timed} and {warmup}")
    predictor = load_predictor(path)
    accuracy = float(np.mean(predictor.predict(x).argmax(axis=1) == y))
    return ExportMeasure(
        format=fmt,
        accuracy=accuracy,
        size_bytes=export_size(path),
        ms_per_image=batch1_ms(predictor, x, timed, warmup),
        images=len(x),
        timed=min(timed, len(x)),
    )


def batch1_ms(
    predictor: Predictor, images: np.ndarray, timed: int = TIMED_IMAGES, warmup: int = WARMUP_CALLS
) -> float:
    """Median milliseconds of `predictor.predict` on one image, over the first min(`timed`, N)
    of `images` (float32 raw pixels), after `warmup` untimed calls. Shared by the final stage's
    export table and a trial's costs in its export target (experiments/trial_cost.py), so the
    two figures are one measurement."""
    x = np.asarray(images, dtype="float32")
    for i in range(warmup):
        predictor.predict(x[i % len(x)][None])
    seconds = []
    for i in range(min(timed, len(x))):
        one = x[i : i + 1]
        started = time.perf_counter()
        predictor.predict(one)
        seconds.append(time.perf_counter() - started)
    return 1000.0 * median(seconds)


def measure_exports(
    paths: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    timed: int = TIMED_IMAGES,
    warmup: int = WARMUP_CALLS,
) -> list[ExportMeasure]:
    """`measure_export` for each {format: path} that `export_model` returned, in FORMATS order."""
    return [
        measure_export(paths[fmt], fmt, images, labels, timed, warmup)
        for fmt in FORMATS
        if fmt in paths
    ]


def human_size(size_bytes: int) -> str:
    """A byte count for people, in decimal units: 812 B, 51.9 kB, 3.4 MB, 1.2 GB."""
    if size_bytes < 1000:
        return f"{int(size_bytes)} B"
    value = size_bytes / 1000
    for unit in ("kB", "MB"):
        if round(value, 1) < 1000:  # 999,960 bytes is "1.0 MB", not "1000.0 kB"
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def measures_table(
    measures: Sequence[ExportMeasure], reference: str = "tflite"
) -> list[dict[str, Any]]:
    """One plain dict per export (JSON- and HTML-ready), with figures relative to `reference`.

    Sizes stay integer bytes beside a human string (never 5.195e+04); `size_ratio` (this size /
    the reference's) and `accuracy_delta` (this accuracy - the reference's) answer "how much
    smaller, at what cost" against the float32 TFLite file by default; both are None when the
    reference format was not measured.
    """
    base = next((m for m in measures if m.format == reference), None)
    rows = []
    for m in measures:
        rows.append(
            {
                "format": m.format,
                "accuracy": round(m.accuracy, 4),
                "size_bytes": int(m.size_bytes),
                "size": human_size(m.size_bytes),
                "ms_per_image": round(m.ms_per_image, 3),
                "images": m.images,
                "timed": m.timed,
                "size_ratio": None if base is None else round(m.size_bytes / base.size_bytes, 3),
                "accuracy_delta": None if base is None else round(m.accuracy - base.accuracy, 4),
            }
        )
    return rows
