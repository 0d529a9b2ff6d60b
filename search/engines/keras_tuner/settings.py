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
    """The keras_tuner settings; each value is a row of search/config/rules.py (search.tuner,
    search.seed, search.bayesian.*, search.hyperband.*), checked before anything is written."""
    kind = str(search.get("tuner"))
    oracle: dict[str, Any] = {}
    if kind == "bayesian":
        oracle["num_initial_points"] = OmegaConf.select(search, "bayesian.num_initial_points")
        for key in ("alpha", "beta"):
            oracle[key] = float(OmegaConf.select(search, f"bayesian.{key}"))
    elif kind == "hyperband":
        for key in ("max_epochs", "factor", "hyperband_iterations"):
            oracle[key] = OmegaConf.select(search, f"hyperband.{key}")
    directory = Path(str(search.get("directory") or "keras_tuner")).expanduser().resolve()
    return TunerSettings(kind, search.get("seed"), oracle, directory)


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
