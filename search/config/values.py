"""Types and ranges of the values a trial reads, checked before anything is created or trained.

A value no trial can use (`train.batch_size=0`, a negative learning rate, a space whose choices
do not fit the key's type) used to be found out by every trial failing in turn, with the study
ending "complete" and no best model. Each rule below names one config key and what it accepts;
`check_values` applies it to the fixed value and to every value the search space can produce
(both ends of a range, every categorical choice), so the sweep stops in a second instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from search.space.spec import Param


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a test and the words that say it."""

    accepts: Callable[[Any], bool]
    says: str
    whole: bool = False  # a whole number: a float range in the space cannot feed it


def _int_at_least(low: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= low, f"a whole number of {low} or more", True)


def _number(low: float, high: float | None = None, *, low_open: bool, high_open: bool) -> Rule:
    def accepts(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    says = (
        f"a number in {left}{low}, {high}{right}"
        if high is not None
        else f"a number {'>' if low_open else '>='} {low}"
    )
    return Rule(accepts, says)


POSITIVE = _number(0, None, low_open=True, high_open=False)
NON_NEGATIVE = _number(0, None, low_open=False, high_open=False)
FRACTION = _number(0, 1, low_open=False, high_open=True)  # dropout-like: 1 would drop everything
SEED = Rule(
    lambda v: _is_int(v) and 0 <= v < 2**32,
    "a whole number from 0 to 4294967295 (NumPy's seed range)",
    True,
)

# Keys a trial reads. A key missing from the composed config (another model's option) is skipped.
RULES: dict[str, Rule] = {
    "seed": SEED,
    "train.batch_size": _int_at_least(1),
    "train.epochs": _int_at_least(1),
    "train.verbose": Rule(lambda v: v in (0, 1, 2) and _is_int(v), "0, 1 or 2", True),
    "optimizer.learning_rate": POSITIVE,
    "optimizer.momentum": FRACTION,
    "model.conv_blocks": _int_at_least(1),
    "model.filters": _int_at_least(1),
    "model.filter_growth": POSITIVE,
    "model.kernel_size": _int_at_least(1),
    "model.branches": _int_at_least(1),
    "model.dense_layers": _int_at_least(0),
    "model.dense_units": _int_at_least(0),
    "model.dropout": FRACTION,
    "model.alpha": POSITIVE,
    "model.fine_tune.head_epochs": _int_at_least(0),
    "model.fine_tune.unfreeze_layers": _int_at_least(0),
    "model.fine_tune.lr_multiplier": POSITIVE,
    "data.augmentation.rotation": NON_NEGATIVE,
    "data.augmentation.translation": NON_NEGATIVE,
    "data.augmentation.zoom": NON_NEGATIVE,
    "data.augmentation.crop": FRACTION,
    "data.augmentation.contrast": NON_NEGATIVE,
    "tracking.log_models": Rule(
        lambda v: v in ("best", "all") or isinstance(v, bool),
        "best (the models of trials that improved on the best so far), all (every trial's), "
        "or false (none; the final stage re-trains the best trial)",
    ),
}
NULLABLE = {"model.fine_tune.unfreeze_fraction": _number(0, 1, low_open=False, high_open=False)}


def check_values(cfg: DictConfig, space: list[Param]) -> None:
    """Raise `UserInputError` for the first fixed or sampleable value no trial could use."""
    for key, rule in {**RULES, **NULLABLE}.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and key in NULLABLE):
            continue
        if not rule.accepts(value):
            raise UserInputError(f"{key}={value!r} is not accepted: {key} takes {rule.says}.")
    for param in space:
        _check_param(cfg, param)


def _check_param(cfg: DictConfig, param: Param) -> None:
    """Every value `param` can produce must fit its key's rule, or at least the base's type."""
    where = f"space entry {param.name!r}"
    rule = RULES.get(param.name) or NULLABLE.get(param.name)
    if param.kind == "categorical":
        values = [v for v in param.choices if not (v is None and param.name in NULLABLE)]
    else:
        if rule is not None and rule.whole and param.kind == "float":
            raise UserInputError(
                f"{where} samples floats (type: float) but {param.name} takes {rule.says}; "
                "use type: int."
            )
        values = [param.low, param.high]
    for value in values:
        if rule is not None and not rule.accepts(value):
            shown = "choice" if param.kind == "categorical" else "bound"
            raise UserInputError(
                f"{where} can sample {param.name}={value!r} (a {shown} of the space), which is not "
                f"accepted: {param.name} takes {rule.says}."
            )
        if rule is None:
            _check_type(where, param.name, OmegaConf.select(cfg, param.name), value)


def _check_type(where: str, key: str, base: Any, value: Any) -> None:
    """Without a rule, a sampled value must at least have the configured value's type."""
    if (
        base is None
        or value is None
        or isinstance(base, list | tuple | dict)
        or OmegaConf.is_config(base)
    ):
        return  # null (a documented default for several keys) or a structure: not decidable here
    if isinstance(base, bool):
        fits = isinstance(value, bool)
    elif _is_int(base):
        fits = _is_int(value) or (isinstance(value, float) and value.is_integer())
    elif isinstance(base, float):
        fits = _is_number(value)
    else:
        fits = isinstance(value, str) or value is None
    if not fits:
        raise UserInputError(
            f"{where} can sample {key}={value!r} ({type(value).__name__}), but {key} is "
            f"{base!r} ({type(base).__name__}) in the config; give choices of that type."
        )


class _Absent:
    pass


_ABSENT = _Absent()
