"""Train a transfer model's unfrozen part on cached activations of its frozen part.

With the backbone's bottom frozen and no augmentation in front of it, the activations at the top
of the frozen part are a pure function of the image, so they are computed once (one inference
pass per split and cut) and reused by every epoch, phase, trial, resumed invocation and worker
that keys to the same entry (experiments/training/feature_store.py keeps them on disk).
- Phase 1 trains the head on the backbone's output (`cut.head_model`).
- Phase 2 trains the backbone above the highest single-tensor cut at or below its first
  unfrozen layer, plus the head (`cut.upper_model`), on the activations at that cut.
Both sub-models are built over the whole model's own layers, so the whole raw-pixel model, which
is what gets logged, registered and exported, holds exactly the trained weights.

With augmentation in front of the frozen part (`data.augmentation`), phase 1 trains the head on
K = `model.feature_cache.augmented_copies` cached augmented copies of the training images, one
fixed augmented pass of the frozen part each (epoch e reads copy e mod K; validation images are
never augmented), and phase 2 runs uncached, on fresh augmentation every epoch, as an uncached
trial does (its cut lies low in the backbone for the default 20 open layers: K copies there would
be K x 600 MB at 224 px on sign-language-digits). Building the copies costs K inference passes,
about K uncached head epochs (K is capped at head_epochs, so a trial never builds a copy it does
not read); it pays back within one trial when head_epochs > K, and at once
for every later trial that draws the same augmentation, input size and seed: a sweep that
searches augmentation as a few presets (`data.augmentation.preset`) rather than continuous
strengths. Phase 1 then sees K variants of each image instead of a fresh one every epoch; what
that costs in accuracy is not measured apart yet (bench/transfer_augmentation.py, arm kcopies;
bench/feature_cache.py prints both runs' validation accuracy). `augmented_copies=0` runs
augmented trials wholly uncached.

The key holds everything the activations depend on: the data fingerprint and split, the frozen
layers' full configuration (architecture, alpha, input size, channel handling, preprocessing,
dropout off), the SHA-256 of the weights file loaded (or the seed, for random weights), the cut,
and the Keras and TensorFlow versions; for an augmented copy, also the augmentation settings and
the copy's seed (the trial's seed + 10 x the copy's number).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from experiments.data.augment import layers_for, with_augmentation
from experiments.data.pipeline import dataset, gathered_from_numpy, index_batches
from experiments.data.splits import ImageData, Split
from experiments.models.backbones import input_size, resolve_weights
from experiments.models.build import compile_model
from experiments.models.cut import (
    Cut,
    cut_below,
    extractor,
    first_trainable,
    head_model,
    single_tensor_cuts,
    upper_model,
)
from experiments.models.transfer import BACKBONE_LAYER
from experiments.training.cache_report import CacheReport
from experiments.training.feature_store import FeatureStore
from experiments.training.schedule import Compile, Fit, tunable_layers, unfreeze_count
from experiments.training.settings import TrialSettings

EXTRACT_BATCH = 64  # inference batch for building entries (not part of the key)
SPLITS = ("train", "val")  # the test split is never read during the search


def uncached_reason(cfg: DictConfig, settings: TrialSettings) -> str | None:
    """Why this trial cannot train on cached activations; None when it can."""
    if cfg.model.get("name") != "transfer" or cfg.model.get("fine_tune") is None:
        return "uncached: not a transfer model"
    if not settings.cache.enabled:
        return "uncached: disabled"
    augmented = layers_for(settings.augmentation, int(cfg.seed))
    if augmented and settings.cache.augmented_copies == 0:
        return "uncached: augmentation in front of the frozen backbone (augmented_copies=0)"
    return None


class CachedPhases:
    """Builds each phase's trainee and its datasets from cached activations (see module doc)."""

    def __init__(
        self,
        cfg: DictConfig,
        data: ImageData,
        model: keras.Model,
        settings: TrialSettings,
        load: bool = True,
    ) -> None:
        """`load=False`: the plan only (cuts, copies, keys), nothing read or built (the budget's
        probe, experiments/training/probe.py, asks which entries exist)."""
        self.cfg, self.data, self.model = cfg, data, model
        self.store = FeatureStore(settings.cache.folder, settings.cache.max_bytes)
        self.report = CacheReport(used=True, reason="cached")
        self.augmentation = settings.augmentation  # resolved once, in run_trial
        self.augmented = bool(layers_for(self.augmentation, int(cfg.seed)))
        # K augmented copies, never more than phase 1 has epochs (each copy is an entry of its
        # own, so a later trial with more head epochs builds only the copies it lacks).
        head_epochs = min(int(cfg.model.fine_tune.head_epochs), int(cfg.train.epochs))
        copies = settings.cache.augmented_copies
        self.copies = min(copies, max(head_epochs, 0)) if self.augmented else 0
        if self.augmented:
            self.report.reason = f"cached: phase 1 on {self.copies} augmented copies"
        self.backbone = model.get_layer(BACKBONE_LAYER)
        self.cuts = self._planned_cuts()
        self.features = self._load_or_build() if load else {}
        # One shuffled index sequence for both phases, as the uncached trial's one pipeline: its
        # phase 2 starts with the next epoch's order, not the first one again.
        self.train_order = index_batches(
            len(data.train), int(cfg.train.batch_size), True, int(cfg.seed)
        )

    def trainer(self, phase: int) -> tuple[Fit, Compile]:
        """(fit, compile) for `phase`, on the sub-model above the frozen layers as they are now."""
        batch_size, seed = int(self.cfg.train.batch_size), int(self.cfg.seed)
        class_weight = self.data.class_weight() if self.cfg.data.get("class_weights") else None
        if self.augmented and phase == 2:  # uncached, fresh augmentation: as trial.py's own fit
            trainee = with_augmentation(self.model, self.augmentation, seed)
            fit = partial(
                trainee.fit,
                dataset(self.data, "train", batch_size, training=True, seed=seed),
                validation_data=dataset(self.data, "val", batch_size, training=False, seed=seed),
                class_weight=class_weight,
                shuffle=False,
                verbose=int(self.cfg.train.verbose),
            )
            return fit, self._compiler(trainee)
        cut = self.cuts[phase]
        if phase == 2 and first_trainable(self.backbone) <= cut.after:
            raise RuntimeError(f"cut {cut.name} lies above an unfrozen layer")  # a bug, not input
        trainee = head_model(self.model) if phase == 1 else upper_model(self.model, cut)
        val = self.features[("val", cut.name, None)]
        extra: dict[str, Any] = {}
        if self.copies:  # phase 1 on K copies: one pass over copy e mod K in epoch e
            train = np.concatenate(
                [self.features[("train", cut.name, k)] for k in range(self.copies)]
            )
            labels = np.tile(self.data.train.y, self.copies)
            soft = self.data.train.soft  # a teacher's targets (distillation) follow their images
            soft = None if soft is None else np.tile(soft, (self.copies, 1))
            n, copies = len(self.data.train), self.copies
            order = tf.data.Dataset.range(copies).flat_map(
                lambda k: self.train_order.map(lambda idx: idx + k * n)
            )
            # One iterator for the whole fit (steps_per_epoch on a repeated dataset), so epoch e
            # continues where epoch e - 1 stopped: at the start of copy e mod K.
            train_data = gathered_from_numpy(order.repeat(), Split(train, labels, soft=soft))
            extra["steps_per_epoch"] = -(-n // batch_size)
        else:
            train = self.features[("train", cut.name, None)]
            train_data = gathered_from_numpy(
                self.train_order, replace(self.data.train, x=train, files=())
            )
        fit = partial(
            trainee.fit,
            train_data,
            validation_data=gathered_from_numpy(
                index_batches(len(val), batch_size, False, seed),
                replace(self.data.val, x=val, files=()),
            ),
            class_weight=class_weight,
            shuffle=False,
            verbose=int(self.cfg.train.verbose),
            **extra,
        )
        return fit, self._compiler(trainee)

    def _compiler(self, trainee: keras.Model) -> Compile:
        """(Re)compiles `trainee` as the trial does, at the learning rate times a multiplier."""

        def compile_(lr_multiplier: float = 1.0) -> None:
            compile_model(
                trainee,
                lr_multiplier,
                optimizer_cfg=self.cfg.optimizer,
                label_smoothing=self.cfg.train.get("label_smoothing"),
                distil=self.cfg.train.get("distil"),
            )

        return compile_

    def _planned_cuts(self) -> dict[int, Cut]:
        """The cut of each phase that will run (1: the backbone's output), from the config alone."""
        layers = self.backbone.layers
        fine_tune = self.cfg.model.fine_tune
        total, head_epochs = int(self.cfg.train.epochs), int(fine_tune.head_epochs)
        cuts = {1: single_tensor_cuts(self.backbone)[-1]} if min(head_epochs, total) > 0 else {}
        if total > head_epochs and not self.augmented:  # augmented: phase 2 runs uncached
            tunable = tunable_layers(self.backbone)
            count = unfreeze_count(fine_tune, len(tunable))
            first_open = len(layers)
            if count > 0:
                first_open = next(i for i, layer in enumerate(layers) if layer is tunable[-count])
            cuts[2] = cut_below(self.backbone, first_open)
        return cuts

    def _load_or_build(self) -> dict[tuple[str, str, int | None], np.ndarray]:
        """Every (split, cut, copy) array: verified from the store, or built in one pass per split
        (and per augmented copy: copy None is the images as they are)."""
        cuts = list({cut.name: cut for cut in self.cuts.values()}.values())
        found: dict[tuple[str, str, int | None], np.ndarray] = {}
        for split in SPLITS:
            copies = range(self.copies) if self.augmented and split == "train" else [None]
            for copy in copies:
                missing = []
                for cut in cuts:
                    key = self.key(split, cut, copy)
                    self.report.entries.append(key)
                    array = self.store.load(key)
                    if array is None:
                        missing.append(cut)
                    else:
                        found[(split, cut.name, copy)] = array
                        self.report.hits += 1
                if missing and copy is None:  # train + validation: its parts' entries, joined
                    joined = self._joined(split, missing)
                    for name, array in joined.items():
                        found[(split, name, copy)] = array
                        self.report.hits += 1
                    missing = [cut for cut in missing if cut.name not in joined]
                if missing:
                    started = time.perf_counter()
                    built = self._extract(split, missing, copy)
                    self.report.build_seconds += time.perf_counter() - started
                    for cut, array in zip(missing, built, strict=True):
                        self.store.save(self.key(split, cut, copy), array)
                        found[(split, cut.name, copy)] = array
                        self.report.misses += 1
        self.report.corrupt = len(self.store.corrupt)
        return found

    def _joined(self, split: str, cuts: list[Cut]) -> dict[str, np.ndarray]:
        """The activations of a split that concatenates others (`Split.parts`: the retraining's
        train + validation), joined from their stored entries, for each cut all of whose parts
        are stored: each image's activations depend on the image alone, so they are the same
        arrays. Without this the retraining built them again (its price doubled on
        sign-language-digits, 106 s for a 30-s trial: docs/benchmarks.md section 11)."""
        parts = self.data.split(split).parts
        names = ("train", "val")  # the entries' split names, as trials stored them
        if len(parts) != len(names):
            return {}
        joined: dict[str, np.ndarray] = {}
        for cut in cuts:
            keys = [self.key(n, cut, rows=p) for n, p in zip(names, parts, strict=True)]
            arrays = [self.store.load(key) for key in keys]
            if all(array is not None for array in arrays):
                joined[cut.name] = np.concatenate(arrays)  # type: ignore[arg-type]
        return joined

    def _extract(self, split: str, cuts: list[Cut], copy: int | None = None) -> list[np.ndarray]:
        """Activations at `cuts` of every image of `split`, in the split's order; of augmented
        copy `copy` of each image when it is not None (fresh layers seeded for that copy)."""
        net = extractor(self.model, cuts)
        images = dataset(self.data, split, EXTRACT_BATCH, training=False, seed=0)
        if copy is None:
            outputs = net.predict(images.map(lambda x, y: x), verbose=0)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            return [np.asarray(out, dtype=np.float32) for out in outputs]
        layers = layers_for(self.augmentation, self.copy_seed(copy))
        batches: list[list[np.ndarray]] = []
        for x, _ in images:
            for layer in layers:
                x = layer(x, training=True)
            out = net.predict_on_batch(x)
            batches.append([np.asarray(o) for o in (out if isinstance(out, list) else [out])])
        return [
            np.concatenate([b[i] for b in batches]).astype(np.float32) for i in range(len(cuts))
        ]

    def copy_seed(self, copy: int) -> int:
        """The augmentation layers' seed for copy `copy` (they use seed .. seed + 5)."""
        return int(self.cfg.seed) + 10 * copy

    def key(self, split: str, cut: Cut, copy: int | None = None, rows: Split | None = None) -> str:
        """The entry's name: a digest of everything the activations depend on; `rows`: another
        split's images than this data's `split` (a part of it, `_joined`)."""
        model_cfg = self.cfg.model
        weights = resolve_weights(model_cfg, input_size(model_cfg, self.data.image_shape[0]))
        layers = self.model.layers  # topological: input, resize, gray_to_rgb, preprocess first
        frozen = [layer.get_config() for layer in layers[: layers.index(self.backbone)]]
        parts: dict[str, Any] = {
            "data": self.data.fingerprint(),
            "split": split,
            "rows": split_digest(rows or self.data.split(split)),  # also when a split is swapped
            "image_shape": list(self.data.image_shape),
            "backbone": str(model_cfg.backbone),
            "alpha": model_cfg.get("alpha"),
            "input_size": model_cfg.get("input_size"),
            "weights": file_digest(weights) if weights else f"random seed={int(self.cfg.seed)}",
            "preprocessing": _without_trainable(frozen),
            "architecture": _without_trainable(self.backbone.get_config()),
            "cut": cut.name,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "dtype_policy": keras.config.dtype_policy().name,
        }
        if copy is not None:  # an augmented copy: the settings and the copy's seed
            parts["augmentation"] = {"settings": self.augmentation, "seed": self.copy_seed(copy)}
        name = split if copy is None else f"{split}{copy}"
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return f"{name}-{cut.name}-{hashlib.sha256(blob).hexdigest()[:32]}"


_SPLIT_DIGESTS: dict[int, tuple[Split, str]] = {}  # id -> (the split, kept alive; its digest)


def split_digest(split: Split) -> str:
    """SHA-256 of one split's labels and pixels (or, for pixels on disk, its files), per object.

    `ImageData.fingerprint()` alone is not enough: a copy of the data with one split replaced
    (the final retrain on train + validation) keeps the loader's fingerprint.
    """
    known = _SPLIT_DIGESTS.get(id(split))
    if known is not None and known[0] is split:
        return known[1]
    digest = hashlib.sha256(np.ascontiguousarray(split.y).tobytes())
    if isinstance(split.x, np.ndarray) and not isinstance(split.x, np.memmap):
        digest.update(np.ascontiguousarray(split.x).data)
    else:  # on disk: the loader's fingerprint covers the content; these are the rows
        digest.update("\0".join(split.files).encode())
    if len(_SPLIT_DIGESTS) >= 8:  # keep a few datasets alive, not every one a process loads
        _SPLIT_DIGESTS.clear()
    _SPLIT_DIGESTS[id(split)] = (split, digest.hexdigest())
    return digest.hexdigest()


def _without_trainable(config: Any) -> Any:
    """A layer config without its `trainable` flags: the phases flip them, the outputs stay."""
    if isinstance(config, dict):
        return {k: _without_trainable(v) for k, v in config.items() if k != "trainable"}
    if isinstance(config, list):
        return [_without_trainable(v) for v in config]
    return config


def file_digest(path: str) -> str:
    """SHA-256 of a weights file, remembered per (path, size, mtime) within a process."""
    stat = os.stat(path)
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"
