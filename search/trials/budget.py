"""`search.timeout`: one wall-clock budget for the whole invocation, the final stage included.

A user who gives a sweep 20 minutes wants the tested model in about 20 minutes. A budget that
only stops new trials from starting overran badly (docs/benchmarks.md section 6: a 220-s
budget ended after 817 s): a trial started just before the end ran on for minutes, and the
top-k re-evaluation (search/final/reevaluate.py) then re-trained every top trial, however poor, after
it. So the search keeps back what the final stage will spend:

- the reserve is `final.seeds` re-trainings of each current contender (`contenders`: the top
  `final.top_k` distinct configs within the noise of the best), each estimated by that trial's
  own training time, plus, with `final.retrain=true`, the crowned config's trainings on train +
  validation (each its time scaled by the larger training split; `final.retrain_seeds` of them,
  with auto as many as MEMBER_SHARE of the budget holds: the shipped ensemble's members); a lone
  contender is not re-evaluated when it will be retrained (there is nothing to choose between);
- no trial starts unless it would still end before the reserve's time (a trial cut short is
  wasted, and its last epoch eats into the reserve): a trial is priced by its kind (`kind_of`:
  its augmentation; `price`), since a trial with an augmentation preset trains phase 2
  uncached and, the first of its preset, builds its augmented copies: on cifar10-test at 1x the
  recipe's time, the flip variant queued after trial 0 was started on trial 0's price, stopped
  by the budget, and took the retraining's time (issue 25). A kind not trained yet is priced by
  the plan before trial 0 (`unseen_augmented`); a trial not yet sampled, by the cheapest kind;
- a running trial is stopped at an epoch end once the time left, less one more epoch as long as
  its last, is no more than the reserve (pruned, so it is never a contender): `BudgetStop`, an
  epoch listener the engine hands the runner, raises `OutOfTime` there (search/trials/budget_stop.py). It needs no pruner, so
  it stops the trials of a multi-objective study too (Optuna prunes only single-objective ones);
  the single-objective Optuna engine makes the same check in its pruning callback;
- the final stage re-evaluates the contenders, best first, only while each still fits beside the
  reserved retrainings, and retrains only if that still fits (else it tests the re-evaluated
  model).

A budget that cannot hold trial 0 and its test is refused before anything is created (exit 2,
naming the smallest that can; one that holds them but not the whole final stage runs, skipping
what does not fit, and the plan says so): the sweep times a trial's parts on a few batches of the
user's data first and prints the plan (search/trials/plan.py, search/trials/preflight.py). A
resumed study that has a completed trial needs no trial 0: only the final stage must fit. One
exception remains, for a trial 0 that runs longer than planned: until a trial of the study has
completed, a running trial is never stopped, so the sweep still ends with a tested model (and
overruns by the rest of that trial).

More time must buy a better model, and more sampling alone did not: on three photo sets the
base config (trial 0) stayed the best by validation through 36 trials (issue 25). So with
`search.patience=P` the search also ends once P trials in a row (complete or pruned) failed to
beat the best by more than its seed noise (one binomial standard error of an accuracy on the
validation images), and what is left of the budget goes to what is known to pay: more models of
the crowned config retrained on train + validation for the shipped ensemble (`final.retrain_seeds:
auto`, search/final/stage.py). The plan is printed before trial 0 from the probe's estimates, and
again (`plan()`) once the first trial of this invocation completes, from its measured time.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from experiments.data.augment_options import resolve_preset
from search.trials.types import Best

# A margin for what follows the trainings: testing, registering, the report. Not measured apart;
# with it, the sweeps of docs/benchmarks.md section 6 ended 13-42 s inside their budgets.
TEST_SECONDS = 5.0
# search.staged: a screen given less than this is skipped (search/engines/optuna/staged.py):
# so little time buys a few head configurations at most, and at 1x the recipe's time (where
# trial 0 and the final stage fill the budget) the search runs as without staging.
MIN_SCREEN_SECONDS = 20.0
# The kind of a trial without augmentation: its activations cached in both phases.
PLAIN = "none"
# final.retrain_seeds=auto: the share of search.timeout the reserve may hold for the crowned
# config's models retrained on train + validation (the shipped ensemble's members), as many as
# it holds up to final.ensemble and at least one. Why (docs/benchmarks.md section 11, round 13):
# averaged retrained seeds are the one measured gain (+2 to +4 points, section 10), and reserved
# for only one, a 10x sweep on cifar10-test searched to its end and shipped 3 models where 3x
# shipped 5. Half leaves the search the other half: at 1x the recipe's time one member is
# reserved (the search ends after trial 0 there anyway), at 3x and more up to five.
MEMBER_SHARE = 0.5


def kind_of(augmentation: Mapping[str, Any] | None) -> str:
    """A trial's kind, as the budget prices it: its augmentation's active settings (`PLAIN` for
    none). Trials of one kind cost alike; a new augmented kind also builds its cached copies."""
    settings = resolve_preset(augmentation)
    active = sorted(
        (key, value)
        for key, value in settings.items()
        if key != "fill_mode" and value not in (None, 0, 0.0, "none")
    )
    return ",".join(f"{key}={value}" for key, value in active) or PLAIN


@dataclass(frozen=True)
class Trained:
    """A completed trial's time, as the budget prices others by it."""

    seconds: float  # its training
    build: float  # of which, building frozen features not cached yet (trial 0's, a new kind's)
    kind: str  # `kind_of` it

    @property
    def again(self) -> float:
        """What training its kind again costs: its seconds without the build (cached now)."""
        return self.seconds - self.build


