"""Time a trial's parts on a few batches of the user's data, before trial 0 (search.timeout's plan).

A budget is planned from what a trial costs on this machine, these images and this model, and
a whole trial is what the plan is for: so the parts are timed cheaply instead, in the process
that trains trials (a worker, by default) and the way `run_trial` runs them: the model's build,
the frozen part's inference that builds the feature cache (per image), and for each phase the
first step of a fit (TensorFlow traces the train and test functions then) and a steady train
and validation step. `search.trials.plan` turns these into seconds per trial and epoch.

A later trial that draws an augmentation preset trains phase 2 uncached (the whole model, fresh
augmentation); it is not timed apart (that would add the probe's costliest part, tracing the
whole model's training), but priced from what is timed: its step is the cached phase 2's plus
the frozen part's inference of a batch (search/trials/plan.py). Nothing is written: the feature store is only asked
which of trial 0's entries exist already (a resumed or repeated sweep builds only the others).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from experiments.data.augment import with_augmentation
from experiments.data.pipeline import dataset
from experiments.data.splits import ImageData
from experiments.models.build import build_model, compile_model
from experiments.models.cut import extractor, head_model, upper_model
from experiments.models.transfer import BACKBONE_LAYER
from experiments.training.feature_cache import SPLITS, CachedPhases, uncached_reason
from experiments.training.schedule import is_two_phase, tunable_layers, unfreeze_count, unfreeze_top
from experiments.training.settings import trial_settings
from experiments.training.trial import fresh_session

STEPS = 3  # timed steps after the first (the median is kept: one slow step on a busy machine)


@dataclass(frozen=True)
class PhaseCost:
    """One phase's fit, in seconds: `fixed` once per fit (tracing the train and test functions),
    `step` per training batch, `eval_step` per validation batch."""

    fixed: float
    step: float
    eval_step: float


@dataclass
class Probe:
    """What the parts of the probed trial cost here (seconds), and what its cache holds."""

    build: float  # a fresh session and the model's build
    phases: dict[int, PhaseCost]  # phase (1, 2; 1 alone for a one-phase model) -> its cost
    cached: bool = False  # the trial trains on cached activations (phase 2 too, unless augmented)
    extract_fixed: float = 0.0  # the build passes' own cost (an extractor, predict's tracing)
    extract_image: float = 0.0  # that inference, per image
    build_images: int = 0  # images whose activations the trial must build (its cache's misses)
    stored_bytes: int = 0  # bytes of its entries that exist already (read and verified)
    build_bytes: int = 0  # bytes of the entries it builds (a later trial reads them)
    copies: int = 0  # augmented copies phase 1 trains on (0: the images as they are)
    phase2_uncached: bool = False  # phase 2 trains the whole model (trial 0 is augmented)
    seconds: float = 0.0  # what the probe itself took
    notes: list[str] = field(default_factory=list)


def probe_trial(cfg: DictConfig, data: ImageData) -> Probe:
    """Time the parts of the trial `cfg` describes on a few batches of `data` (see module doc)."""
    began = time.perf_counter()
    settings = trial_settings(cfg)
    batch_size, seed = int(cfg.train.batch_size), int(cfg.seed)
    fresh_session(seed)
    model = build_model(cfg.model, data.image_shape, data.num_classes)
    trainee = with_augmentation(model, settings.augmentation, seed)
    # The trial's pipelines over the pixels are made before its first fit, cached or not.
    x, y = _first_batch(data, "train", batch_size, seed)
    xv, yv = _first_batch(data, "val", batch_size, seed)
    build = time.perf_counter() - began
    compile_ = _compiler(cfg)
    if not is_two_phase(cfg.model):
        found = Probe(build, {1: _time_phase(lambda: trainee, compile_, (x, y), (xv, yv))})
    elif uncached_reason(cfg, settings) is not None:
        found = Probe(build, _uncached_phases(cfg, model, trainee, compile_, (x, y), (xv, yv)))
    else:
        found = _cached(cfg, data, model, settings, compile_, (x, y), (xv, yv), build)
    keras.backend.clear_session()  # the trial that follows starts from a clean session
    found.seconds = time.perf_counter() - began
    return found


Batch = tuple[Any, Any]
Compiler = Callable[[keras.Model, float], None]


def _cached(
    cfg: DictConfig,
    data: ImageData,
    model: keras.Model,
    settings: Any,
    compile_: Compiler,
    train: Batch,
    val: Batch,
    build: float,
) -> Probe:
    """A trial on cached activations: the build of its missing entries and each phase's step on
    activations computed from the probe's batches, as `CachedPhases` trains them."""
    started = time.perf_counter()  # the cache's set-up (its cuts, its keys) is the build's
    planned = CachedPhases(cfg, data, model, settings, load=False)
    cuts = list({cut.name: cut for cut in planned.cuts.values()}.values())
    # A build pass makes its extractor and runs `predict` over the split (tracing, once a pass).
    extracting = time.perf_counter()
    net = extractor(model, cuts)
    net.predict(train[0], batch_size=len(train[0]), verbose=0)
    extract_first = time.perf_counter() - extracting
    extract_step = _first_and_steady(lambda: net.predict_on_batch(train[0]))[1]
    extracting = time.perf_counter() - extracting
    at = {
        cut.name: (np.asarray(out), np.asarray(val_out))
        for cut, out, val_out in zip(
            cuts, _listed(net.predict_on_batch(train[0])), _listed(net.predict_on_batch(val[0])),
            strict=True,
        )
    }  # fmt: skip
    images = {"train": len(data.train), "val": len(data.val)}
    missing, passes, built, stored = 0, 0, 0, 0
    for split in SPLITS:
        copies = range(planned.copies) if planned.augmented and split == "train" else [None]
        for copy in copies:
            paths = {cut.name: planned.store.path(planned.key(split, cut, copy)) for cut in cuts}
            stored += sum(path.stat().st_size for path in paths.values() if path.exists())
            absent = [name for name, path in paths.items() if not path.exists()]
            if absent:  # one inference pass of the split builds every absent cut
                missing, passes = missing + images[split], passes + 1
                built += images[split] * sum(at[name][0][0].nbytes for name in absent)
    build += time.perf_counter() - started - extracting
    backbone = model.get_layer(BACKBONE_LAYER)
    phases: dict[int, PhaseCost] = {}
    for phase, cut in sorted(planned.cuts.items()):
        if phase == 2:
            _open_top(cfg, backbone)
        else:
            backbone.trainable = False
        features, val_features = at[cut.name]
        labelled = (features, train[1]), (val_features, val[1])
        phases[phase] = _time_phase(
            partial(head_model, model) if phase == 1 else partial(upper_model, model, cut),
            compile_, *labelled, _multiplier(cfg, phase),
        )  # fmt: skip
    if planned.augmented and _epochs(cfg)[1] > 0:  # trial 0's phase 2 runs uncached: timed so
        _open_top(cfg, backbone)
        augmented = partial(with_augmentation, model, settings.augmentation, int(cfg.seed))
        phases[2] = _time_phase(augmented, compile_, train, val, _multiplier(cfg, 2))
    return Probe(
        build,
        phases,
        cached=True,
        extract_fixed=passes * max(extract_first - extract_step, 0.0),
        extract_image=extract_step / max(len(train[0]), 1),
        build_images=missing,
        stored_bytes=stored,
        build_bytes=built,
        copies=planned.copies,
        phase2_uncached=planned.augmented,
    )


