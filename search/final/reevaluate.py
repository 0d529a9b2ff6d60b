"""Choosing the winner without the winner's curse: re-train the top k trials with more seeds.

The best of many trials by one noisy validation score is partly the luckiest one (a few hundred
validation images; a different seed for weight init, shuffling and augmentation moves the score
by points). Google's deep learning tuning playbook: re-train the top few with several seeds and
pick the best MEAN. So before the final test, `final.top_k` distinct configs (best validation
first) are each trained `final.seeds` more times with new training seeds, on the same data split
(the split's seed, `seed`, is untouched, so test images never enter any training or choice), and
the config with the best mean score over all its trainings, the search's and the new seeds', is
crowned. The search's score is the one the config was selected for, biased upward; every
contender was selected by its own, so each mean carries that bias, diluted by the new seeds.
Round 7 left it out, which crowned a config the budget could not compare: under
`search.timeout` a contender whose re-training does not fit is skipped, and a re-evaluated config
whose new score fell below the skipped one's was crowned all the same (sign-language-digits:
trial 1, search 0.974, new seed 0.945, over trial 0's 0.968). Now a skipped contender competes
with the one score it has.

Only contenders are re-trained (`Contenders`): the top k within the noise of the best, and,
under `search.timeout`, only while each still fits in the budget (search/trials/budget.py).

The model the final stage then tests and registers is the crowned config's re-trained model
with the best validation score among its seeds (or, with `final.retrain=true`, the crowned config
retrained on train + validation); the spread (every score, mean, std) goes to the parent run.
Only the re-trained models the final stage may still use are kept in memory
(`Reevaluation.trained`): the crowned config's best seed, and with `final.ensemble` = n above 1
the n - 1 best-scored others that read the same images, which the shipped model may average with
it (search/final/ensemble.py); with `final.ensemble=1` that is one model, however many were
trained. A re-training that diverges (`TrialFailed`, a NaN loss) is skipped with its reason: the
config competes with the scores it has.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from omegaconf import DictConfig, open_dict

from experiments.errors import UserInputError
from search.final.ensemble import Member, in_memory

if TYPE_CHECKING:  # search.trials.runner loads Keras; the config check must not
    from search.trials.budget import Budget
    from search.trials.runner import TrialRunner
    from search.trials.types import Best


@dataclass
class Candidate:
    """One contender: its original trial and the scores of its re-trainings (none when the
    budget skipped it)."""

    trial: Best
    seeds: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failed: dict[int, str] = field(default_factory=dict)  # seed -> why its training failed

    @property
    def every_score(self) -> list[float]:
        """The search's score, then the new seeds'."""
        return [float(self.trial.value), *self.scores]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.every_score)

    @property
    def std(self) -> float:
        """Sample standard deviation over every training of the config (0 for one)."""
        return statistics.stdev(self.every_score) if len(self.every_score) > 1 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial.number,
            "run_id": self.trial.run_id,
            "params": self.trial.params,
            "search_score": self.trial.value,
            "seeds": self.seeds,
            "scores": self.scores,
            # Never re-trained (the budget skipped it, or each re-training failed): no spread to
            # report, only the search's score ("skipped", not a mean with std 0.0).
            **(
                {"mean": self.mean, "std": self.std}
                if self.scores
                else {"skipped": True, "mean": None, "std": None}
            ),
            "seconds": round(self.seconds, 1),
            **({"failed": {str(k): v for k, v in self.failed.items()}} if self.failed else {}),
        }


@dataclass
class Reevaluation:
    """The candidates in search order, the crowned one and its model to test."""

    candidates: list[Candidate]
    crowned: Candidate
    model: Any  # the crowned config's re-trained model with the best score; None: not re-trained
    # The re-trained models still in memory: the crowned one's and those final.ensemble may use.
    trained: list[Member] = field(default_factory=list)


def settings(cfg: DictConfig) -> tuple[int, int]:
    """(final.top_k, final.seeds): top_k 0 switches re-evaluation off. Each value's type and range
    is a row of search/config/rules.py; a re-evaluation needs a seed to re-train with."""
    final = cfg.get("final") or {}
    top_k, seeds = final.get("top_k", 0), final.get("seeds", 0)
    if top_k and seeds == 0:
        raise UserInputError(
            f"final.seeds={seeds!r} must be a whole number of 1 or more with final.top_k={top_k} "
            "(how many new seeds each of the best trials is re-trained with), or final.top_k=0 "
            "to test the best trial as it is."
        )
    return int(top_k), int(seeds)


def distinct(trials: list[Best]) -> list[Best]:
    """Best first, one trial per config (Hyperband rounds and re-queued trials repeat one)."""
    seen: list[dict[str, Any]] = []
    kept = []
    for trial in trials:
        if trial.params not in seen:
            seen.append(trial.params)
            kept.append(trial)
    return kept


@dataclass
class Contenders:
    """The configs worth re-evaluating, best first: the `top_k` best distinct ones, less those
    whose search score lies more than `final.contender_se` standard errors below the best.

    An accuracy on n validation images has a binomial standard error of sqrt(p (1 - p) / n)
    (p (1 - p) floored at 1 / n); a trial two of them below the best is no plausible winner, and
    re-training it only spends the budget (docs/benchmarks.md section 6: a collapsed trial at
    0.100 re-trained beside a best of 0.654). Other objectives (a loss) have no such scale: the
    top k are kept, as they are with `final.contender_se=null`.
    """

    top_k: int
    maximize: bool
    val_images: int | None = None  # None: the objective is not an accuracy
    within_se: float | None = None  # None: no noise filter

    @classmethod
    def for_config(cls, cfg: DictConfig, val_images: int) -> Contenders:
        objective = str(cfg.train.objective)
        maximize = cfg.train.direction == "maximize"
        accuracy = maximize and objective.endswith("accuracy") and val_images > 0
        within = (cfg.get("final") or {}).get("contender_se")
        return cls(
            settings(cfg)[0],
            maximize,
            val_images if accuracy else None,
            None if within is None else float(within),
        )

    def noise(self, value: float) -> float:
        """One standard error of a validation score `value` (0 for a score that is not an
        accuracy): the seed noise a real gain must exceed (search.patience)."""
        if self.val_images is None:
            return 0.0
        n = self.val_images
        return math.sqrt(max(value * (1.0 - value), 1.0 / n) / n)

    def __call__(self, trials: list[Best]) -> list[Best]:
        ranked = sorted(trials, key=lambda t: (-t.value if self.maximize else t.value, t.number))
        top = distinct(ranked)[: self.top_k]
        if not top or self.val_images is None or self.within_se is None:
            return top
        margin = self.within_se * self.noise(top[0].value)
        return [t for t in top if t.value >= top[0].value - margin]


def reevaluate(
    cfg: DictConfig, runner: TrialRunner, top: list[Best], seeds: int, budget: Budget, keep: int = 1
) -> Reevaluation | None:
    """Re-train each of `top` with `seeds` new training seeds; crown the best mean score.

    `runner` is the sweep's TrialRunner: its data split is reused, never reloaded. A candidate
    whose re-training does not fit in what is left of `budget` (beside `final.retrain`'s training)
    is skipped and competes with its search score alone (its model: None); a re-training that
    fails (`TrialFailed`: the loss diverged) is skipped and said, the config keeping the scores it
    has. `keep`: how many models the shipped model may average (final.ensemble; 1: none but the
    crowned one's), so only the re-trained models it may use stay in memory. None (said) when no
    re-training fit or succeeded: the best trial is then taken without re-evaluation.
    """
    from experiments.data.load import loading_key
    from experiments.errors import TrialFailed, WorkerError
    from search.final.faults import fault_point
    from search.space.apply import apply_params

    objective = str(cfg.train.objective)
    maximize = cfg.train.direction == "maximize"
    images = {  # which images each contender reads: only those of the same can be averaged
        t.number: loading_key(apply_params(cfg, t.params).data, int(cfg.seed)) for t in top
    }
    candidates: list[Candidate] = []
    trained: list[Member] = []
    for trial in top:
        needed = seeds * budget.estimate(trial)
        if not budget.fits(needed + budget.retrain_reserve(top)):  # final.retrain comes first
            print(
                f"re-evaluation of trial {trial.number} skipped: its {needed:.0f}s of re-training "
                f"do not fit in the {max(budget.left(), 0):.0f}s left of search.timeout",
                flush=True,
            )
            candidates.append(Candidate(trial))
            continue
        trial_cfg = apply_params(cfg, trial.params)
        data = runner.data_for(trial_cfg)  # the split of the base seed, as the search used
        candidate = Candidate(trial)
        for j in range(seeds):
            seeded = trial_cfg.copy()
            with open_dict(seeded):
                seeded.seed = int(cfg.seed) + 1 + j  # init, shuffling, augmentation; not the split
            fault_point("reevaluation")  # tests: a kill before a re-evaluation training
            try:  # where trials train: a worker with search.workers >= 1, else here
                result = runner.train_final(seeded, data)
            except (TrialFailed, WorkerError) as err:  # diverged, or its worker died: skipped
                candidate.failed[int(seeded.seed)] = str(err)
                print(
                    f"re-evaluation of trial {trial.number} with seed {seeded.seed} skipped: its "
                    f"training failed ({str(err).splitlines()[0][:160]})",
                    flush=True,
                )
                continue
            score = float(result.metrics[objective])
            candidate.seeds.append(int(seeded.seed))
            candidate.scores.append(score)
            candidate.seconds += result.seconds
            trained.append(
                Member(
                    f"trial {trial.number} seed {seeded.seed}",
                    trial.number,
                    score,
                    in_memory(result.model),
                )
            )
            del result
            trained = models_needed(trained, [*candidates, candidate], keep, maximize, images)
        candidates.append(candidate)
        print(
            f"re-evaluated trial {trial.number}: {objective} {format_scores(candidate.scores)} "
            f"on {len(candidate.scores)} new seeds (search: {trial.value:.4f}); mean {candidate.mean:.4f} "
            f"std {candidate.std:.4f}",
            flush=True,
        )
    if not trained:
        failed = any(c.failed for c in candidates)
        print(
            "final: every re-evaluation training failed (reasons above); the best trial is taken "
            "without re-evaluation"
            if failed
            else "final: no re-evaluation fits in what is left of search.timeout; the best trial "
            "is taken without one",
            flush=True,
        )
        return None
    crowned = crown(candidates, maximize)
    print(
        f"crowned trial {crowned.trial.number}: best mean {objective} {crowned.mean:.4f} over its "
        f"search and re-evaluation scores (top {len(candidates)}, "
        f"{sum(bool(c.scores) for c in candidates)} re-evaluated, {seeds} new seeds each)",
        flush=True,
    )
    trained = models_needed(trained, [crowned], keep, maximize, images, crowned=crowned)
    own = [m for m in trained if m.trial == crowned.trial.number]
    # Its best-scored seed (the first of equal scores); None when the budget skipped it.
    best_seed = (max if maximize else min)(own, key=lambda m: cast(float, m.score), default=None)
    return Reevaluation(
        candidates, crowned, None if best_seed is None else best_seed.load(), trained
    )


def models_needed(
    trained: list[Member],
    candidates: list[Candidate],
    keep: int,
    maximize: bool,
    images: dict[int, Any],
    crowned: Candidate | None = None,
) -> list[Member]:
    """The re-trained models the final stage may still use, in their order; the others are
    dropped (and their memory with them).

    The model tested alone is the crowned config's best seed: while the re-evaluation runs, that
    is the best seed of the config in progress (the last of `candidates`) or of the best mean so
    far; once `crowned` is known, of it alone. With `keep` = final.ensemble above 1, up to
    keep - 1 more are averaged with it, the best-scored first among those reading the crowned
    config's images: the keep - 1 best-scored of each set of images are kept (of the crowned
    one's only, once it is known).
    """
    sign = -1.0 if maximize else 1.0

    def best_of(number: int) -> Member | None:
        own = [m for m in trained if m.trial == number]
        return min(own, key=lambda m: sign * _scored(m), default=None)  # first of equals

    if crowned is not None:
        leaders = [crowned]
    else:
        finished = [c for c in candidates[:-1] if c.scores]
        leaders = [candidates[-1], *([crown(finished, maximize)] if finished else [])]
    kept = {id(m) for c in leaders if (m := best_of(c.trial.number)) is not None}
    if keep > 1:
        groups = {images[c.trial.number] for c in leaders} if crowned is not None else None
        by_images: dict[Any, list[Member]] = {}
        for m in trained:
            if groups is None or images[m.trial] in groups:
                by_images.setdefault(images[m.trial], []).append(m)
        for members in by_images.values():
            ranked = sorted(members, key=lambda m: sign * _scored(m))  # stable: ties in order
            kept.update(id(m) for m in ranked[: keep - 1])
    return [m for m in trained if id(m) in kept]


def crown(candidates: list[Candidate], maximize: bool) -> Candidate:
    """The candidate with the best mean over all its trainings; a tie keeps the earlier one
    (candidates come best search score first, and `max` returns the first of equal maxima)."""
    sign = 1.0 if maximize else -1.0
    return max(candidates, key=lambda c: sign * c.mean)


def format_scores(scores: list[float]) -> str:
    return " ".join(f"{s:.4f}" for s in scores)


def _scored(member: Member) -> float:
    """A re-evaluation model's validation score (each is scored when it is trained)."""
    assert member.score is not None
    return member.score
