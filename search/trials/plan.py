"""The plan printed before trial 0: what `search.timeout` buys, from the probe's timings.

`experiments/training/probe.py` times a trial's parts on a few batches of the user's data in the
process that trains trials. Here they become seconds, without TensorFlow (unit-tested apart):

    trial = build + cache + per phase: fixed + epochs x (train steps x step + val steps x eval
            step + EPOCH_SECONDS)
    cache = trial 0: the extractor's tracing + its misses x seconds an image, + reading the
            entries that exist; a later trial: reading every entry

and the trial count is what the search's share (the budget less the time spent, trial 0 and the
final stage's reserve, `Budget.reserve_after`) holds at a later trial's cost plus TRIAL_SECONDS.
A budget that cannot hold the time spent, trial 0 and its test is refused before anything is
created (`refusal`), naming the smallest that can; one that holds them but not the whole final
stage runs, and the plan says what it skips.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from omegaconf import DictConfig

from experiments.training.timings import PhaseCost, Probe
from search.trials.budget import PLAIN, TEST_SECONDS, Budget

# An epoch's cost beyond the fit's own (timed by the probe): the trial's callbacks, the worker's
# report and the verdict it waits for (docs/benchmarks.md, section 13).
EPOCH_SECONDS = 0.05
# The sweep's per-trial cost around the training (the MLflow run, the trial's model saved and
# logged when it is the best so far, the next trial sampled): the later trials of
# tests/test_plan.py's sweep trained 4.5-4.8 s each and followed each other 5.9 s apart.
TRIAL_SECONDS = 1.2
# Reading and verifying a cached entry (SHA-256 over the array), bytes a second: 816 MB of
# sign-language-digits' activations at 224 px read in 3.2 s (2 cores, load average 15). And
# what building them costs beyond the inference the probe times, per byte built: gathering the
# outputs, hashing and writing them (2.2 s of writing and 3.1 s more of inference than the
# probe's per-image figure for those 816 MB, at load average 6).
READ_BYTES_PER_SECOND = 250e6
WRITE_BYTES_PER_SECOND = 150e6
# Tracing the whole model's phase-2 training against tracing the upper model's (on cached
# activations): 1.7x in both of two probes on sign-language-digits at 224 px.
UNCACHED_FIXED = 1.7


@dataclass(frozen=True)
class Shape:
    """What a trial's seconds depend on besides the probe: its data, batch and epochs."""

    train_images: int
    val_images: int
    batch_size: int
    epochs: int
    head_epochs: int  # phase 1's epochs (all of them for a one-phase model)
    copies: int = 0  # augmented copies an augmented trial's phase 1 cycles over (built once)

    @classmethod
    def of(cls, cfg: DictConfig, train_images: int, val_images: int) -> Shape:
        epochs = int(cfg.train.epochs)
        fine_tune = cfg.model.get("fine_tune")
        head = epochs if fine_tune is None else min(int(fine_tune.head_epochs), epochs)
        cache = cfg.model.get("feature_cache") or {}
        copies = min(int(cache.get("augmented_copies") or 0), head) if fine_tune else 0
        return cls(train_images, val_images, int(cfg.train.batch_size), epochs, head, copies)

    def steps(self) -> tuple[int, int]:
        """(training batches, validation batches) of one epoch."""
        return (
            math.ceil(self.train_images / self.batch_size),
            math.ceil(self.val_images / self.batch_size),
        )


def epoch_seconds(cost: PhaseCost, shape: Shape) -> float:
    """One epoch of a phase: its training and validation steps and the per-epoch overhead."""
    train, val = shape.steps()
    return train * cost.step + val * cost.eval_step + cost.epoch + EPOCH_SECONDS


def uncached_phase2(probe: Probe, shape: Shape) -> PhaseCost | None:
    """Phase 2 of a later trial with an augmentation preset (uncached: the whole model), priced
    from the cached phase 2: its steps plus the frozen part's inference of a batch, its fixed
    part (tracing the whole model's training) UNCACHED_FIXED times the upper model's. None: not
    a cached two-phase trial, or phase 2 is trial 0's own (timed)."""
    cached = probe.phases.get(2)
    if not probe.cached or probe.phase2_uncached or cached is None:
        return None
    frozen = shape.batch_size * probe.extract_image
    fixed = UNCACHED_FIXED * cached.fixed
    return PhaseCost(fixed, cached.step + frozen, cached.eval_step + frozen, cached.epoch)


def phase_seconds(probe: Probe, shape: Shape, augmented: bool = False) -> float:
    """Both phases' fits of a trial (`augmented`: phase 2 uncached, as a later trial with an
    augmentation preset trains it)."""
    seconds = 0.0
    for phase, epochs in ((1, shape.head_epochs), (2, shape.epochs - shape.head_epochs)):
        cost = probe.phases.get(phase)
        if phase == 2 and augmented:
            cost = uncached_phase2(probe, shape) or cost
        if epochs > 0 and cost is not None:
            seconds += cost.fixed + epochs * epoch_seconds(cost, shape)
    return seconds


