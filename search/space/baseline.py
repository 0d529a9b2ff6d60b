"""Trial 0 of every new study: the base config's own values ("baseline first").

A sweep should never hand back a model worse on validation than the configuration the user
started from, so both engines run the base config's values of every space key as the first trial
of a new study (Optuna: `enqueue_trial`; Keras Tuner: the hyperparameters' default values, used
for the first proposal). A continued study never gets it again.

A base value the space cannot hold (a learning rate of 0.1 searched in [1e-4, 1e-2], a choice
not listed, a value off a stepped grid) means the starting configuration is not a point of the
space: then no baseline trial is queued (enqueuing it anyway would make Optuna record a value
its distribution does not contain) and the sweep prints which value lies outside and why, so the
user can widen the space or change the base value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from search.space.apply import active_values
from search.space.spec import Param


@dataclass(frozen=True)
class Baseline:
    """The base config's values of the active space keys, or why they cannot be trial 0."""

    values: dict[str, Any]
    outside: list[str]  # "key=value (accepted: ...)" for every base value the space cannot hold
    enabled: bool = True  # search.baseline

    @property
    def usable(self) -> bool:
        return self.enabled and not self.outside


def baseline(space: list[Param], cfg: DictConfig) -> Baseline:
    """The base config's point of `space`, checked against every parameter's range; not enabled
    (never queued) with search.baseline=false."""
    if not cfg.search.get("baseline", True):
        return Baseline(active_values(space, cfg), [], enabled=False)
    return point_of(space, cfg)


def point_of(space: list[Param], cfg: DictConfig) -> Baseline:
    """`cfg`'s values of the active keys of `space`, each checked against its parameter's range,
    whatever search.baseline says (a variant is checked with it: search/space/variants.py)."""
    values = active_values(space, cfg)
    outside = []
    for p in space:
        if p.name in values and not fits(p, values[p.name]):
            outside.append(f"{p.name}={values[p.name]!r} (accepted: {describe(p)})")
        elif p.name in values and p.kind != "categorical":
            values[p.name] = int(values[p.name]) if p.kind == "int" else float(values[p.name])
    return Baseline(values, outside)


def fits(p: Param, value: Any) -> bool:
    """Whether `value` is a point of `p`: a listed choice, or inside the range and on its step."""
    if p.kind == "categorical":
        # True == 1 in Python: a bool matches only a bool choice, and a number only a number.
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in p.choices)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if p.kind == "int" and value != int(value):
        return False
    if not p.low <= value <= p.high:
        return False
    if p.step is None:
        return True
    steps = (value - p.low) / p.step
    return abs(steps - round(steps)) < 1e-6


def describe(p: Param) -> str:
    if p.kind == "categorical":
        return ", ".join(map(repr, p.choices))
    step = f" step {p.step}" if p.step is not None and not (p.kind == "int" and p.step == 1) else ""
    return f"{p.kind} {p.low}..{p.high}{step}{' log' if p.log else ''}"


def announce(base: Baseline) -> None:
    """One line: trial 0 is the base config, or why it is not."""
    if base.usable:
        print("trial 0 of this new study: the base config's own values", flush=True)
    elif not base.enabled:
        print("trial 0 of this new study: the sampler's own draw (search.baseline=false)")
    else:
        print(
            "no baseline trial: the base config's "
            + "; ".join(base.outside)
            + " lies outside the search space, so its starting configuration is not a point "
            "of the space; widen the space (space.KEY.low=/high=/choices=) or set the base value "
            "inside it to have it tried first.",
            flush=True,
        )
