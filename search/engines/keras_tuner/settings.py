"""The checked `search` group of `search=keras_tuner`, and the oracle it defines.

Validated before anything is written; the settings that define the oracle also name its project
folder, so changing one (which Keras Tuner would silently ignore on reload: keras-tuner #803,
#234) starts a new project instead of continuing the old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError

TUNERS = ("random", "bayesian", "hyperband")


@dataclass(frozen=True)
class TunerSettings:
    """The checked `search` group of the keras_tuner engine."""

    kind: str
    seed: int | None
    oracle: dict[str, Any]  # the settings that define the oracle (and so its project)
    directory: Path

    def project_name(self, study_name: str) -> str:
        """`<study>-<tuner>-<hash of the oracle settings>`: same command, same project."""
        text = json.dumps({"seed": self.seed, **self.oracle}, sort_keys=True)
        return f"{study_name}-{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def check_settings(search: DictConfig) -> TunerSettings:
    """Validate the keras_tuner settings before anything is written."""
    kind = str(search.get("tuner"))
    if kind not in TUNERS:
        raise UserInputError(
            f"search.tuner={kind!r} is not a Keras Tuner tuner sweeplab knows; accepted: "
            f"{', '.join(TUNERS)}."
        )
    seed = _whole(search, "seed", minimum=0, optional=True)
    oracle: dict[str, Any] = {}
    if kind == "bayesian":
        oracle["num_initial_points"] = _whole(
            search, "bayesian.num_initial_points", minimum=1, optional=True
        )
        for key in ("alpha", "beta"):
            value = OmegaConf.select(search, f"bayesian.{key}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UserInputError(f"search.bayesian.{key}={value!r} must be a positive number.")
            oracle[key] = float(value)
    elif kind == "hyperband":
        oracle["max_epochs"] = _whole(search, "hyperband.max_epochs", minimum=1)
        oracle["factor"] = _whole(search, "hyperband.factor", minimum=2)
        oracle["hyperband_iterations"] = _whole(
            search, "hyperband.hyperband_iterations", minimum=1, optional=True
        )
    directory = Path(str(search.get("directory") or "keras_tuner")).expanduser().resolve()
    return TunerSettings(kind, seed, oracle, directory)


def pruner_note(search: DictConfig) -> str | None:
    """The line saying `search.pruner` is not used, when it names one (None: `none` or unset).

    Keras Tuner's oracles cannot stop a trial inside it, so an Optuna pruner has nothing to run
    on. It is not refused, for the reason the multi-objective note gives
    (`search.trials.objectives.pruning_note`): `sweep=transfer` sets `search.pruner: hyperband`,
    and `+sweep=transfer search=keras_tuner` must work without also `search.pruner=none`.
    """
    pruner = search.get("pruner")
    name = "none" if pruner is None else str(pruner) if isinstance(pruner, str) else "a node"
    if name == "none":
        return None
    return (
        f"note: search.pruner={name} is not used with search=keras_tuner: Keras Tuner's oracles "
        "cannot stop a trial inside it, so every trial trains all its epochs (search.timeout "
        "still ends the search between trials). search.tuner=hyperband is Keras Tuner's own "
        "successive halving over epochs, between rounds; set search.pruner=none to silence this "
        "note."
    )


def _whole(search: DictConfig, key: str, minimum: int, optional: bool = False) -> int | None:
    value = OmegaConf.select(search, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"a whole number of {minimum} or more" + (", or null" if optional else "")
        raise UserInputError(f"search.{key}={value!r} is not accepted; use {accepted}.")
    return value


def make_oracle(
    settings: TunerSettings, space: kt.HyperParameters, objective: str, direction: str
) -> kt.Oracle:
    """The oracle `search.tuner` names, over exactly `space` (no entries added later)."""
    common = {
        "objective": kt.Objective(objective, "max" if direction == "maximize" else "min"),
        "hyperparameters": space,
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": settings.seed,
        # Failures are counted by the shared `search.trials.outcomes` rules, after the oracle is saved.
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": None,
    }
    if settings.kind == "random":
        return kt.oracles.RandomSearchOracle(max_trials=None, **common)
    if settings.kind == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=None, **settings.oracle, **common)
    return kt.oracles.HyperbandOracle(**settings.oracle, **common)
