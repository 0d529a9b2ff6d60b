"""The backend-neutral search space spec: parse, validate, sample order.

A space is the config tree `space`, nested like the config it searches: each leaf is a parameter
spec (a mapping with a `type`), and its path is the dotted config path it sets:

    optimizer:
      learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}
    model:
      conv_blocks: {type: int, low: 1, high: 3}
      backbone:    {type: categorical, choices: [mobilenet, resnet50v2]}
      alpha:       {type: categorical, choices: [0.25, 0.5], when: {model.backbone: [mobilenet]}}

Nested, not dotted keys, because that is the form Hydra's command line writes and edits:
`space.optimizer.learning_rate.high=0.1` changes a bound, `+space.model.kernel_size={type: int,
low: 3, high: 7}` adds an entry, `~space.model.dropout` removes one. A parameter's name is its
dotted path (`optimizer.learning_rate`), and `when` names its parents that way.

Both engines translate the same `Param` list (Optuna `suggest_*`, Keras Tuner `HyperParameters`),
and a sampled trial is just the base config with those keys overridden
(`search.space.apply.apply_params`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError

Kind = Literal["float", "int", "categorical"]
KINDS: tuple[str, ...] = ("float", "int", "categorical")
_ALLOWED_KEYS: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
# A mapping with any of these keys is a parameter spec; one without them is a namespace.
SPEC_KEYS: frozenset[str] = frozenset().union(*_ALLOWED_KEYS.values())


@dataclass(frozen=True)
class Param:
    """One searchable config value. `when` maps parent keys to the values that activate it."""

    name: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def is_active(self, sampled: Mapping[str, Any]) -> bool:
        """True when every parent this parameter depends on has one of the required values."""
        return all(sampled.get(parent) in values for parent, values in self.when.items())


def parse_space(raw: Mapping[str, Any] | DictConfig, base: DictConfig) -> list[Param]:
    """Validate a space against the base config and return its parameters, parents first.

    Raises `UserInputError` naming the first bad entry and what is accepted.
    """
    if isinstance(raw, DictConfig):
        raw = cast(dict[str, Any], OmegaConf.to_container(raw, resolve=True))  # a DictConfig's
    entries = flatten_space(raw or {})
    if not entries:
        raise UserInputError(
            "the search space is empty: choose one with space=NAME (conf/space/) or add an entry "
            "like +space.optimizer.learning_rate={type:float,low:1e-4,high:1e-2,log:true}."
        )
    params = [_parse_entry(name, spec, base) for name, spec in entries.items()]
    by_name = {p.name: p for p in params}
    for p in params:
        for parent, values in p.when.items():
            if parent not in by_name:
                raise UserInputError(
                    f"space entry {p.name!r} depends on {parent!r} (`when`), which is not in the "
                    f"space; accepted parents: {', '.join(sorted(set(by_name) - {p.name}))}."
                )
            _check_when_values(p.name, parent, values, by_name[parent])
    return _parents_first(params)


def _check_when_values(name: str, parent: str, values: tuple[Any, ...], spec: Param) -> None:
    """Every value of `when: {parent: [...]}` must be one the parent can sample: one that cannot
    would leave the entry never sampled, without a word."""
    for value in values:
        if spec.kind == "categorical":
            fits = any(_same(value, c) for c in spec.choices)
            accepted = ", ".join(repr(c) for c in spec.choices)
        else:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            fits = number and spec.low <= value <= spec.high
            if spec.kind == "int":
                fits = fits and float(value).is_integer()
            accepted = f"{spec.kind}s from {spec.low} to {spec.high}"
        if not fits:
            raise UserInputError(
                f"space entry {name!r} has `when: {{{parent}: {value!r}}}`, but {parent} never "
                f"samples {value!r}, so {name} would never be sampled; accepted: {accepted}."
            )


def flatten_space(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted parameter names to specs: `{model: {dropout: {type: float, ...}}}` becomes
    `{model.dropout: {type: float, ...}}`.

    A mapping with a spec key (`type`, `low`, `choices`, ...) is a spec, any other mapping a
    namespace (an empty one, left by `~space.model.dropout`, holds nothing); any other value is a
    malformed spec that `parse_space` reports by its full name. Keys with dots are refused: a
    dotted key cannot be changed from the command line and would shadow a nested entry.
    """
    flat: dict[str, Any] = {}
    for key, spec in raw.items():
        name = f"{prefix}{key}"
        if "." in str(key):
            nested = "{type: ...}"
            for part in reversed(name.split(".")):
                nested = f"{{{part}: {nested}}}"
            raise UserInputError(
                f"space key {name!r} is written with dots; write the search space nested like "
                f"the config it searches, {nested[1:-1]}, so that the command line can change it "
                f"(space.{name}.high=...)."
            )
        if isinstance(spec, Mapping) and not SPEC_KEYS & set(spec):
            flat.update(flatten_space(spec, name + "."))
        else:
            flat[name] = spec
    return flat


