"""What the budget's probe measured (experiments/training/probe.py), without TensorFlow: the
sweep process reads these to plan (search/trials/plan.py) and never imports TensorFlow while
its workers train."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseCost:
    """One phase's fit, in seconds: `fixed` once per fit (making and compiling the trainee,
    tracing its train and test functions), `step` per training batch, `eval_step` per
    validation batch, `epoch` per epoch beyond its steps (the fit's own loop)."""

    fixed: float
    step: float
    eval_step: float
    epoch: float = 0.0


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
