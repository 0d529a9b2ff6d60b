"""The search space in Keras Tuner's terms: `Param` list -> one static `kt.HyperParameters`, and
a trial's values back to the params Optuna's `suggest` would give (same keys, types, order)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras_tuner as kt

from search.space.spec import Param

# Values Hyperband adds to a trial's hyperparameters; never logged as params.
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round")
# A Choice holds one type among these; any other list of choices is searched by label.
_NATIVE_CHOICE_TYPES = ({int}, {float}, {str})


def to_hyperparameters(
    space: list[Param], defaults: Mapping[str, Any] | None = None
) -> kt.HyperParameters:
    """Declare every parameter (parents first) in one static `HyperParameters`.

    Bounds follow Optuna's reading of the same spec: a stepped range ends on its last grid point,
    and an int log range has no step (Keras Tuner reads a log step as a factor). A `when` entry
    becomes the entry's list of `Parent` conditions, all of which must hold, as in
    `Param.is_active`: the list `conditional_scope` records. Nested `conditional_scope`s cannot
    express it, because an inner scope only finds a parent declared inside the outer one, and
    `when` parents are independent entries; so the conditions go into the declared config.

    `defaults` (the base config's values, search/space/baseline.py) become the entries' default values,
    which the engine proposes as a new project's first trial; without them Keras Tuner's own
    defaults apply (a range's low end, a choice list's first entry).
    """
    declared = kt.HyperParameters()
    for p in space:
        # validated by Keras Tuner's own constructors
        _declare(declared, p, None if defaults is None else defaults.get(p.name))
    by_name = {p.name: p for p in space}
    config = declared.get_config()
    for entry in config["space"]:
        when = by_name[entry["config"]["name"]].when
        entry["config"]["conditions"] = [
            {
                "class_name": "Parent",
                "config": {"name": parent, "values": [encode(by_name[parent], v) for v in values]},
            }
            for parent, values in when.items()
        ]
    hp = kt.HyperParameters.from_config(config)
    hp.ensure_active_values()
    return hp


def _declare(hp: kt.HyperParameters, p: Param, default: Any = None) -> None:
    if p.kind == "categorical":
        hp.Choice(p.name, choice_values(p), default=None if default is None else encode(p, default))
    elif p.kind == "int":
        assert p.low is not None and p.high is not None  # numeric: parse_space sets both
        if p.log:
            hp.Int(p.name, int(p.low), int(p.high), step=None, sampling="log", default=default)
        else:
            step = int(p.step or 1)
            top: float = int(p.low) + (int(p.high) - int(p.low)) // step * step
            hp.Int(p.name, int(p.low), top, step=step, sampling="linear", default=default)
    elif p.step is not None:
        assert p.low is not None and p.high is not None  # numeric: parse_space sets both
        count = math.floor((p.high - p.low) / p.step + 1e-9)
        # Keras Tuner counts grid points with `(max - min) // step`, which drops the top point
        # for most decimal steps (0.5 // 0.1 == 4.0): a hair above the top keeps it.
        top = p.low + count * p.step + p.step * 1e-6
        hp.Float(
            p.name, float(p.low), float(top), step=float(p.step), sampling="linear", default=default
        )
    else:
        assert p.low is not None and p.high is not None  # numeric: parse_space sets both
        sampling = "log" if p.log else "linear"
        hp.Float(p.name, float(p.low), float(p.high), sampling=sampling, default=default)


def choice_values(p: Param) -> list[Any]:
    """The values of a Keras Tuner `Choice` for categorical `p`.

    A Choice holds one of int, float or str; it turns bools into ints and rejects None and
    mixed types. Such choices are searched by label (`repr`) and decoded back to the original.
    """
    if {type(c) for c in p.choices} in _NATIVE_CHOICE_TYPES:
        return list(p.choices)
    return [repr(c) for c in p.choices]


def encode(p: Param, value: Any) -> Any:
    """A value of `p` as Keras Tuner holds it (a label for label-searched choices)."""
    if p.kind == "categorical" and choice_values(p) != list(p.choices):
        return repr(value)
    return value


def decode(p: Param, value: Any) -> Any:
    """A Keras Tuner value of `p` as the config value Optuna would give."""
    if p.kind == "categorical":
        return p.choices[choice_values(p).index(value)]
    return int(value) if p.kind == "int" else float(value)


def params_of(values: Mapping[str, Any], space: list[Param]) -> dict[str, Any]:
    """The active space values of a trial, keyed and ordered like Optuna's `suggest`.

    Only space keys: Hyperband's `tuner/*` values never become params.
    """
    sampled: dict[str, Any] = {}
    for p in space:
        if p.is_active(sampled) and p.name in values:
            sampled[p.name] = decode(p, values[p.name])
    return sampled