def cache_seconds(probe: Probe, shape: Shape, first: bool = True) -> float:
    """The feature cache's part of a trial: trial 0 builds its missing entries and reads the
    others; a later trial of the same cut reads them all."""
    if not probe.cached:
        return 0.0
    if not first:
        return _read(probe.stored_bytes + probe.build_bytes)
    return build_seconds(probe) + _read(probe.stored_bytes)


def build_seconds(probe: Probe) -> float:
    """The seconds trial 0 spends building activations: the frozen part's inference of its
    missing images and writing the entries."""
    if not probe.cached or not probe.build_images:
        return 0.0
    inference = probe.extract_fixed + probe.build_images * probe.extract_image
    return inference + probe.build_bytes / WRITE_BYTES_PER_SECOND


def copies_seconds(probe: Probe, shape: Shape) -> float:
    """Building the augmented copies of the training images' activations, which the first trial
    of an augmentation preset pays: the frozen part's inference of each copy, and its writing."""
    if not probe.cached or not shape.copies:
        return 0.0
    cached = probe.build_images or shape.train_images + shape.val_images
    image_bytes = (probe.build_bytes + probe.stored_bytes) / max(cached, 1)
    images = shape.copies * shape.train_images
    return probe.extract_fixed + images * (
        probe.extract_image + image_bytes / WRITE_BYTES_PER_SECOND
    )


def _read(nbytes: int) -> float:
    return nbytes / READ_BYTES_PER_SECOND


def trial_seconds(probe: Probe, shape: Shape, first: bool = True, augmented: bool = False) -> float:
    """Seconds a trial trains (the `train_seconds` its line prints): trial 0 (`first`) or a
    later one, whose entries exist; `augmented`: a later trial with an augmentation preset (its
    phase 2 uncached; the first of each preset also builds its copies, not counted here)."""
    cache = cache_seconds(probe, shape, first)
    return probe.build + cache + phase_seconds(probe, shape, augmented)


