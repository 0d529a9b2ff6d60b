"""The Keras Tuner engine: the same space, trial code and MLflow records as the Optuna engine.

Keras Tuner's oracles (random, Bayesian, Hyperband) propose the values; every trial runs through
the shared `TrialRunner`, so model, data and tracking code are the ones the Optuna engine uses.

The loop here replaces `Tuner.search()` because `search()` hides failures (a crashed trial becomes
a status plus a traceback in trial.json), has no time budget, counts failed trials toward
`max_trials` and aborts in the middle of `end_trial` after too many failures, before the oracle
is saved. Here a failed trial is marked failed in MLflow with its reason, the oracle is saved
after every trial, `search.timeout` is checked between trials and only completed trials count
toward `search.n_trials`, as with Optuna.

The project directory `search.directory/<project>` holds the oracle; its name comes from the
study name, the tuner kind and the tuner's settings, so re-running the same command reloads it
(`overwrite=False`) and continues, and changing a setting that Keras Tuner would silently ignore
on reload (keras-tuner #803, #234) starts a new project instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import TrialStatus
from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from search.runner import Best, TrialRunner
from search.space import Param

TUNERS = ("random", "bayesian", "hyperband")
# Values Hyperband adds to a trial's hyperparameters; never logged as params.
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round")
# A Choice holds one type among these; any other list of choices is searched by label.
_NATIVE_CHOICE_TYPES = ({int}, {float}, {str})


# --- the space: backend-neutral Param list -> static keras_tuner.HyperParameters --------------


def to_hyperparameters(space: list[Param]) -> kt.HyperParameters:
    """Declare every parameter (parents first) in one static `HyperParameters`.

    Bounds follow Optuna's reading of the same spec: a stepped range ends on its last grid point,
    and an int log range has no step (Keras Tuner reads a log step as a factor). A `when` entry
    becomes the entry's list of `Parent` conditions, all of which must hold, as in
    `Param.is_active`: the list `conditional_scope` records. Nested `conditional_scope`s cannot
    express it, because an inner scope only finds a parent declared inside the outer one, and
    `when` parents are independent entries; so the conditions go into the declared config.
    """
    declared = kt.HyperParameters()
    for p in space:
        _declare(declared, p)  # validated by Keras Tuner's own constructors
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


def _declare(hp: kt.HyperParameters, p: Param) -> None:
    if p.kind == "categorical":
        hp.Choice(p.name, choice_values(p))
    elif p.kind == "int":
        if p.log:
            hp.Int(p.name, int(p.low), int(p.high), step=None, sampling="log")
        else:
            step = int(p.step or 1)
            top = int(p.low) + (int(p.high) - int(p.low)) // step * step
            hp.Int(p.name, int(p.low), top, step=step, sampling="linear")
    elif p.step is not None:
        count = math.floor((p.high - p.low) / p.step + 1e-9)
        # Keras Tuner counts grid points with `(max - min) // step`, which drops the top point
        # for most decimal steps (0.5 // 0.1 == 4.0): a hair above the top keeps it.
        top = p.low + count * p.step + p.step * 1e-6
        hp.Float(p.name, float(p.low), float(top), step=float(p.step), sampling="linear")
    else:
        hp.Float(p.name, float(p.low), float(p.high), sampling="log" if p.log else "linear")


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


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunerSettings:
    """The checked `search` group of the keras_tuner engine."""

    kind: str
    seed: int | None
    oracle: dict[str, Any]  # the settings that define the oracle (and so its project)
    directory: Path
    max_consecutive_failures: int

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
    failures = _whole(search, "max_consecutive_failures", minimum=1)
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
    return TunerSettings(kind, seed, oracle, directory, failures)


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
        # Failures are counted and reported by the engine's loop, after the oracle is saved.
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": None,
    }
    if settings.kind == "random":
        return kt.oracles.RandomSearchOracle(max_trials=None, **common)
    if settings.kind == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=None, **settings.oracle, **common)
    return kt.oracles.HyperbandOracle(**settings.oracle, **common)


# --- the tuner and the engine -------------------------------------------------------------------


class SweepTuner(BaseTuner):
    """A Keras Tuner project whose trials are sweeplab trials.

    `BaseTuner` gives the project directory, save and reload; `run_trial` hands the trial's
    values to the shared `TrialRunner` and returns the objective for the oracle.
    """

    def __init__(self, oracle: kt.Oracle, space: list[Param], kind: str, **kwargs: Any) -> None:
        super().__init__(oracle=oracle, hypermodel=None, overwrite=False, **kwargs)
        self.space, self.kind = space, kind
        self.run_ids: dict[str, str] = _read_json(self._run_ids_path())

    def run_trial(self, trial: Any, runner: TrialRunner) -> dict[str, float]:
        values = trial.hyperparameters.values
        params = params_of(values, self.space)
        tags: dict[str, Any] = {
            "tuner": self.kind,
            "keras_tuner_project": self.project_name,
            "keras_tuner_trial_id": trial.trial_id,
        }
        overrides: dict[str, Any] = {}
        if "tuner/epochs" in values:
            # Each Hyperband round trains a fresh model for the round's epochs (no checkpoint
            # carried over: every trial goes through the one training function).
            overrides["train.epochs"] = int(values["tuner/epochs"])
            tags.update(
                {
                    "hyperband_bracket": values["tuner/bracket"],
                    "hyperband_round": values["tuner/round"],
                    "hyperband_epochs": values["tuner/epochs"],
                    "hyperband_initial_epoch": values["tuner/initial_epoch"],
                }
            )
            if "tuner/trial_id" in values:
                tags["hyperband_promoted_from"] = values["tuner/trial_id"]
        outcome = runner.run(int(trial.trial_id), params, tags=tags, overrides=overrides)
        self.run_ids[trial.trial_id] = outcome.run_id
        return {runner.objective: outcome.metrics[runner.objective]}

    def save(self) -> None:
        super().save()
        self._run_ids_path().write_text(json.dumps(self.run_ids, indent=1))

    def _run_ids_path(self) -> Path:
        return Path(self.project_dir) / "sweeplab_run_ids.json"


class KerasTunerEngine:
    """A persistent Keras Tuner project, continued until search.n_trials trials completed."""

    name = "keras_tuner"

    def __init__(self, cfg: DictConfig, space: list[Param], study_name: str) -> None:
        self.settings = check_settings(cfg.search)
        self.space, self.objective = space, str(cfg.train.objective)
        self.project = str(cfg.search.get("project_name") or self.settings.project_name(study_name))
        self.tags = {
            "tuner": self.settings.kind,
            "sampler": self.settings.kind,
            "keras_tuner_project": self.project,
        }
        declared = to_hyperparameters(space)
        oracle = make_oracle(self.settings, declared, self.objective, str(cfg.train.direction))
        self.tuner = self._open(oracle)
        self.oracle.verbose = 0  # sweeplab prints its own line per trial
        _check_same_space(self.tuner, declared)
        self.tuner.save()

    def _open(self, oracle: kt.Oracle) -> SweepTuner:
        """Create the project, or reload it when it exists (Keras Tuner prints nothing here)."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return SweepTuner(
                    oracle,
                    self.space,
                    self.settings.kind,
                    directory=str(self.settings.directory),
                    project_name=self.project,
                )
        except (
            KeyError,
            ValueError,
            RuntimeError,
            TypeError,
        ) as err:  # json errors are ValueErrors
            raise UserInputError(
                f"the Keras Tuner project {self.settings.directory / self.project} exists but "
                f"cannot be reloaded ({type(err).__name__}: {err}). Delete that folder to start "
                "over, or set search.project_name=NEW_NAME to search in a new one."
            ) from err

    @property
    def oracle(self) -> kt.Oracle:
        return self.tuner.oracle

    def finished(self) -> int:
        return sum(t.status == TrialStatus.COMPLETED for t in self.oracle.trials.values())

    def best(self) -> Best | None:
        done = [t for t in self.oracle.get_best_trials(1) if t.status == TrialStatus.COMPLETED]
        if not done:
            return None
        trial = done[0]
        params = params_of(trial.hyperparameters.values, self.space)
        return Best(
            float(trial.score), int(trial.trial_id), params, self.tuner.run_ids.get(trial.trial_id)
        )

    def optimize(self, runner: TrialRunner, n_trials: int, timeout: float | None) -> None:
        """Run up to `n_trials` more trials (or until `timeout` seconds have passed).

        An interrupted trial stays in the oracle's ongoing trials, so the next run retries it.
        """
        started = time.monotonic()
        # Keras Tuner pads trial ids to the width of max_trials; the loop does the counting.
        self.oracle.max_trials = len(self.oracle.trials) + n_trials
        failures: list[str] = []
        for _ in range(n_trials):
            if timeout is not None and time.monotonic() - started >= timeout:
                print(f"search.timeout={timeout}s reached: no further trial started", flush=True)
                return
            trial = self.oracle.create_trial(self.tuner.tuner_id)
            if trial.status != TrialStatus.RUNNING:
                print(
                    f"Keras Tuner's {self.settings.kind} oracle proposes no further trial "
                    f"({trial.status}: the space is exhausted or Hyperband finished its "
                    "iterations)",
                    flush=True,
                )
                return
            try:
                metrics = self.tuner.run_trial(trial, runner)
            except Exception as err:  # the runner has marked the MLflow run failed, with reason
                if _interrupted(err):  # Ctrl-C inside TensorFlow can surface as another error
                    raise KeyboardInterrupt from err  # the trial stays ongoing: retried on resume
                trial.status, trial.message = TrialStatus.FAILED, f"{type(err).__name__}: {err}"
                failures.append(trial.message)
            else:
                self.oracle.update_trial(trial.trial_id, metrics)
                trial.status = TrialStatus.COMPLETED
                failures.clear()
            self.oracle.end_trial(trial)
            self.tuner.save()
            if len(failures) >= self.settings.max_consecutive_failures:
                raise UserInputError(
                    f"{len(failures)} trials in a row failed (search.max_consecutive_failures="
                    f"{self.settings.max_consecutive_failures}), so the search stopped; the last "
                    f"reason: {failures[-1].splitlines()[0][:300]}. Each failed trial is in MLflow "
                    "with its reason (tag sweeplab.failure_reason); fix the space or config and "
                    "run the same command again to continue."
                )


def _check_same_space(tuner: SweepTuner, declared: kt.HyperParameters) -> None:
    """A reloaded project keeps its own space; refuse to continue it with a different one."""
    saved = tuner.oracle.hyperparameters.get_config()["space"]
    if saved != declared.get_config()["space"]:
        raise UserInputError(
            f"the Keras Tuner project {tuner.project_dir} was created for another search space "
            "than the configured one. Set search.project_name (or search.study_name) to a new "
            "name to search this space, or restore the space to continue that project."
        )


def _interrupted(err: BaseException) -> bool:
    """Whether `err` was raised while handling a KeyboardInterrupt."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


def _read_json(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
