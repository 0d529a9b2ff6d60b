"""Optuna samplers and pruners from config: `_target_` nodes built with `hydra.utils.instantiate`.

As in Hydra's Optuna sweeper, every sampler and pruner is a node naming its class, so any of
Optuna's samplers and options is reachable without code:

    search.sampler=random                                   # a short name: search.samplers.random
    search.samplers.tpe.n_startup_trials=3                  # an option of a listed sampler
    '+search.samplers.gp={_target_: optuna.samplers.GPSampler}' search.sampler=gp   # a new one

`search.seed` is passed to a sampler that takes a seed (all of Optuna's do) unless its node sets
one, and the grid sampler gets its grid from the space.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from collections.abc import Sequence
from typing import Any, cast

import hydra.utils
import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.samplers._lazy_random_state import LazyRandomState

from experiments.errors import UserInputError
from search.space.spec import Param


def make_sampler(search: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    """The sampler `search.sampler` names (a key of `search.samplers`), seeded with `search.seed`."""
    where, node = _chosen(search, "sampler", "samplers")
    cls = _class_of(where, node, optuna.samplers.BaseSampler, "sampler")
    extra: dict[str, Any] = {}
    accepted = inspect.signature(cls.__init__).parameters
    if "seed" in accepted and "seed" not in node:
        extra["seed"] = search.get("seed")
    if "search_space" in accepted and "search_space" not in node:
        extra["search_space"] = grid_of(space)
    return _build(where, node, cls, extra)


def make_pruner(search: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner `search.pruner` names (a key of `search.pruners`; `none` switches it off)."""
    where, node = _chosen(search, "pruner", "pruners")
    cls = _class_of(where, node, optuna.pruners.BasePruner, "pruner")
    return _build(where, node, cls, {})


def describe(search: DictConfig, key: str) -> str:
    """The short name of the chosen sampler or pruner, or its class for an inline node."""
    chosen = search.get(key)
    if isinstance(chosen, DictConfig):
        return str(chosen.get("_target_", "")).rsplit(".", 1)[-1]
    return str(chosen or "none")


def _chosen(search: DictConfig, key: str, group: str) -> tuple[str, DictConfig]:
    """(config path, node) of `search.<key>`: a name in `search.<group>` or an inline node."""
    chosen = search.get(key)
    if isinstance(chosen, DictConfig):
        return f"search.{key}", chosen
    nodes = search.get(group) or {}
    name = str(chosen if chosen is not None else "none")
    if name not in nodes:
        raise UserInputError(
            f"search.{key}={name!r} is not one of the {key}s in search.{group}; accepted: "
            f"{', '.join(nodes)}, or a node with a _target_ (e.g. "
            f"'+search.{group}.NAME={{_target_: optuna.{group}.CLASS}}' search.{key}=NAME)."
        )
    return f"search.{group}.{name}", nodes[name]


def _class_of(where: str, node: Any, base: type, kind: str) -> type[Any]:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        cls = _locate(str(target)) if target else None
    except (ImportError, AttributeError, ValueError) as err:
        raise UserInputError(
            f"{where}._target_={target!r} cannot be imported ({type(err).__name__}: {err}). "
            f"Give the full path of an Optuna {kind} class, e.g. optuna.{kind}s.{_example(kind)}."
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserInputError(
            f"{where}._target_={target!r} is not an Optuna {kind}; give the full path of a "
            f"subclass of {base.__module__}.{base.__name__}, e.g. optuna.{kind}s.{_example(kind)}."
        )
    return cls


def _locate(path: str) -> object:
    """The object at dotted `path` (Hydra's `get_class` would log its own multi-line error)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError("not a dotted path module.Class")
    return getattr(importlib.import_module(module), name)


def _build(where: str, node: DictConfig, cls: type, extra: dict[str, Any]) -> Any:
    try:
        return hydra.utils.instantiate(node, _convert_="all", **extra)
    except Exception as err:  # an option the class does not take, or a value it rejects
        container = cast(dict[str, Any], OmegaConf.to_container(node))  # a DictConfig's: a dict
        options = {k: v for k, v in container.items() if k != "_target_"}
        cause = err.__cause__ or err
        raise UserInputError(
            f"{where}={options} cannot configure Optuna's {cls.__name__} "
            f"({type(cause).__name__}: {cause}). Use that class's keyword arguments "
            "(see conf/search/optuna.yaml and Optuna's documentation of the class)."
        ) from err


def _example(kind: str) -> str:
    return "TPESampler" if kind == "sampler" else "MedianPruner"


def grid_of(space: list[Param]) -> dict[str, list[Any]]:
    """Every value of every parameter, for the grid sampler (floats need a step)."""
    grid: dict[str, list[Any]] = {}
    for p in space:
        if p.kind == "categorical":
            grid[p.name] = list(p.choices)
        elif p.step is None or p.log:
            raise UserInputError(
                f"search.sampler=grid needs a finite grid, but space entry {p.name!r} is a "
                f"continuous {p.kind} range; give it a `step` (without log) or use another sampler."
            )
        else:
            assert p.low is not None and p.high is not None  # numeric: parse_space sets both
            count = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
            grid[p.name] = [p.low + i * p.step for i in range(count)]
            if p.kind == "float":
                grid[p.name] = [round(v, 12) for v in grid[p.name]]
    return grid


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose randomness is a function of (search.seed, trial number).

    Why: a sampler seeded once per process repeats itself. Every invocation of a continued study,
    and every worker of a shared one, would build it with the same seed and draw the same start-up
    points again (trial 4 = trial 0 after a resume; two workers side by side proposing one point).
    Trial numbers are unique in a study, across resumes and workers, so reseeding the wrapped
    sampler's random states from (seed, number) before each trial keeps a sweep reproducible from
    `seed` while no two trials share a random stream. Queued trials (the baseline, a re-queued
    interrupted trial) keep the parameters they were queued with.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, seed: int) -> None:
        self.inner, self.seed = inner, int(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reseed(self.inner, trial_seed(self.seed, trial.number))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial `number` of a sweep seeded with `seed` (stable across Pythons)."""
    digest = hashlib.sha256(f"sweeplab:{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def reseed(sampler: object, seed: int) -> None:
    """Seed every random state a sampler holds, its inner samplers' included (TPE's start-up
    RandomSampler, CMA-ES's independent sampler), so the next draws follow `seed`."""
    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(seed)
        elif isinstance(value, np.random.RandomState):
            value.seed(seed)
        elif isinstance(value, optuna.samplers.BaseSampler):
            reseed(value, seed)