def _parse_entry(name: str, spec: Any, base: DictConfig) -> Param:
    where = f"space entry {name!r}"
    if OmegaConf.select(base, name, default=_MISSING) is _MISSING:
        raise UserInputError(
            f"{where} is not a config path: there is no `{name}` in the composed config. Keys of "
            "the space are dotted paths to existing values, e.g. `optimizer.learning_rate` or "
            "`model.dropout`."
        )
    if not isinstance(spec, Mapping):
        raise UserInputError(f"{where} must be a mapping with a `type`, got {spec!r}.")
    kind = spec.get("type")
    if kind not in KINDS:
        raise UserInputError(f"{where} has type {kind!r}; accepted types: {', '.join(KINDS)}.")
    unknown = set(spec) - _ALLOWED_KEYS[kind]
    if unknown:
        raise UserInputError(
            f"{where} has unknown key(s) {sorted(unknown)} for type {kind}; accepted: "
            f"{', '.join(sorted(_ALLOWED_KEYS[kind]))}. (A command-line `+space.{name}={{...}}` "
            f"merges into an existing entry; to replace it, remove it first: `~space.{name} "
            f"+space.{name}={{...}}`.)"
        )
    when = _parse_when(where, spec.get("when") or {})
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise UserInputError(f"{where} needs a non-empty list of `choices`, got {choices!r}.")
        return Param(name, "categorical", choices=tuple(choices), when=when)
    return _parse_numeric(where, name, kind, spec, when)


def _parse_numeric(where: str, name: str, kind: Kind, spec: Mapping, when: dict) -> Param:
    number = int if kind == "int" else float
    try:
        low, high = number(spec["low"]), number(spec["high"])
    except KeyError as err:
        raise UserInputError(f"{where} ({kind}) needs `low` and `high`; missing {err}.") from err
    except (TypeError, ValueError) as err:
        raise UserInputError(
            f"{where} has low={spec.get('low')!r}, high={spec.get('high')!r}; both must be {kind}s."
        ) from err
    if kind == "int" and (spec["low"] != low or spec["high"] != high):
        raise UserInputError(
            f"{where} is an int range but low={spec['low']!r}, high={spec['high']!r} are not integers."
        )
    if not math.isfinite(low) or not math.isfinite(high) or low >= high:
        raise UserInputError(
            f"{where} has low={low} >= high={high}; low must be strictly below high."
        )
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserInputError(
            f"{where} has log={log!r}; log must be true or false (YAML's and Hydra's booleans; "
            "text such as off or no is not read as one)."
        )
    if log and low <= 0:
        raise UserInputError(f"{where} uses a log scale with low={low}; a log scale needs low > 0.")
    step = given = spec.get("step")
    if step is not None:
        whole = isinstance(step, int) or (isinstance(step, float) and step.is_integer())
        if (
            isinstance(step, bool)
            or not isinstance(step, int | float)
            or (kind == "int" and not whole)
        ):
            what = "a whole number" if kind == "int" else "a number"
            raise UserInputError(
                f"{where} has step={given!r}; the step of {kind} range must be {what} above 0 "
                f"and at most high - low = {high - low}."
            )
        step = number(step)
        if step <= 0 or step > high - low:
            raise UserInputError(
                f"{where} has step={given!r}; a step must be > 0 and at most "
                f"high - low = {high - low}."
            )
        if log and (kind == "float" or step != 1):
            raise UserInputError(
                f"{where} combines log=true with step={step}; use one or the other "
                "(an int log range takes only step 1)."
            )
    elif kind == "int":
        step = 1
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(where: str, when: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(when, Mapping):
        raise UserInputError(
            f"{where} has when={when!r}; expected a mapping like `{{model.backbone: [mobilenet]}}`."
        )
    parsed = {}
    for parent, values in when.items():
        if isinstance(values, Mapping):
            raise UserInputError(
                f"{where} has `when: {{{parent}: {values!r}}}`; name each parent by its dotted "
                "path, e.g. `when: {model.backbone: [mobilenet]}`."
            )
        values = tuple(values) if isinstance(values, list | tuple) else (values,)
        if not values:
            raise UserInputError(f"{where} has an empty value list for `when: {parent}`.")
        parsed[str(parent)] = values
    return parsed


def _same(a: Any, b: Any) -> bool:
    """Equal as `Param.is_active` compares them, but true is not 1 and "1" is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _parents_first(params: list[Param]) -> list[Param]:
    """Order parameters so that each comes after the parents it depends on (stable otherwise)."""
    ordered: list[Param] = []
    placed: set[str] = set()
    pending = list(params)
    while pending:
        ready = [p for p in pending if set(p.when) <= placed]
        if not ready:
            cycle = ", ".join(p.name for p in pending)
            raise UserInputError(f"space entries {cycle} depend on each other in a cycle (`when`).")
        for p in ready:
            ordered.append(p)
            placed.add(p.name)
        pending = [p for p in pending if p.name not in placed]
    return ordered


class _Missing:
    pass


_MISSING = _Missing()