@dataclass(frozen=True)
class Plan:
    """What the budget buys, before trial 0."""

    budget: float  # search.timeout
    spent: float  # seconds of it gone before trial 0 (checks, data, the probe)
    probe: float  # the probe's own seconds
    trial0: float  # trial 0's training, estimated
    later: float  # a later trial like trial 0 (its activations cached), with the sweep's part
    augmented: float | None  # a later trial with an augmentation preset (phase 2 uncached)
    final: float  # the final stage's reserve after trial 0
    # The least of it: with final.retrain_seeds=auto, one retrained model (the reserve holds more
    # as the budget grows); None: `final`.
    least_final: float | None = None
    has_model: bool = False  # the study has a completed trial (resumed): no trial 0 needed
    final_parts: str = "test"  # what the final stage's share buys, as the plan says it
    screen: float = 0.0  # search.staged: the search's seconds a screen of heads takes first
    copies: float = 0.0  # building a preset's augmented copies (its first trial pays them)

    @property
    def needed(self) -> float:
        """The smallest budget that ends with a tested model: what was spent, trial 0 and its
        test. The rest of the final stage (re-evaluation, retraining) runs only where it fits,
        as after any trial (search/trials/budget.py): at 1x the seed's recipe's time on a quiet
        machine, cifar10-test fit trial 0 but not its retraining (81 s given, 92 s for both)."""
        return self._before() + TEST_SECONDS

    @property
    def whole(self) -> float:
        """The smallest budget that fits the whole final stage after trial 0 (with auto, one
        retrained model: a larger budget reserves more, up to final.ensemble)."""
        least = self.final if self.least_final is None else self.least_final
        return self._before() + least

    def _before(self) -> float:
        if self.has_model:
            return self.spent
        return self.spent + self.trial0 + TRIAL_SECONDS

    @property
    def fits(self) -> bool:
        return self.budget >= self.needed

    @property
    def complete(self) -> bool:
        """Whether the whole final stage fits after trial 0."""
        return self.budget >= self.whole

    @property
    def searching(self) -> float:
        """Seconds for the trials after trial 0."""
        return max(self.budget - self._before() - self.final, 0.0)

    def trials(self) -> int:
        """About how many more trials like trial 0 the search's share holds (after the screen)."""
        return int((self.searching - self.screen) // self.later) if self.later > 0 else 0

    def smallest(self, whole: bool = False) -> int:
        """`needed` (`whole`: with the whole final stage), rounded up to a multiple of 10 s."""
        return int(math.ceil((self.whole if whole else self.needed) / 10.0) * 10)


def make_plan(
    probe: Probe, shape: Shape, budget: Budget, spent: float, has_model: bool = False
) -> Plan:
    """The plan of `budget` (search.timeout) after `spent` seconds, from the probe's timings."""
    assert budget.seconds is not None  # planned only under a budget
    trial0 = trial_seconds(probe, shape, first=True)
    later = trial_seconds(probe, shape, first=False) + TRIAL_SECONDS
    augmented = None
    if uncached_phase2(probe, shape) is not None:
        augmented = trial_seconds(probe, shape, first=False, augmented=True) + TRIAL_SECONDS
    # Trial 0 with augmentation (its phase 2 timed uncached) retrains with its copies built.
    kind = "augmented" if probe.phase2_uncached else PLAIN
    ahead = budget.ahead(trial0, build_seconds(probe), kind)
    members = ahead.retrained(ahead.retrain_seconds(ahead.completed[0]))
    least = dataclasses.replace(ahead, members=ahead.members or 1).reserve()
    parts = [
        name
        for name, on in (
            ("re-evaluation", budget.top_k and budget.seeds),
            (f"retraining ({members} model{'s' * (members > 1)})", budget.retrain),
            ("distillation", budget.distil),
        )
        if on
    ]
    return Plan(
        budget.seconds, spent, probe.seconds, trial0, later, augmented, ahead.reserve(), least,
        has_model, ", ".join([*parts, "test"]), copies=copies_seconds(probe, shape),
    )  # fmt: skip


def plan_lines(plan: Plan, val_images: int, patience: int | None) -> list[str]:
    """The plan as printed before trial 0 (a stage's line goes after the search's)."""
    first = (
        "the study has a model already (a completed trial): no trial 0 is needed"
        if plan.has_model
        else f"trial 0 about {plan.trial0:.0f}s"
    )
    lines = [
        f"plan: search.timeout={plan.budget:g}s; {plan.spent:.0f}s spent on the set-up (the "
        f"probe of a trial's parts: {plan.probe:.1f}s); {first}; the final stage "
        f"{plan.final:.0f}s ({100 * plan.final / plan.budget:.0f} % of the budget: "
        f"{plan.final_parts})",
    ]
    search = (
        f"plan: search {plan.searching:.0f}s: about {plan.trials()} more trials like trial 0 "
        f"({plan.later:.0f}s each, its activations cached)"
    )
    if plan.augmented is not None:
        fewer = int(plan.searching // plan.augmented) if plan.augmented > 0 else 0
        first = f", the first of each preset {plan.copies:.0f}s more" if plan.copies else ""
        search += (
            f", or {fewer} with an augmentation preset ({plan.augmented:.0f}s each, phase 2 "
            f"uncached{first})"
        )
    if patience is not None:
        search += f"; fewer once {patience} trials in a row bring no gain (search.patience)"
    lines.append(search + "; pruned trials cost less, so more of them fit")
    if not plan.complete:
        lines.append(
            f"plan: the final stage's {plan.final_parts} (about {plan.final:.0f}s) does not fit "
            f"whole after trial 0: what does not fit is skipped, and trial 0's model is tested "
            f"as it is; search.timeout={plan.smallest(whole=True)} gives the whole final stage"
        )
    if plan.screen:  # the stage's line (search/engines/optuna/staged.py)
        lines.append(
            f"plan: of the search, about {plan.screen:.0f}s go first to a screen of head "
            "configurations on cached features (search.staged), whose best heads the two-phase "
            "trials above then fine-tune"
        )
    noise = math.sqrt(0.9 * 0.1 / max(val_images, 1))
    lines.append(
        f"plan: to watch: the best val_accuracy usually comes with trial 0 and its variants; a "
        f"later gain below {100 * noise:.1f} points (one standard error at 0.90 on "
        f"{val_images} validation images) is seed noise; the search ends by about "
        f"{plan.budget - plan.final:.0f}s, the tested model by {plan.budget:g}s"
    )
    return lines


def refusal(plan: Plan) -> str:
    """The paragraph that refuses a budget too small for trial 0 and its test."""
    return (
        f"search.timeout={plan.budget:g} is too small: this sweep needs about "
        f"{plan.needed:.0f}s to end with a tested model: {plan.spent:.0f}s to start (checks, "
        f"data, timing a trial's parts on a few batches of your data), ~{plan.trial0:.0f}s for "
        f"trial 0 and ~{TEST_SECONDS:.0f}s to test it; the whole final stage "
        f"({plan.final_parts}) takes ~{plan.final:.0f}s. Give search.timeout={plan.smallest()} "
        f"or more ({plan.smallest(whole=True)} for the whole final stage), shrink the trial "
        "(train.epochs, "
        "model.input_size, data.image_size) or the final stage "
        "(final.retrain=false, final.top_k=0), or search.timeout=null for no limit. Nothing "
        "was created."
    )
