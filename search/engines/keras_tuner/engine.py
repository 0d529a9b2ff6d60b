"""The Keras Tuner engine: the same space, trial code and MLflow records as the Optuna engine.

Keras Tuner's oracles (random, Bayesian, Hyperband) propose the values; every trial runs through
the shared `TrialRunner`, so model, data and tracking code are the ones the Optuna engine uses.

The loop here replaces `Tuner.search()` because `search()` hides failures (a crashed trial becomes
a status plus a traceback in trial.json), has no time budget, counts failed trials toward
`max_trials` and aborts in the middle of `end_trial` after too many failures, before the oracle
is saved. Here a failed trial is marked failed in MLflow with its reason, the oracle is saved
after every trial, `search.timeout` is checked between trials, and what counts toward
`search.n_trials` and what stops the sweep are the shared rules of `search.trials.outcomes`: complete and
genuinely failed trials count, `search.max_consecutive_failures` failures in a row raise
`TooManyFailures` (exit 3), an interrupted trial stays ongoing in the oracle and is redone.

The project directory `search.directory/<project>` holds the oracle; its name comes from the
study name, the tuner kind and the tuner's settings, so re-running the same command reloads it
(`overwrite=False`) and continues.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import Trial, TrialStatus
from omegaconf import DictConfig

from experiments.errors import UserInputError
from experiments.outcome import TrialOutcome
from search.engines.keras_tuner.settings import check_settings, make_oracle, pruner_note
from search.engines.keras_tuner.translation import params_of, to_hyperparameters
from search.space.baseline import announce, baseline
from search.space.spec import Param
from search.space.variants import announce_variants, variants
from search.trials.outcomes import failure_reason, forgiven, is_finished
from search.trials.runner import TrialRunner
from search.trials.types import Best

# Keras Tuner's statuses as the shared outcomes; RUNNING and IDLE are not ended yet.
_OUTCOMES = {
    TrialStatus.COMPLETED: TrialOutcome.COMPLETE,
    TrialStatus.FAILED: TrialOutcome.FAILED,
    TrialStatus.INVALID: TrialOutcome.FAILED,
    TrialStatus.STOPPED: TrialOutcome.INTERRUPTED,
}


def outcome_of(trial: Trial) -> TrialOutcome | None:
    """The shared outcome of a Keras Tuner trial; None while it runs or waits."""
    return _OUTCOMES.get(trial.status)


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

    def __init__(self, cfg: DictConfig, space: list[Param], study_name: str) -> None:
        self.settings = check_settings(cfg.search)
        self.space, self.objective = space, str(cfg.train.objective)
        self.project = str(cfg.search.get("project_name") or self.settings.project_name(study_name))
        self.tags = {
            "tuner": self.settings.kind,
            "sampler": self.settings.kind,
            "pruner": "none",  # whatever search.pruner says: see pruner_note
            "keras_tuner_project": self.project,
        }
        note = pruner_note(cfg.search)
        if note:
            print(note, flush=True)
        self.store = f"Keras Tuner project {self.settings.directory / self.project}"
        self.interrupted: list[int] = []  # trials of this process cut short by Ctrl-C / SIGTERM
        base = baseline(space, cfg)
        declared = to_hyperparameters(space, base.values if base.usable else None)
        oracle = make_oracle(self.settings, declared, self.objective, str(cfg.train.direction))
        self.tuner = self._open(oracle)
        self.oracle.verbose = 0  # sweeplab prints its own line per trial
        _check_same_space(self.tuner, declared)
        if not self.oracle.trials:  # a new project (a continued one never gets trial 0 again)
            announce(base)
            points = variants(space, cfg)
            announce_variants(points)
            queued = [dict(declared.values)] if base.usable else []
            for _, point in points:
                if not point.usable:
                    continue
                values = dict(to_hyperparameters(space, point.values).values)
                if values not in queued:  # as Optuna's skip_if_exists
                    queued.append(values)
            _queued_first(self.oracle, queued)
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
        """Finished trials less the timed-out ones while none completed (trials/outcomes.py)."""
        trials = list(self.oracle.trials.values())
        outcomes = [(outcome_of(t), str(t.message or "")) for t in trials]
        return sum(is_finished(o) for o, _ in outcomes) - forgiven(outcomes)

    def recover(self) -> list[int]:
        """Nothing to fail: a trial cut short stays ongoing in the saved oracle, which hands it
        out again to the next `create_trial` of this tuner id, with the same values."""
        return []

    def trial_alive(self, tags: Mapping[str, str]) -> bool | None:
        """The oracle keeps no heartbeat: MLflow runs are judged by their process id alone."""
        return None

    def is_pruned(self, err: BaseException) -> bool:
        """Keras Tuner's oracles do not prune inside a trial (Hyperband stops between rounds)."""
        return False

    def best(self) -> Best | None:
        top = self.top(1)
        return top[0] if top else None

    def top(self, k: int) -> list[Best]:
        """The k best completed trials by the objective, best first (the final stage re-trains
        them with more seeds: search/final/reevaluate.py). A non-finite score (an infinite
        loss, a NaN metric) ranks nowhere, as in the Optuna engine."""
        ranked = self.oracle.get_best_trials(len(self.oracle.trials))
        done = [
            t
            for t in ranked
            if t.status == TrialStatus.COMPLETED
            and t.score is not None
            and math.isfinite(float(t.score))
        ][:k]
        return [
            Best(
                float(t.score),
                int(t.trial_id),
                params_of(t.hyperparameters.values, self.space),
                self.tuner.run_ids.get(t.trial_id),
            )
            for t in done
        ]

    def optimize(self, runner: TrialRunner, n_trials: int) -> None:
        """Run up to `n_trials` more trials, or until the search's share of `search.timeout` is
        spent (`runner.budget`, checked between trials: a running trial is not stopped).

        An interrupted trial stays in the oracle's ongoing trials, so the next run retries it.
        """
        # Keras Tuner pads trial ids to the width of max_trials; the loop does the counting.
        self.oracle.max_trials = len(self.oracle.trials) + n_trials
        for _ in range(n_trials):
            if runner.budget.search_over():
                if not runner.budget.plateaued():  # a plateau says so itself
                    print("search.timeout: the time left is the final stage's; no new trial")
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
            except KeyboardInterrupt:  # the runner turns an error caused by Ctrl-C into this
                self.interrupted.append(int(trial.trial_id))
                raise  # the trial stays ongoing in the saved oracle: redone on resume
            except UserInputError:  # a config error: not counted, the sweep stops (exit 2)
                raise
            except Exception as err:  # the runner has marked the MLflow run failed, with reason
                trial.status, trial.message = TrialStatus.FAILED, failure_reason(err)
            else:
                self.oracle.update_trial(trial.trial_id, metrics)
                trial.status = TrialStatus.COMPLETED
            self.oracle.end_trial(trial)
            self.tuner.save()
            runner.failures.raise_if_exceeded()


