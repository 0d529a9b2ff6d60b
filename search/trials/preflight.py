"""Before trial 0 under `search.timeout`: probe a trial's parts, print the plan, refuse a budget
that cannot end with a tested model.

The probe (experiments/training/probe.py) runs where trials train: in a worker process (the
pool's first worker, which keeps its TensorFlow session for trial 0) or, with
`search.workers=0`, here. It times trial 0's config, the base config (trial 0 of a new study);
a search with `search.baseline=false` starts from a draw of the space instead, which the plan
then prices as the base config. The refusal comes before any store or MLflow run is created:
`search.sweep` calls `check` between loading the data and opening the study, inside
`removed_on_error`, so the output folder is left as it was.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from experiments.data.splits import ImageData
from experiments.errors import UserInputError
from search.execution.leftovers import scratch_folder
from search.space.apply import config_yaml
from search.trials.budget import Budget
from search.trials.plan import TRIAL_SECONDS, Plan, Shape, make_plan, plan_lines, refusal

if TYPE_CHECKING:
    from experiments.training.timings import Probe
    from search.execution.pool import WorkerPool


def probe(cfg: DictConfig, data: ImageData, pool: WorkerPool | None) -> Probe:
    """The probe's timings of `cfg`'s trial, taken where trials train."""
    if pool is None:
        from experiments.training.probe import probe_trial

        return probe_trial(cfg, data)
    from experiments.data.shared import share

    values = OmegaConf.to_container(cfg, resolve=True)

    shared = share(data, scratch_folder(cfg) / "data")  # the trials' own (written once)
    with pool.worker() as worker:
        return worker.probe(config_yaml(values), shared)  # type: ignore[arg-type]


def check(
    cfg: DictConfig,
    data: ImageData,
    budget: Budget,
    pool: WorkerPool | None,
    has_model: bool | None,
    started: float,
) -> Plan | None:
    """The plan of `budget`, or None without one; raises `UserInputError` (the refusal) when the
    budget cannot fit trial 0 and its test. `has_model`: whether the study has a completed
    trial (None: not known before it is opened; then `confirm` decides once it is); `started`:
    the invocation's start (time.monotonic()), where search.timeout counts from."""
    if not budget.limited:
        return None
    timings = probe(cfg, data, pool)
    spent = time.monotonic() - started
    shape = Shape.of(cfg, len(data.train), len(data.val))
    plan = make_plan(timings, shape, budget, spent, bool(has_model))
    if has_model is False and not plan.fits:
        raise UserInputError(refusal(plan))
    return plan


def confirm(plan: Plan | None, has_model: bool) -> Plan | None:
    """The plan once the study is open and it is known whether it has a model: refused when it
    has none and the budget cannot fit trial 0 and its test."""
    if plan is None:
        return None
    if has_model != plan.has_model:
        plan = Plan(**{**plan.__dict__, "has_model": has_model})
    if not has_model and not plan.fits:
        raise UserInputError(refusal(plan))
    return plan


def announce(
    plan: Plan | None, budget: Budget, cfg: DictConfig, val_images: int, screen_share: float = 0.0
) -> None:
    """Print the plan and give the budget trial 0's estimate (the line after trial 0 says it);
    `screen_share`: the search's share a staged search's screen takes (0: one stage)."""
    if plan is None:
        return
    # The screen's seconds by the rule the budget applies after trial 0, from the plan's figures.
    screen = budget.screen_seconds(screen_share, plan.searching, plan.later)
    plan = dataclasses.replace(plan, screen=screen)
    patience = cfg.search.get("patience")
    for line in plan_lines(plan, val_images, None if patience is None else int(patience)):
        print(line, flush=True)
    budget.planned = plan.later - TRIAL_SECONDS if plan.has_model else plan.trial0
    if plan.augmented is not None:  # the first trial of a preset builds its copies too
        budget.unseen_augmented = plan.augmented - TRIAL_SECONDS + plan.copies