@dataclass
class Budget:
    """The invocation's deadline and the final stage's reserve, from the trials completed so far.

    `seconds` None: no budget (every check passes). `clock` is for tests.
    """

    seconds: float | None
    top_k: int = 0
    seeds: int = 0
    retrain: bool = False
    retrain_scale: float = 1.0  # (train + validation images) / training images
    distil: bool = False  # final.distil: one student trained after the ensemble (reserved)
    # Models of the crowned config retrained on train + validation (final.retrain_seeds; 1 when
    # one model ships alone); None: auto, as many as MEMBER_SHARE of the budget holds.
    members: int | None = 1
    ensemble: int = 1  # final.ensemble: auto reserves no more members than this
    # Best first: the trials the final stage would re-evaluate (search.final.reevaluate.Contenders).
    contenders: Callable[[list[Best]], list[Best]] = lambda trials: trials[:1]
    clock: Callable[[], float] = time.monotonic
    started: float | None = None  # clock() at the invocation's start; None: now
    has_model: bool = False  # a trial of the study has completed (here or in an earlier run)
    completed: list[Best] = field(default_factory=list)  # this invocation's, in finishing order
    trained: dict[int, Trained] = field(default_factory=dict)  # trial number -> its time
    # The plan's seconds for a trial of an augmented kind not trained yet (None: no plan).
    unseen_augmented: float | None = None
    patience: int | None = None  # search.patience: trials without a real gain that end the search
    noise: Callable[[float], float] = lambda value: 0.0  # one seed-noise unit of a score
    maximize: bool = True
    since_gain: int = 0  # trials finished since the best last moved by more than its noise
    leading: float | None = None  # the best score of this invocation that reset the patience
    cache_build: float = 0.0  # the most seconds a trial spent building frozen features
    planned: float | None = None  # trial 0's seconds as the plan before it estimated them
    # search.staged: the share of the search's time a screen of head configurations takes
    # after the first trial (search/engines/optuna/staged.py); 0: no screen ahead.
    screen_share: float = 0.0
    _said_plateau: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @classmethod
    def from_config(
        cls,
        config: DictConfig,
        contenders: Callable[[list[Best]], list[Best]],
        started: float | None = None,
        retrain_scale: float = 1.0,
        noise: Callable[[float], float] | None = None,
        members: int | None = 1,
    ) -> Budget:
        """The budget of `search.timeout` from `started` (a time.monotonic() reading), reserving
        for `final.top_k` x `final.seeds` re-trainings and `final.retrain`'s `members` trainings
        (search.final.stage.retrained_models); `noise`: one seed-noise unit of a score
        (search.patience counts trials that gain no more)."""
        timeout = config.search.get("timeout")
        final = config.get("final") or {}
        enabled = bool(final.get("enabled", False))
        patience = config.search.get("patience")
        return cls(
            None if timeout is None else float(timeout),
            top_k=int(final.get("top_k") or 0) if enabled else 0,
            seeds=int(final.get("seeds") or 0) if enabled else 0,
            retrain=enabled and bool(final.get("retrain")),
            retrain_scale=retrain_scale,
            distil=enabled and bool(final.get("distil")) and int(final.get("ensemble") or 1) > 1,
            members=members,
            ensemble=int(final.get("ensemble") or 1),
            contenders=contenders,
            started=started,
            patience=None if patience is None else int(patience),
            noise=noise or (lambda value: 0.0),
            maximize=config.train.direction == "maximize",
        )

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def left(self) -> float:
        """Seconds left of the budget (infinite without one; negative once overrun)."""
        if self.seconds is None:
            return float("inf")
        assert self.started is not None  # set in __post_init__
        return self.started + self.seconds - self.clock()

    def record(
        self, trial: Best, seconds: float, cache_build: float = 0.0, kind: str = PLAIN
    ) -> None:
        """A trial of `kind` completed, having trained for `seconds`, of which `cache_build`
        built frozen features that were not cached yet (the first trial on a split, or of an
        augmented kind, pays it)."""
        self.cache_build = max(self.cache_build, cache_build)
        self.has_model = True
        self.completed.append(trial)
        self.trained[trial.number] = Trained(seconds, min(cache_build, seconds), kind)
        lead = self.leading
        gain = None if lead is None else (trial.value - lead) * (1 if self.maximize else -1)
        if lead is None or (gain is not None and gain > self.noise(lead)):
            self.leading, self.since_gain = trial.value, 0
        else:
            self.since_gain += 1

    def record_pruned(self) -> None:
        """A trial was pruned or stopped: no gain, for the patience."""
        if self.leading is not None:
            self.since_gain += 1

    def plateaued(self) -> bool:
        """Whether `search.patience` trials in a row brought no gain beyond the seed noise (only
        under a time budget: without one there is no rest of the time to spend elsewhere)."""
        return (
            self.limited
            and self.patience is not None
            and self.leading is not None
            and self.since_gain >= self.patience
        )

    def estimate(self, trial: Best | None) -> float:
        """Seconds one re-training of `trial` takes on its split: its own training time when it
        ran here, less the features it built (they are cached now), else the median of this
        invocation's (None, or a trial of an earlier invocation), else 0."""
        if trial is not None and trial.number in self.trained:
            return self.trained[trial.number].again
        known = [t.again for t in self.trained.values()]
        return statistics.median(known) if known else 0.0

    def price(self, kind: str | None = None) -> float:
        """Seconds a new trial of `kind` is expected to train: the shortest of this invocation's
        trials of that kind (their builds left out), else, for an augmented kind, the plan's
        `unseen_augmented` (its copies built, phase 2 uncached); None (not sampled yet) or no
        figure: the shortest trial of any kind."""
        shortest = min((t.again for t in self.trained.values()), default=0.0)
        if kind is None:
            return shortest
        same = [t.again for t in self.trained.values() if t.kind == kind]
        if same:
            return min(same)
        if kind == PLAIN or self.unseen_augmented is None:
            return shortest
        return max(shortest, self.unseen_augmented)

    def reserve(self) -> float:
        """Seconds the final stage needs for the trials completed so far."""
        if not self.completed:
            return 0.0
        ranked = self.contenders(self.completed) if self.top_k else []
        seconds = 0.0
        if len(ranked) > 1 or not self.retrain:  # one contender and a retraining: nothing to rank
            seconds = sum(self.seeds * self.estimate(t) for t in ranked)
        # Without a ranking (final.top_k=0) the final stage retrains the best by its score.
        sign = 1 if self.maximize else -1
        crowned = ranked or [max(self.completed, key=lambda t: sign * t.value)]
        seconds += self.retrain_reserve(crowned)
        if self.distil:
            seconds += max(self.distil_seconds(t) for t in crowned)
        return seconds + TEST_SECONDS

    def retrain_reserve(self, contenders: list[Best]) -> float:
        """The retrainings the final stage keeps time for: `retrained` models of the dearest of
        `contenders`' configs, as the re-evaluation may crown any of them. Priced by the search's
        best alone, a 10x sweep on cifar10-test crowned another contender whose retraining (95 s)
        no longer fit, and shipped 3 models instead of 5 (docs/benchmarks.md section 11, round
        12). The re-evaluation gives way to them (search/final/reevaluate.py)."""
        each = max((self.retrain_seconds(t) for t in contenders), default=0.0)
        return each * self.retrained(each)

    def retrained(self, each: float) -> int:
        """How many models of the crowned config, retrained for `each` seconds apiece, the
        reserve holds: final.retrain_seeds, or with auto as many as MEMBER_SHARE of the budget
        holds, from 1 to final.ensemble (all of them without a budget: nothing is reserved)."""
        if self.members is not None:
            return self.members
        if self.seconds is None or each <= 0:
            return self.ensemble
        return max(1, min(self.ensemble, int(MEMBER_SHARE * self.seconds // each)))

    def reserve_after(self, seconds: float, cache_build: float = 0.0, kind: str = PLAIN) -> float:
        """The reserve once a first trial of `kind` has trained for `seconds`, `cache_build` of
        them building frozen features: the final stage's share in the plan before trial 0."""
        return self.ahead(seconds, cache_build, kind).reserve()

    def ahead(self, seconds: float, cache_build: float = 0.0, kind: str = PLAIN) -> Budget:
        """A copy of this budget as it will be once a first trial of `kind` has trained for
        `seconds` (`cache_build` of them building frozen features); this one is untouched."""
        ahead = dataclasses.replace(
            self,
            completed=[],
            trained={},
            cache_build=0.0,
            leading=None,
            since_gain=0,
        )
        ahead.record(Best(0.0, -1, {}, None), seconds, cache_build, kind)
        return ahead

    def retrain_seconds(self, trial: Best | None) -> float:
        """Seconds `final.retrain` takes to train `trial`'s config on train + validation (0 off):
        its training scaled by the larger split, plus the features it must build (`_rebuilt`)."""
        if not self.retrain:
            return 0.0
        return self.retrain_scale * (self.estimate(trial) + self._rebuilt(trial))

    def _rebuilt(self, trial: Best | None) -> float:
        """Seconds of frozen features a retraining of `trial` builds. Without augmentation none:
        the train + validation activations are the trials' entries joined (`Split.parts`). With
        it, the augmented copies of train + validation, as long as its kind's largest build so
        far. A trial not measured here: the largest build a trial paid (before the entries were
        joined, a 3x-budget sweep on sign-language-digits overran by 87 s: a 106-s retraining
        estimated at 30 s)."""
        if trial is None or trial.number not in self.trained:
            return self.cache_build
        kind = self.trained[trial.number].kind
        if kind == PLAIN:
            return 0.0
        return max(t.build for t in self.trained.values() if t.kind == kind)

    def distil_seconds(self, trial: Best | None) -> float:
        """Seconds `final.distil`'s student of `trial`'s config takes: it trains on what the final
        model trains on (train + validation with final.retrain)."""
        return self.retrain_seconds(trial) if self.retrain else self.estimate(trial)

    def search_over(self, kind: str | None = None) -> bool:
        """Whether no trial may start: the next, of `kind` (None: not sampled yet, so the
        cheapest), would not end before the time left is the final stage's (`price`)."""
        if self.plateaued():
            if not self._said_plateau:
                self._said_plateau = True
                noise = self.noise(self.leading) if self.leading is not None else 0.0
                print(
                    f"search: {self.since_gain} trial(s) in a row without beating "
                    f"{self.leading:.4f} by more than its seed noise ({noise:.4f}; "
                    f"search.patience={self.patience}): the {max(self.left(), 0):.0f}s left of "
                    "search.timeout go to the final stage",
                    flush=True,
                )
            return True
        return self.left() <= self.reserve() + self.price(kind)

    def too_long(self, kind: str) -> bool:
        """Whether a trial just sampled, of `kind`, must not start: it costs more than the
        cheapest kind that `search_over` let start, and would not end before the final stage's
        time. Trial 0 (no model yet) always starts. The clock is read only when the kind costs
        more."""
        if not self.limited or not self.has_model or self.price(kind) <= self.price(None):
            return False
        return self.left() <= self.reserve() + self.price(kind)

    def stops_running_trial(self, next_epoch: float = 0.0) -> bool:
        """Whether a running trial must stop at this epoch's end: the time left, less
        `next_epoch` (one more epoch as long as its last), is the final stage's, and a model
        exists without it (see the module doc). Stopped only when the time was already spent,
        each stop overran the reserve by up to an epoch, and the retraining no longer fit."""
        return self.has_model and self.left() - next_epoch <= self.reserve()

    def screen_seconds(
        self, share: float, searching: float | None = None, trial: float | None = None
    ) -> float:
        """Seconds a staged search's screen gets: `share` of the search's time (`searching`, the
        time left after the reserve), or 0 when that is under MIN_SCREEN_SECONDS or leaves no
        time for one two-phase trial (`trial`, by default the median so far) of a head it
        carries: a screen whose heads are never fine-tuned only takes time from the final stage
        (cifar10-test at 1x screened 6 heads, then started a trial the budget stopped)."""
        if searching is None:
            searching = max(self.left() - self.reserve(), 0.0)
        trial = self.estimate(None) if trial is None else trial
        screen = share * searching
        if screen < MIN_SCREEN_SECONDS or searching - screen < trial:
            return 0.0
        return screen

    def plan(self, trial: Best) -> str:
        """What the rest of the budget buys, from `trial`'s measured time (the first trial this
        invocation completed): printed so a user knows what to expect before waiting for it."""
        known = self.trained.get(trial.number)
        seconds = self.estimate(trial) if known is None else known.seconds
        later = self.estimate(trial)  # a later trial like it: its features cached
        reserve, left = self.reserve(), max(self.left(), 0.0)  # one reading of the clock
        searching = max(left - reserve, 0.0)
        screen = self.screen_seconds(self.screen_share, searching, later)
        more = int((searching - screen) // later) if later > 0 else 0
        stop = (
            f", or fewer once {self.patience} trial(s) in a row bring no gain beyond the seed noise "
            "(search.patience)"
            if self.patience is not None
            else ""
        )
        retrain = self.retrain_seconds(trial)
        extra = (
            f"; it holds {self.retrained(retrain)} model(s) of the crowned config retrained on "
            f"train + validation at about {retrain:.0f}s each (final.retrain_seeds), and time "
            "left over buys more"
            if retrain
            else ""
        )
        planned = f" (planned {self.planned:.0f}s)" if self.planned is not None else ""
        first = (
            f"a screen of head configurations on cached features for about {screen:.0f}s "
            "(search.staged), then "
            if screen
            else ""
        )
        return (
            f"plan: trial {trial.number} trained in {seconds:.0f}s{planned}; {left:.0f}s of "
            f"search.timeout left: {first}about {more} more trials like it{stop}, then the "
            "final stage's "
            f"{reserve:.0f}s (re-evaluation, retraining, test){extra}"
        )

    def fits(self, seconds: float) -> bool:
        """Whether `seconds` more of the final stage fit in what is left."""
        return seconds + TEST_SECONDS <= self.left()