def _queued_first(oracle: kt.Oracle, queued: list[dict[str, Any]]) -> None:
    """Baseline first (search/space/baseline.py), then `search.variants` (search/space/variants.py): the
    oracle's first proposals are these values, in order.

    Keras Tuner's oracles start at random; every one of them (random, Bayesian's initial points,
    Hyperband's bracket candidates) draws through `_random_values`, so its first calls return the
    queued values instead, and every later proposal is the oracle's own.
    """
    draw = oracle._random_values
    waiting = list(queued)

    def queued_then_drawn() -> dict[str, Any] | None:
        if len(waiting) == 1:
            oracle._random_values = draw  # the last queued point: from now on the oracle's own
        return dict(waiting.pop(0))

    if waiting:
        oracle._random_values = queued_then_drawn


def _without_defaults(space: list[dict]) -> list[dict]:
    """A space's config without default values: projects created before defaults were the base
    config's values (or with another base value) search the same space."""
    return [
        {**entry, "config": {k: v for k, v in entry["config"].items() if k != "default"}}
        for entry in space
    ]


def _check_same_space(tuner: SweepTuner, declared: kt.HyperParameters) -> None:
    """A reloaded project keeps its own space; refuse to continue it with a different one."""
    saved = _without_defaults(tuner.oracle.hyperparameters.get_config()["space"])
    if saved != _without_defaults(declared.get_config()["space"]):
        raise UserInputError(
            f"the Keras Tuner project {tuner.project_dir} was created for another search space "
            "than the configured one. Set search.project_name (or search.study_name) to a new "
            "name to search this space, or restore the space to continue that project."
        )


def _read_json(path: Path) -> dict[str, str]:
    """The trials' MLflow run ids; none in a new project; said when the file cannot be read
    (the final stage cannot read back a trial whose run id is lost)."""
    try:
        ids = json.loads(path.read_text())
        if not isinstance(ids, dict):
            raise ValueError(f"a JSON {type(ids).__name__}, not an object")
        return ids
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        print(
            f"keras_tuner: cannot read the trials' MLflow run ids from {path} ({err}); trials "
            "recorded before this run have none, and the final stage cannot test one of them",
            flush=True,
        )
        return {}
