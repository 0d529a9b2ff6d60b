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

import gc
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from experiments.data.augment import with_augmentation
from experiments.data.pipeline import dataset, gathered_from_numpy, index_batches
from experiments.data.splits import ImageData, Split
from experiments.models.build import build_model, compile_model
from experiments.models.cut import extractor, head_model, upper_model
from experiments.models.transfer import BACKBONE_LAYER
from experiments.training.feature_cache import SPLITS, CachedPhases, uncached_reason
from experiments.training.schedule import is_two_phase, tunable_layers, unfreeze_count, unfreeze_top
from experiments.training.settings import trial_settings
from experiments.training.timings import PhaseCost, Probe
from experiments.training.trial import fresh_session

STEPS = 3  # batches a timed fit adds (and inference calls timed, their median kept)
REPEATS = 3  # fits of each kind timed, their median kept
MIN_SPAN = 0.1  # seconds the added batches of a timed fit must take (else more are added)
MAX_BATCHES = 48


def probe_trial(cfg: DictConfig, data: ImageData) -> Probe:
    """Time the parts of the trial `cfg` describes on a few batches of `data` (see module doc)."""
    probing = time.perf_counter()
    settings = trial_settings(cfg)
    batch_size, seed = int(cfg.train.batch_size), int(cfg.seed)
    compile_ = _compiler(cfg)
    # The trials follow the probe in this process: what only the process's first build and fit
    # pay (loading, first tracing) is paid here, untimed; untimed, it made the plan 1-2 s a
    # trial too long on the tiny test sweep.
    build_model(cfg.model, data.image_shape, data.num_classes)
    _warm_up_fit(compile_)
    began = time.perf_counter()
    fresh_session(seed)
    model = build_model(cfg.model, data.image_shape, data.num_classes)
    trainee = with_augmentation(model, settings.augmentation, seed)
    # The trial's pipelines over the pixels are made before its first fit, cached or not.
    pipelines = (
        dataset(data, "train", batch_size, training=True, seed=seed).take(1),
        dataset(data, "val", batch_size, training=False, seed=seed).take(1),
    )
    (x, y), (xv, yv) = (_first_batch(pipeline) for pipeline in pipelines)
    build = time.perf_counter() - began
    if not is_two_phase(cfg.model):
        phase = _time_phase(lambda: trainee, compile_, (x, y), (xv, yv), 1.0, pipelines)
        found = Probe(build, {1: phase})
    elif uncached_reason(cfg, settings) is not None:
        phases = _uncached_phases(cfg, model, trainee, compile_, (x, y), (xv, yv), pipelines)
        found = Probe(build, phases)
    else:
        found = _cached(cfg, data, model, settings, compile_, (x, y), (xv, yv), build, pipelines)
    # The trial that follows starts from a clean session, and the probe's garbage is collected
    # here, not in trial 0's own collection (it made trial 0 run ~2 s over its plan).
    keras.backend.clear_session()
    gc.collect()
    found.seconds = time.perf_counter() - probing
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
    pipelines: tuple[Any, Any],
) -> Probe:
    """A trial on cached activations: the build of its missing entries and each phase's step on
    activations computed from the probe's batches, as `CachedPhases` trains them."""
    started = time.perf_counter()  # the cache's set-up (its cuts, its keys) is the build's
    planned = CachedPhases(cfg, data, model, settings, load=False)
    cuts = list({cut.name: cut for cut in planned.cuts.values()}.values())
    # A build pass makes its extractor and runs `predict` over the split (tracing, once a pass);
    # the first extractor of the process pays more than trial 0's passes will (untimed).
    extractor(model, cuts).predict(train[0][:1], verbose=0)
    extracting = time.perf_counter()
    net = extractor(model, cuts)
    net.predict(train[0], batch_size=len(train[0]), verbose=0)
    extract_first = time.perf_counter() - extracting
    extract_step = _steady(lambda: net.predict_on_batch(train[0]))
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
        phases[2] = _time_phase(augmented, compile_, train, val, _multiplier(cfg, 2), pipelines)
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
    pipelines: tuple[Any, Any],
) -> dict[int, PhaseCost]:
    """Both phases of an uncached two-phase trial: the whole model, backbone frozen, then opened."""
    backbone = model.get_layer(BACKBONE_LAYER)
    head_epochs, rest = _epochs(cfg)
    phases: dict[int, PhaseCost] = {}
    if head_epochs > 0:
        backbone.trainable = False
        phases[1] = _time_phase(lambda: trainee, compile_, train, val, 1.0, pipelines)
    if rest > 0:
        _open_top(cfg, backbone)
        multiplier = _multiplier(cfg, 2)
        phases[2] = _time_phase(lambda: trainee, compile_, train, val, multiplier, pipelines)
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
    pipelines: tuple[Any, Any] | None = None,
) -> PhaseCost:
    """Make and compile the phase's trainee, then time one-epoch fits as its phase runs them,
    over repeats of one batch: 1 training and 1 validation batch (the first traces: the fixed
    part), the same again (one epoch's own cost), 1 + STEPS training batches and 1 + STEPS
    validation batches (the steps, by difference); each but the first REPEATS times. `pipelines`: the (train, val) datasets of one
    batch that the phase's fit reads; None: over the cached arrays given."""
    if pipelines is None:
        pipelines = (_over_arrays(train, True), _over_arrays(val, False))
    started = time.perf_counter()
    trainee = make()
    compile_(trainee, lr_multiplier)

    def fit(train_batches: int, val_batches: int) -> float:
        begun = time.perf_counter()
        trainee.fit(
            pipelines[0].repeat(train_batches),
            validation_data=pipelines[1].repeat(val_batches),
            epochs=1,
            verbose=0,
            shuffle=False,
        )
        return time.perf_counter() - begun

    fit(1, 1)
    first = time.perf_counter() - started
    # Medians of REPEATS fits each: one fit slowed by another process's burst does not count.
    once = statistics.median(fit(1, 1) for _ in range(REPEATS))
    step = _per_batch(lambda k: fit(1 + k, 1), once)
    eval_step = _per_batch(lambda k: fit(1, 1 + k), once)
    return PhaseCost(max(first - once, 0.0), step, eval_step, max(once - step - eval_step, 0.0))


