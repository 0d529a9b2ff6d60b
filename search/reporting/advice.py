"""Warnings a tuning expert would give after looking at a sweep.

Three checks, each cheap and phrased as what to do next:
- the best value of a numeric parameter sits at the edge of its range (the optimum may lie
  outside: widen the range);
- a parameter has (almost) no effect on the objective by Optuna's importances (fix it and spend
  the trials on the others);
- too few complete trials for the number of parameters (a model-based sampler needs about ten
  per dimension before its picture of the space means much).
Plus the share of failed trials, which usually means a bad range rather than bad luck.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search.space.spec import Param
from search.trials.records import Row

EDGE_FRACTION = 0.05  # the outer 5% of a range (in log scale for a log range)
NO_EFFECT = 0.01  # importance below 1% of the total
MIN_TRIALS_FOR_IMPORTANCE = 5
TRIALS_PER_DIMENSION = 10
MIN_INT_VALUES = 4  # an int range with fewer steps has no inside to speak of


def warnings_for(
    best: Row | None,
    rows: Sequence[Row],
    space: Sequence[Param],
    importances: Mapping[str, float],
) -> list[str]:
    """The warnings for a sweep, most actionable first."""
    out: list[str] = []
    if best is not None:
        out.extend(_edges(best, space))
    complete = [r for r in rows if r.state == "complete"]
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        for name, value in importances.items():
            if value < NO_EFFECT:
                out.append(
                    f"{name} has almost no effect on the objective (importance {value:.1%}): "
                    "fix it to a sensible value and spend the trials on the other parameters."
                )
    needed = TRIALS_PER_DIMENSION * len(space)
    if len(complete) < needed:
        out.append(
            f"only {len(complete)} complete trials for {len(space)} parameters: about "
            f"{needed} ({TRIALS_PER_DIMENSION} per parameter) are needed before the sampler's "
            "model and the importances mean much; raise search.n_trials or narrow the space."
        )
    failed = [r for r in rows if r.state == "failed"]
    if rows and len(failed) / len(rows) > 0.2:
        out.append(
            f"{len(failed)} of {len(rows)} trials failed: look at their reasons below; a range "
            "that diverges (a learning rate too high) or a model too big is the usual cause."
        )
    return out


def _edges(best: Row, space: Sequence[Param]) -> list[str]:
    out = []
    for p in space:
        value = best.params.get(p.name)
        if p.kind == "categorical" or not isinstance(value, int | float) or p.high == p.low:
            continue
        assert p.low is not None and p.high is not None  # numeric: parse_space sets both
        if p.kind == "int" and not p.log and (p.high - p.low) / (p.step or 1) < MIN_INT_VALUES:
            continue  # 1..2: every value is an edge; the slice plot says more than a warning
        position = _position(float(value), float(p.low), float(p.high), p.log)
        if position is None:
            continue
        if position <= EDGE_FRACTION or position >= 1 - EDGE_FRACTION:
            edge, other = ("bottom", "lower") if position <= EDGE_FRACTION else ("top", "higher")
            out.append(
                f"the best trial's {p.name}={_short(value)} is at the {edge} edge of its range "
                f"[{_short(p.low)}, {_short(p.high)}]: the optimum may be {other}; widen the range "
                "on that side."
            )
    return out


def _position(value: float, low: float, high: float, log: bool) -> float | None:
    if log:
        if min(value, low, high) <= 0:
            return None
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
