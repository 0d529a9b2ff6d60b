"""Choose the champion by a rule the user writes in config (`final.select`).

    final.select:
      maximize: val_accuracy          # or minimize: <metric>
      where:                           # optional limits, each {min: x} and/or {max: y}
        latency_ms: {max: 5}

Without a rule a single-objective sweep keeps the engine's own best trial (unchanged). With
several objectives there is no single best, so the default rule is "the best value of the first
objective"; a rule picks a point of the Pareto front the user can ship (the most accurate model
under a latency limit). Candidates are the complete trials of the whole study, read back from
MLflow, so both engines and resumed sweeps are judged the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from search.trials.objectives import (
    COST_METRICS,
    VALIDATION_METRICS,
    Objective,
    metric_text,
    objectives_of,
)
from search.trials.records import Row

EXAMPLE = "e.g. final.select={maximize:val_accuracy,where:{latency_ms:{max:5}}}"


@dataclass(frozen=True)
class Rule:
    """Best `goal` among the complete trials within every `where` limit."""

    goal: Objective
    where: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def admits(self, row: Row) -> bool:
        for metric, (low, high) in self.where.items():
            value = _value(row, metric)
            if value is None or (low is not None and value < low):
                return False
            if high is not None and value > high:
                return False
        return True

    def describe(self) -> str:
        limits = [
            " and ".join(
                part
                for part in (
                    f"{metric} >= {low:g}" if low is not None else "",
                    f"{metric} <= {high:g}" if high is not None else "",
                )
                if part
            )
            for metric, (low, high) in self.where.items()
        ]
        where = f" where {', '.join(limits)}" if limits else ""
        return f"{self.goal.direction} {self.goal.metric}{where}"


def rule_of(cfg: DictConfig) -> Rule | None:
    """`final.select`, checked; None when the config has none."""
    final = cfg.get("final")
    raw = final.get("select") if final is not None else None
    if not raw:
        return None
    select: Any = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw
    accepted = (*VALIDATION_METRICS, *COST_METRICS)
    if not isinstance(select, dict):
        raise UserInputError(
            f"final.select={select!r} must be a mapping with maximize or minimize (a metric) and "
            f"optionally where (limits), or null for the engine's own best; {EXAMPLE}."
        )
    goals = [k for k in ("maximize", "minimize") if k in select]
    extra = set(select) - {"maximize", "minimize", "where"}
    if len(goals) != 1 or extra:
        raise UserInputError(
            f"final.select={select!r} needs exactly one of maximize or minimize (a metric) and "
            f"optionally where (limits); {EXAMPLE}."
        )
    metric = str(select[goals[0]])
    where: dict[str, tuple[float | None, float | None]] = {}
    raw_where = select.get("where") or {}
    if not isinstance(raw_where, dict):
        raise UserInputError(
            f"final.select.where={raw_where!r} must be a mapping from metrics to limits, each "
            f"{{min: x}}, {{max: y}} or both; {EXAMPLE}."
        )
    for name, limits in raw_where.items():
        if not isinstance(limits, dict) or not limits or set(limits) - {"min", "max"}:
            raise UserInputError(
                f"final.select.where.{name}={limits!r} must be {{min: x}}, {{max: y}} or both; "
                f"{EXAMPLE}."
            )
        low, high = _number(name, limits.get("min")), _number(name, limits.get("max"))
        if low is not None and high is not None and low > high:
            raise UserInputError(
                f"final.select.where.{name}={limits!r} admits no value: min {low:g} is above "
                f"max {high:g}; give min <= max, {EXAMPLE}."
            )
        where[str(name)] = (low, high)
    for name in (metric, *where):
        if name not in accepted:
            raise UserInputError(
                f"final.select names {name!r}, which no trial measures; accepted: "
                f"{', '.join(accepted)}."
            )
    return Rule(Objective(metric, goals[0]), where)


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserInputError(
            f"final.select.where.{name} limit {value!r} must be a number; {EXAMPLE}."
        )
    return float(value)


def effective_rule(cfg: DictConfig) -> Rule | None:
    """The rule that chooses the champion, or None: the engine's own best (single objective)."""
    rule = rule_of(cfg)
    objectives = objectives_of(cfg)
    if rule is None and len(objectives) > 1:
        return Rule(objectives[0])
    return rule


def choose(rows: Sequence[Row], rule: Rule, objectives: Sequence[Objective]) -> Row | None:
    """The complete trial the rule picks; ties go to the other objectives, then the earliest."""
    eligible = [
        r
        for r in rows
        if r.state == "complete" and _value(r, rule.goal.metric) is not None and rule.admits(r)
    ]
    if not eligible:
        return None

    def key(row: Row) -> tuple:
        ranks = [_signed(_value(row, rule.goal.metric), rule.goal.maximize)]
        ranks += [_signed(_value(row, o.metric), o.maximize) for o in objectives]
        return (*ranks, row.trial)

    return min(eligible, key=key)


def _value(row: Row, metric: str) -> float | None:
    value = row.values.get(metric)
    if value is None:
        value = row.metrics.get(f"final_{metric}", row.metrics.get(metric))
    return None if value is None or math.isnan(value) else float(value)


def _signed(value: float | None, maximize: bool) -> float:
    if value is None:
        return math.inf
    return -value if maximize else value


def pareto_front(rows: Sequence[Row], objectives: Sequence[Objective]) -> list[Row]:
    """The complete trials no other complete trial dominates (at least as good on every
    objective, better on one), in trial order: the front a multi-objective sweep found."""
    points = []
    for r in rows:
        values = [_value(r, o.metric) for o in objectives]
        if r.state == "complete" and all(v is not None for v in values):
            points.append(
                (r, [_signed(v, o.maximize) for v, o in zip(values, objectives, strict=True)])
            )

    def dominated(p: list[float]) -> bool:
        return any(all(x <= y for x, y in zip(q, p, strict=True)) and q != p for _, q in points)

    return sorted((r for r, p in points if not dominated(p)), key=lambda r: r.trial)


def values_text(row: Row, objectives: Sequence[Objective]) -> str:
    """A trial's objective values as the terminal line prints them: `val_accuracy=0.9630
    model_params=5194`."""
    return " ".join(
        f"{o.metric}={metric_text(o.metric, _value(row, o.metric))}" for o in objectives
    )