def _per_batch(fit: Callable[[int], float], once: float) -> float:
    """Seconds a batch adds to a fit: STEPS more batches, or more (single fits, x4 each time, up
    to MAX_BATCHES) until they add MIN_SPAN seconds, then the median of REPEATS such fits. A
    tiny head's 3 ms steps were lost in the noise of a fit's own 70 ms (estimated at 13 ms)."""
    extra = STEPS
    while extra < MAX_BATCHES and fit(extra) - once < MIN_SPAN:
        extra = min(extra * 4, MAX_BATCHES)
    return max(statistics.median(fit(extra) for _ in range(REPEATS)) - once, 0.0) / extra


def _warm_up_fit(compile_: Compiler) -> None:
    """One fit of a tiny model, so the timed fits do not pay the process's first fit."""
    inputs = keras.Input((4,))
    tiny = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    compile_(tiny, 1.0)
    x, y = np.zeros((2, 4), np.float32), np.zeros((2,), np.int32)
    tiny.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)


def _over_arrays(batch: Batch, training: bool) -> Any:
    """One batch of cached activations through the pipeline a cached phase reads them with."""
    x, y = batch
    indices = index_batches(len(x), len(x), training, 0)
    return gathered_from_numpy(indices, Split(np.asarray(x), np.asarray(y)))


def _steady(call: Callable[[], Any]) -> float:
    """The median seconds of `STEPS` calls of a function traced already (one slow call on a busy
    machine does not count)."""
    times = []
    for _ in range(STEPS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _listed(outputs: Any) -> list[Any]:
    return outputs if isinstance(outputs, list) else [outputs]


def _first_batch(pipeline: Any) -> Batch:
    """The first batch of a split's pipeline, as arrays."""
    for x, y in pipeline:
        return x.numpy(), y.numpy()
    raise ValueError("the split is empty")  # load_data refuses that first


def _compiler(cfg: DictConfig) -> Compiler:
    """`compile_model` as the trial calls it, taking (trainee, learning-rate multiplier)."""
    loss = {"label_smoothing": cfg.train.get("label_smoothing"), "distil": cfg.train.get("distil")}
    return partial(compile_model, optimizer_cfg=cfg.optimizer, **loss)
