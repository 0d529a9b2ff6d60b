"""Train and validate one trial: a fresh model from a resolved config.

`run_trial` is the single place where a trial is trained; both search engines and `search.rerun`
call it, and tracking comes in only as Keras callbacks, so this module never talks to MLflow.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from functools import partial

import keras
from omegaconf import DictConfig

from experiments.data.augment import with_augmentation
from experiments.data.pipeline import dataset
from experiments.data.splits import ImageData
from experiments.errors import TrialFailed, UserInputError
from experiments.models.build import build_model, compile_model
from experiments.training.cache_report import CacheReport
from experiments.training.feature_cache import CachedPhases, uncached_reason
from experiments.training.schedule import fit_two_phase, is_two_phase
from experiments.training.settings import trial_settings


@dataclass
class TrialResult:
    """What one trained trial gives back: final validation metrics, curves and the model."""

    metrics: dict[str, float]
    history: dict[str, list[float]]
    model: keras.Model
    seconds: float
    # Whether the trial trained on cached activations of its frozen backbone, and the cache's
    # hits and misses (`feature_cache.tags()` is what a tracker records).
    feature_cache: CacheReport = field(default_factory=lambda: CacheReport(False, "uncached"))

    @property
    def epochs(self) -> int:
        return len(next(iter(self.history.values()), []))


def fresh_session(seed: int) -> None:
    """Drop the previous trial's graph and state, then seed Python, NumPy and TensorFlow."""
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(seed)


def check_targets(cfg: DictConfig, data: ImageData) -> None:
    """`train.distil` and the teacher's soft targets on train and validation come together
    (experiments/training/distil.py sets both): the distillation loss reads [label, soft] rows,
    every other loss bare labels. Keras's class weights would look the class up by argmax of
    those rows, which is not the label, so distillation refuses them."""
    distil = cfg.train.get("distil") is not None
    soft = [data.split(name).soft is not None for name in ("train", "val")]
    if soft != [distil, distil]:
        raise ValueError(
            f"train.distil is {'set' if distil else 'unset'} but the train / validation splits "
            f"{'have' if soft[0] else 'lack'} / {'have' if soft[1] else 'lack'} soft targets; "
            "use experiments.training.distil.distil, which sets both"
        )
    if distil and cfg.data.get("class_weights"):
        raise UserInputError(
            "data.class_weights=true cannot be combined with distillation (train.distil): the "
            "teacher's soft targets already carry its view of the classes; set "
            "data.class_weights=false for the student."
        )


def run_trial(
    cfg: DictConfig, data: ImageData, callbacks: list[keras.callbacks.Callback] | None = None
) -> TrialResult:
    """Build, compile and fit the model `cfg` describes; validate on the validation split only.

    Raises `TrialFailed` when the loss becomes NaN or infinite.
    """
    started = time.perf_counter()
    check_targets(cfg, data)
    fresh_session(int(cfg.seed))
    settings = trial_settings(cfg)  # parsed once, handed down
    model = build_model(cfg.model, data.image_shape, data.num_classes)
    # Augmentation wraps the model for training only; the trained inner model is what is returned.
    trainee = with_augmentation(model, settings.augmentation, int(cfg.seed))
    batch_size, seed = int(cfg.train.batch_size), int(cfg.seed)
    fit = partial(
        trainee.fit,
        dataset(data, "train", batch_size, training=True, seed=seed),
        validation_data=dataset(data, "val", batch_size, training=False, seed=seed),
        class_weight=data.class_weight() if cfg.data.get("class_weights") else None,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=int(cfg.train.verbose),
    )

    def compile_(lr_multiplier: float = 1.0) -> None:
        compile_model(
            trainee,
            lr_multiplier,
            optimizer_cfg=cfg.optimizer,
            label_smoothing=cfg.train.get("label_smoothing"),
            distil=cfg.train.get("distil"),
        )

    callbacks = [*(callbacks or []), keras.callbacks.TerminateOnNaN()]
    reason = uncached_reason(cfg, settings)
    report = CacheReport(False, reason or "uncached")
    if is_two_phase(cfg.model) and reason is None:  # frozen part computed once, from the cache
        cached = CachedPhases(cfg, data, model, settings)
        report = cached.report
        history = fit_two_phase(model, cfg, cached.trainer, callbacks)
    elif is_two_phase(cfg.model):  # pretrained backbone: frozen, then partly unfrozen
        history = fit_two_phase(model, cfg, lambda phase: (fit, compile_), callbacks)
    else:
        compile_()
        history = fit(epochs=int(cfg.train.epochs), callbacks=callbacks).history
    losses = history.get("loss", [])
    if not losses or not math.isfinite(losses[-1]):
        raise TrialFailed(
            f"loss became {losses[-1] if losses else 'undefined'} at epoch {len(losses)}"
        )
    final = {name: float(values[-1]) for name, values in history.items() if name.startswith("val_")}
    return TrialResult(final, history, model, time.perf_counter() - started, report)
