"""Distil a teacher (the shipped ensemble) into one student trained like a trial.

A transfer sweep ships the average of up to 5 models (experiments/models/ensemble.py): a few
test points more accurate than one model, and as many times slower to predict. A student of the
crowned config, trained against the ensemble's soft predictions, keeps one model's latency and
part of that gain (measured in docs/distil.md with bench/distil.py).

The student is trained by `run_trial` itself, so it is built, seeded, augmented, compiled,
two-phased and feature-cached exactly as a trial of its config; only two things differ:
- `train.distil` (temperature, alpha) in its config makes `compile_model` use the distillation
  loss (experiments/models/losses.py `DistillationLoss`) and the matching accuracy metric;
- the data's train and validation splits carry the teacher's probabilities (`Split.soft`),
  which every input pipeline, the feature cache's included, feeds with the labels as one target
  row, so they are shuffled and batched with their images.
The teacher predicts each image once, before training, on the images as they are: the student's
own augmentation still applies to its input, and its target is the teacher's view of the clean
image (one pass instead of one per epoch; the teacher's view of the same augmented batch is not
measured). Validation gets soft targets too, so `val_loss` is the same loss; `val_accuracy` is
against the true labels, as for any trial.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import keras
import numpy as np
from omegaconf import DictConfig, open_dict

from experiments.data.pipeline import dataset
from experiments.data.splits import ImageData
from experiments.models.losses import check_distil
from experiments.training.trial import TrialResult, run_trial

# Chosen with bench/distil.py on sign-language-digits (docs/distil.md "Chosen defaults"): the
# members are near-certain on the images they were trained on (98% right), so only a soft
# temperature shows the student their second choices; T=1 was no better than no teacher, T=4
# was best of 1, 2, 4, and alpha=0.1 lost to 0.5 at T=4 (the true labels still help).
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.5
PREDICT_BATCH = 64  # the teacher's inference batch (not part of the result)
SOFT_SPLITS = ("train", "val")  # the test split is never read before the final test


def soft_targets(
    data: ImageData, teacher: keras.Model, batch_size: int = PREDICT_BATCH
) -> ImageData:
    """`data` with the teacher's class probabilities on its train and validation splits.

    One inference pass per split, un-augmented (`training=False`), in the split's order. The
    teacher must return probabilities (rows of non-negative numbers summing to 1) over the data's
    classes, as every sweeplab model and their average do; logits would be silently wrong targets,
    so they are refused.
    """
    splits = {}
    for name in SOFT_SPLITS:
        images = dataset(data, name, batch_size, training=False, seed=0).map(lambda x, y: x)
        probabilities = np.asarray(teacher.predict(images, verbose=0), dtype=np.float32)
        expected = (len(data.split(name)), data.num_classes)
        if probabilities.shape != expected:
            raise ValueError(
                f"the teacher predicts {probabilities.shape} on the {name} split, not {expected} "
                "(images x classes)"
            )
        sums = probabilities.sum(axis=1)
        if probabilities.min() < 0 or not np.allclose(sums, 1.0, atol=1e-3):
            raise ValueError(
                "the teacher must return class probabilities (a softmax or an average of them); "
                f"its rows sum to {sums.min():.3g}..{sums.max():.3g}"
            )
        splits[name] = replace(data.split(name), soft=probabilities)
    return replace(data, train=splits["train"], val=splits["val"])


def distil_config(
    cfg: DictConfig, temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA
) -> DictConfig:
    """A copy of `cfg` whose training is distilled: `train.distil` = {temperature, alpha}."""
    check_distil({"temperature": temperature, "alpha": alpha})
    student = copy.deepcopy(cfg)  # struct flags and interpolations kept, the caller's untouched
    with open_dict(student):
        student.train.distil = {"temperature": float(temperature), "alpha": float(alpha)}
    return student


def distil(
    cfg: DictConfig,
    data: ImageData,
    teacher: keras.Model,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrialResult:
    """Train a fresh model of `cfg` on `data` against `teacher`'s soft predictions.

    `cfg` is the student's config as a trial would get it (the crowned config; its seed, epochs,
    fine-tune schedule, augmentation and label smoothing apply). `data` is what it trains on, as
    the caller chooses: train, or train + validation for the final retraining
    (`experiments.data.splits.train_plus_val`); the teacher predicts its train and validation splits first.
    Loss: alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T), T = temperature.
    Returns the trial's result: its `model` is the plain student, taking raw pixels, one model's
    cost to serve.
    """
    return run_trial(distil_config(cfg, temperature, alpha), soft_targets(data, teacher), callbacks)
