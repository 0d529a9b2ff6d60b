"""What a sweep optimizes: one validation metric, or several objectives traded against each other.

`train.objectives` (default null) turns a sweep multi-objective:

    train.objectives:
      - {metric: val_accuracy, direction: maximize}
      - {metric: latency_ms, direction: minimize}

Validation metrics come from training; the cost metrics are measured on each trained model the
same way for every trial (`experiments.evaluation.cost`). With null, `train.objective` and
`train.direction` define the single objective, exactly as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from experiments.trial_cost import FILE_COSTS, CostPlan
from search.config.rules import DIRECTIONS
from search.config.rules import OBJECTIVES as VALIDATION_METRICS

COST_METRICS = ("model_params", "model_bytes", "latency_ms")
Direction = Literal["maximize", "minimize"]  # a checked direction, as Optuna types it


@dataclass(frozen=True)
class Objective:
    """One metric the search optimizes, and whether larger is better."""

    metric: str
    direction: str  # maximize | minimize

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def objectives_of(cfg: DictConfig) -> list[Objective]:
    """The sweep's objectives, checked; the first one is the primary (printed, pruned on)."""
    raw = cfg.train.get("objectives")
    if raw is None:
        return [Objective(str(cfg.train.objective), str(cfg.train.direction))]
    entries = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw
    example = (
        "e.g. train.objectives=[{metric:val_accuracy,direction:maximize},"
        "{metric:latency_ms,direction:minimize}]"
    )
    if not isinstance(entries, list) or not entries:
        raise UserInputError(
            f"train.objectives={entries!r} must be a non-empty list of {{metric, direction}} "
            f"entries, or null for the single train.objective; {example}."
        )
    objectives: list[Objective] = []
    accepted = (*VALIDATION_METRICS, *COST_METRICS)
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"metric", "direction"}:
            raise UserInputError(
                f"train.objectives entry {entry!r} must have exactly the keys metric and "
                f"direction; {example}."
            )
        metric, direction = str(entry["metric"]), str(entry["direction"])
        if metric not in accepted:
            raise UserInputError(
                f"train.objectives metric {metric!r} is not measured; accepted: "
                f"{', '.join(accepted)}."
            )
        if direction not in DIRECTIONS:
            raise UserInputError(
                f"train.objectives direction {direction!r} for {metric}; accepted: "
                f"{', '.join(DIRECTIONS)}."
            )
        if any(o.metric == metric for o in objectives):
            raise UserInputError(f"train.objectives names {metric!r} twice; name each metric once.")
        objectives.append(Objective(metric, direction))
    if len(objectives) == 1 and objectives[0] != Objective(
        str(cfg.train.objective), str(cfg.train.direction)
    ):
        raise UserInputError(
            f"train.objectives has one objective ({objectives[0].metric}, "
            f"{objectives[0].direction}) that differs from train.objective="
            f"{cfg.train.objective} / train.direction={cfg.train.direction}: for one objective "
            "set those two and leave train.objectives=null; list two or more for a Pareto front."
        )
    if not any(o.metric in VALIDATION_METRICS for o in objectives):
        raise UserInputError(
            f"train.objectives={[o.metric for o in objectives]} has no validation metric: a "
            f"search needs one of {', '.join(VALIDATION_METRICS)} to learn anything about the "
            "model's quality."
        )
    return objectives


def check_objectives(cfg: DictConfig) -> list[Objective]:
    """Refuse what no engine can do with several objectives, before any training.

    Keras Tuner optimizes one score: summing objectives silently would hide the trade-off, so
    it is refused. Optuna cannot prune multi-objective trials; the sweep runs with pruning off
    and says so (`pruning_note`), because the default config turns the median pruner on and
    an error would make every multi-objective command also need search.pruner=none.
    """
    objectives = objectives_of(cfg)
    if len(objectives) > 1 and str(cfg.search.engine) != "optuna":
        raise UserInputError(
            f"train.objectives has {len(objectives)} objectives "
            f"({', '.join(o.metric for o in objectives)}), but search.engine="
            f"{cfg.search.engine} optimizes a single score and has no multi-objective search; "
            "use search=optuna (Pareto front), or give one objective (train.objectives=null)."
        )
    return objectives


def pruning_note(cfg: DictConfig) -> str | None:
    """The line saying pruning is off, when several objectives meet a configured pruner."""
    pruner = str(cfg.search.get("pruner") or "none")
    if len(objectives_of(cfg)) > 1 and pruner != "none":
        return (
            f"note: search.pruner={pruner} is off for this sweep: Optuna cannot prune trials of "
            "a multi-objective study (a pruner compares one intermediate value). Every trial "
            "trains all train.epochs; set search.pruner=none to silence this note."
        )
    return None


def measured_costs(cfg: DictConfig) -> tuple[str, ...]:
    """The cost metrics every trial measures: size always; latency when something uses it."""
    used = _used_metrics(cfg)
    return tuple(m for m in COST_METRICS if m != "latency_ms" or m in used)


def cost_plan(cfg: DictConfig) -> CostPlan:
    """What every trial measures, and on what: its export in `final.export_target` when a size
    or latency decides something (an objective, or the champion rule); else the Keras model in
    memory, whose figures cost nothing (an export costs seconds a trial) and decide nothing."""
    names = measured_costs(cfg)
    deciding = _used_metrics(cfg) & set(FILE_COSTS)
    return CostPlan(names, export_target(cfg) if deciding else None)


def export_target(cfg: DictConfig) -> str | None:
    """`final.export_target`: the export format whose file the trials' size and latency are
    measured from (None: the Keras model in memory, as before)."""
    final = cfg.get("final")
    target = final.get("export_target") if final is not None else None
    return None if target is None else str(target)


def _used_metrics(cfg: DictConfig) -> set[str]:
    return {o.metric for o in objectives_of(cfg)} | set(_select_metrics(cfg))


def _select_metrics(cfg: DictConfig) -> list[str]:
    final = cfg.get("final")
    select = final.get("select") if final is not None else None
    if not select:
        return []
    names = [str(v) for k, v in select.items() if k in ("maximize", "minimize")]
    names += [str(k) for k in (select.get("where") or {})]
    return names


def metric_text(metric: str, value: float | None) -> str:
    """One objective's value: a val_* metric to 4 decimals, a cost (size, latency) to 4
    significant digits, a whole number as one."""
    if value is None or math.isnan(value):
        return "-"
    if metric.startswith("val_"):
        return f"{value:.4f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"
