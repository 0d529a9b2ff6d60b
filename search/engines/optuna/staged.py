"""The staged search (`search.staged`): search where it is cheap, fine-tune where it pays.

A two-phase transfer trial spends most of its time in phase 2 (the backbone partly open, every
epoch through it), while a phase-1 epoch on cached frozen features costs a few percent of an
uncached one (docs/benchmarks.md section 11). So after trial 0 (the base config, unchanged, so a
budget that only fits it is spent as before) and its `search.variants` (their kinds priced in the
reserve before the screen takes its share) a *screen* trains many head configurations, phase 1
only (train.epochs = model.fine_tune.head_epochs = search.staged.epochs), without augmentation, so
on cached activations throughout, with a Hyperband pruner over those epochs (successive halving).
It samples only the head's knobs (every space key except `model.fine_tune.*`,
`data.augmentation.*` and `train.epochs`). Its study is `<study>-screen` in the same storage, so a
kill -9 resumes it like any study; its MLflow runs carry that study name (the main study's
leaderboard and report never mix them in) and are nested under one `screen` run under the sweep's
parent run, so the MLflow UI stays usable with hundreds of them.

Then the best `search.staged.carry` heads are queued in the main study, round robin, with their
head values fixed (Optuna's `enqueue_trial` with part of the params): the sampler draws the rest,
the fine-tuning knobs and augmentation, for each. The main study's user attr `staged.carried`
records that this was done, so a resumed sweep neither screens nor queues again; each queued
trial carries `screen_head` / `screen_slot`, so a kill between two queuings queues only what is
missing. The Keras Tuner engine has no staged search: the sweep says so and runs one stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from search.engines.optuna.engine import OptunaEngine, ranked
from search.space.baseline import baseline
from search.space.spec import Param
from search.trials.budget import MIN_SCREEN_SECONDS, Budget
from search.trials.runner import TrialRunner, _short
from search.trials.types import Best

CARRIED = "staged.carried"  # main study user attr: the screen trials whose heads were queued
# Two-phase trials queued per carried head at most: a ceiling, the budget ends them sooner.
MAX_SLOTS = 20
SCREEN_COST = 4.5  # a two-phase trial / a screen trial, in seconds (section 11's rank bench)


def fixed_by_screen(name: str) -> bool:
    """Space keys the screen does not sample: the fine-tuning phase's and what would make a
    trial uncached (augmentation) or two-phase (the epochs)."""
    return name == "train.epochs" or name.startswith(("model.fine_tune.", "data.augmentation."))


def head_space(space: list[Param]) -> list[Param]:
    """The knobs the screen samples (the head's): the rest stays the base config's."""
    return [p for p in space if not fixed_by_screen(p.name)]


def screen_trials(cfg: DictConfig) -> int:
    """The screen's head configurations: `search.staged.trials` under a time budget (the share
    of the time ends it first). Without one, the heads that cost about `share` of a search of
    `search.n_trials` two-phase trials, a screen trial costing 1/SCREEN_COST of one (docs/
    benchmarks.md section 11: 7-13 s against 37-67 s): a 2-trial sweep once screened 120 heads."""
    staged = cfg.search.staged
    ceiling = int(staged.trials)
    if cfg.search.get("timeout") is not None:
        return ceiling
    share = float(staged.share)
    heads = math.ceil(share / (1 - share) * SCREEN_COST * int(cfg.search.n_trials))
    return max(1, min(ceiling, heads))


def screen_config(cfg: DictConfig) -> DictConfig:
    """The base config of a screen trial: phase 1 only, on cached features, pruned by Hyperband
    over its epochs; no variants (the base head is the screen's trial 0)."""
    staged = cfg.search.staged
    epochs = int(staged.get("epochs") or cfg.model.fine_tune.head_epochs)
    screen = cfg.copy()
    with open_dict(screen):
        screen.train.epochs = epochs
        screen.model.fine_tune.head_epochs = epochs
        screen.data.augmentation = OmegaConf.create({"preset": "none"})
        screen.search.n_trials = screen_trials(cfg)
        screen.search.variants = []
        screen.search.patience = None
        screen.search.pruner = "hyperband"
        screen.search.pruners.hyperband = OmegaConf.create(
            {
                "_target_": "optuna.pruners.HyperbandPruner",
                "min_resource": 1,
                "max_resource": epochs,
                "reduction_factor": 3,
            }
        )
    return screen


class ScreenEngine(OptunaEngine):
    """The screen's study: trial 0 of a new one is the base config's head, queued without the
    main study's announcement (and without its variants: they are augmentation)."""

    def _enqueue_baseline(self, cfg: DictConfig) -> None:
        if self.study.get_trials(deepcopy=False):
            return
        base = baseline(self.space, cfg)
        if base.usable:
            self.study.enqueue_trial(
                base.values, user_attrs={"baseline": True}, skip_if_exists=True
            )


class ScreenBudget(Budget):
    """The screen's share of the time: no final stage to keep back, a screen line for a plan."""

    def reserve(self) -> float:
        return 0.0

    def search_over(self, kind: str | None = None) -> bool:
        """Whether the screen's share is spent: not even its shortest trial would fit; said once
        here, as the screen's end (the engine's line would say the time is the final stage's).
        Every screen trial is of one kind (no augmentation): `kind` changes nothing."""
        shortest = min((t.seconds for t in self.trained.values()), default=0.0)
        over = self.limited and self.left() <= shortest
        if over and not self._said_plateau:
            self._said_plateau = True
            print(
                f"screen: its share of search.timeout (search.staged.share) is spent after "
                f"{len(self.trained)} complete head configuration(s)",
                flush=True,
            )
        return over

    def plateaued(self) -> bool:
        """Ended by its share (the engine asks, to say the end only once)."""
        return self._said_plateau

    def plan(self, trial: Best) -> str:
        seconds = self.estimate(trial)
        more = int(self.left() // seconds) if seconds > 0 and self.limited else 0
        share = f"{max(self.left(), 0):.0f}s left of its share: about {more} more" if more else ""
        return f"screen: a head configuration trained in {seconds:.1f}s; {share}".rstrip("; ")


class ScreenRunner(TrialRunner):
    """A trial runner for screen trials: no model is logged (a screen trial is never shipped,
    and saving hundreds of models would cost more than training their heads)."""

    def _worth_keeping(self, metrics: Mapping[str, float]) -> bool:
        return False

    def _print(
        self, number: int, params: Mapping[str, Any], outcome: str, seconds: float | None
    ) -> None:
        """`screen N ...`: never taken for a two-phase trial's line (the benches count those)."""
        shown = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        timing = f"{seconds:6.1f}s" if seconds is not None else " " * 7
        print(f"screen {number:>3}  {outcome:<24} {timing}  {shown}", flush=True)


@dataclass
class Screen:
    """One screen stage: its study, and what it hands the main study."""

    cfg: DictConfig  # the sweep's config
    space: list[Param]  # the sweep's space
    name: str  # the main study's name

    @property
    def study_name(self) -> str:
        return f"{self.name}-screen"

    def done(self, main: OptunaEngine) -> bool:
        """Whether an earlier run (or this one) already carried the screen's heads."""
        return CARRIED in main.study.user_attrs

    def seconds(self, budget: Budget) -> float | None:
        """The screen's share of the search's time now left (None: no time budget; 0: too little
        for a screen and a two-phase trial after it, `Budget.screen_seconds`)."""
        if not budget.limited:
            return None
        return budget.screen_seconds(float(self.cfg.search.staged.share))

    def run(self, main: OptunaEngine, runner: TrialRunner) -> list[Best]:
        """Screen head configurations on cached features, then queue the best in `main`."""
        from search.execution.resume import recover

        seconds = self.seconds(runner.budget)
        if seconds is not None and seconds < MIN_SCREEN_SECONDS:
            print(
                "search.staged: the time left after the final stage's reserve holds no screen "
                f"of {MIN_SCREEN_SECONDS:.0f}s or more (search.staged.share of it) with a "
                "two-phase trial of its best head after it; the search goes on in one stage",
                flush=True,
            )
            main.study.set_user_attr(CARRIED, [])
            return []
        config = screen_config(self.cfg)
        engine = ScreenEngine(config, head_space(self.space), self.study_name)
        budget = ScreenBudget(seconds, clock=runner.budget.clock, has_model=True)
        screen = ScreenRunner(
            config,
            runner.tracker,
            {**runner.tags, "study": self.study_name, "stage": "screen"},
            engine.is_pruned,
            data=runner.data_for(config),
            pool=runner.pool,
            budget=budget,
        )
        recover(engine, runner.tracker, self.study_name)
        left = int(config.search.n_trials) - engine.finished()
        print(
            f"search.staged: screen stage, study {self.study_name!r}: head configurations "
            f"{'for ' + format(seconds, '.0f') + 's' if seconds is not None else ''} on cached "
            f"features ({config.train.epochs} phase-1 epochs each, Hyperband), "
            f"{engine.finished()} of {config.search.n_trials} done",
            flush=True,
        )
        if left > 0:
            with runner.tracker.stage_run("screen", {"study": self.study_name, "stage": "screen"}):
                engine.optimize(screen, left)
        carried = ranked(engine.study, int(self.cfg.search.staged.carry))
        self.carry(main, carried, runner.budget)
        return carried

    def carry(self, main: OptunaEngine, heads: list[Best], budget: Budget) -> None:
        """Queue two-phase trials of `heads` (round robin) in the main study, head values fixed;
        only the (head, slot) pairs not queued yet, then mark the study carried."""
        slots = self.slots(budget, len(heads))
        queued = {
            (t.user_attrs.get("screen_head"), t.user_attrs.get("screen_slot"))
            for t in main.study.get_trials(deepcopy=False)
        }
        for slot in range(slots):
            for head in heads:
                if (head.number, slot) in queued:
                    continue
                main.study.enqueue_trial(
                    dict(head.params),
                    user_attrs={"screen_head": head.number, "screen_slot": slot},
                )
        main.study.set_user_attr(CARRIED, [h.number for h in heads])
        if heads:
            shown = ", ".join(f"#{h.number} ({h.value:.4f})" for h in heads)
            print(
                f"search.staged: the best heads of the screen, {shown}, go on to two-phase "
                f"trials (up to {slots} each), the sampler choosing their fine-tuning knobs",
                flush=True,
            )

    def slots(self, budget: Budget, heads: int) -> int:
        """Two-phase trials queued per head: as many as the time left buys (by the median
        trial time so far), at most MAX_SLOTS; all MAX_SLOTS without a time budget."""
        if not heads:
            return 0
        if not budget.limited:
            return MAX_SLOTS
        seconds = budget.estimate(None)
        fit = (budget.left() - budget.reserve()) / seconds if seconds > 0 else MAX_SLOTS
        return max(1, min(MAX_SLOTS, math.ceil(fit / heads)))


def optimize_staged(
    cfg: DictConfig, main: OptunaEngine, runner: TrialRunner, space: list[Param], name: str
) -> None:
    """The staged search of study `name`: trial 0 and its variants, the screen (unless an
    earlier run carried its heads), then the main study's trials, the carried heads first."""
    screen = Screen(cfg, space, name)
    total = int(cfg.search.n_trials)
    if not screen.done(main):
        runner.budget.screen_share = float(cfg.search.staged.share)
        main.first_trials(runner)  # trial 0, then its variants
        runner.budget.screen_share = 0.0
        # The next trial in the queue, not the cheapest: a variant too dear for the time left
        # stays first in it (queued for a resume) and ends the search, so heads screened now would
        # never be fine-tuned (cifar10-test at 3x screened 6 heads for 23 s, then stopped).
        if main.finished() < total and not runner.budget.search_over(main.next_kind(runner)):
            screen.run(main, runner)
    else:
        carried = main.study.user_attrs[CARRIED]
        print(
            f"search.staged: the screen stage ended in an earlier run (heads carried: "
            f"{', '.join(f'#{n}' for n in carried) or 'none'}); the two-phase trials go on",
            flush=True,
        )
    left = total - main.finished()
    # Optuna starts a trial before its first stop check: ask the budget first (at 1x the
    # recipe's time, trial 0 and the final stage fill it).
    if left > 0 and runner.budget.search_over(main.next_kind(runner)):
        if not runner.budget.plateaued():  # a plateau says so itself
            print("search.timeout: the time left is the final stage's; no new trial", flush=True)
    elif left > 0:
        main.optimize(runner, left)
