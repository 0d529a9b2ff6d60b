"""What a trained model costs to ship: its size and its inference latency on this machine.

Measured the same way for every trial, so trials compare: parameters (weights, trainable or
not), bytes of those weights, and the median latency of a single-image forward pass
after warm-up calls (the first calls build and trace; they are not what a user waits for).
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np

WARMUP_CALLS = 5
TIMED_CALLS = 30


def weight_bytes(model: keras.Model) -> int:
    """Bytes of the model's weights (each one's element count times its dtype's size): what a
    deployment stores and loads. A `.keras` file adds its config and, by default, the
    optimizer's state (Adam: twice the trainable weights), which serving never reads; counted
    rather than saved, it costs nothing a trial (writing the file took 40-90 ms of each)."""
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def latency_ms(
    model: keras.Model, image: np.ndarray, warmup: int = WARMUP_CALLS, timed: int = TIMED_CALLS
) -> float:
    """Median milliseconds to predict a batch of 1, after `warmup` calls.

    `predict_on_batch` runs Keras's compiled predict function (traced once, during warm-up), as
    a serving process would; an eager `model(x)` call measures Python dispatch per layer
    instead (about 10x slower for a small CNN here).
    """
    batch = np.asarray(image[:1], dtype=np.float32)
    for _ in range(warmup):
        model.predict_on_batch(batch)
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(batch))
        times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times))


def model_costs(model: keras.Model, image: np.ndarray, which: tuple[str, ...]) -> dict[str, float]:
    """The cost metrics named in `which` (model_params, model_bytes, latency_ms)."""
    costs: dict[str, float] = {}
    if "model_params" in which:
        costs["model_params"] = float(model.count_params())
    if "model_bytes" in which:
        costs["model_bytes"] = float(weight_bytes(model))
    if "latency_ms" in which:
        costs["latency_ms"] = latency_ms(model, image)
    return costs