def _uncached_phases(
    cfg: DictConfig,
    model: keras.Model,
    trainee: keras.Model,
    compile_: Compiler,
    train: Batch,
    val: Batch,
) -> dict[int, PhaseCost]:
    """Both phases of an uncached two-phase trial: the whole model, backbone frozen, then opened."""
    backbone = model.get_layer(BACKBONE_LAYER)
    head_epochs, rest = _epochs(cfg)
    phases: dict[int, PhaseCost] = {}
    if head_epochs > 0:
        backbone.trainable = False
        phases[1] = _time_phase(lambda: trainee, compile_, train, val)
    if rest > 0:
        _open_top(cfg, backbone)
        phases[2] = _time_phase(lambda: trainee, compile_, train, val, _multiplier(cfg, 2))
    return phases


def _open_top(cfg: DictConfig, backbone: keras.Model) -> None:
    """Open the backbone's top layers as phase 2 does."""
    unfreeze_top(backbone, unfreeze_count(cfg.model.fine_tune, len(tunable_layers(backbone))))


def _multiplier(cfg: DictConfig, phase: int) -> float:
    """The learning-rate multiplier a phase compiles with (phase 2: fine_tune.lr_multiplier)."""
    return 1.0 if phase == 1 else float(cfg.model.fine_tune.lr_multiplier)


def _epochs(cfg: DictConfig) -> tuple[int, int]:
    """(phase 1's epochs, phase 2's) of a two-phase trial."""
    total = int(cfg.train.epochs)
    head = min(int(cfg.model.fine_tune.head_epochs), total)
    return head, total - head


def _time_phase(
    make: Callable[[], keras.Model],
    compile_: Compiler,
    train: Batch,
    val: Batch,
    lr_multiplier: float = 1.0,
) -> PhaseCost:
    """Make and compile the phase's trainee as its fit does, then time its first and steady
    train and test steps; the fixed part is the making, compiling and first steps' extra."""
    started = time.perf_counter()
    trainee = make()
    compile_(trainee, lr_multiplier)
    made = time.perf_counter() - started
    first, step = _first_and_steady(lambda: trainee.train_on_batch(*train))
    eval_first, eval_step = _first_and_steady(lambda: trainee.test_on_batch(*val))
    fixed = made + max(first - step, 0.0) + max(eval_first - eval_step, 0.0)
    return PhaseCost(fixed, step, eval_step)


def _first_and_steady(call: Callable[[], Any]) -> tuple[float, float]:
    """Seconds of the first call (tracing included) and the median of the next `STEPS`."""
    times = []
    for _ in range(STEPS + 1):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def _listed(outputs: Any) -> list[Any]:
    return outputs if isinstance(outputs, list) else [outputs]


def _first_batch(data: ImageData, split: str, batch_size: int, seed: int) -> Batch:
    """The split's first batch as the trial's pipeline gives it (targets included)."""
    for x, y in dataset(data, split, batch_size, training=False, seed=seed).take(1):
        return x.numpy(), y.numpy()
    raise ValueError(f"the {split} split is empty")  # load_data refuses that first


def _compiler(cfg: DictConfig) -> Compiler:
    def compile_(trainee: keras.Model, lr_multiplier: float) -> None:
        compile_model(
            trainee,
            lr_multiplier,
            optimizer_cfg=cfg.optimizer,
            label_smoothing=cfg.train.get("label_smoothing"),
            distil=cfg.train.get("distil"),
        )

    return compile_
