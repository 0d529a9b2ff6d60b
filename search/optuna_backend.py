"""The Optuna engine: translate the space to `suggest_*`, drive a persistent study.

The study lives in `search.storage` (SQLite by default, PostgreSQL for many workers) and is
loaded if it exists, so the same command continues it until `search.n_trials` trials have
finished in all.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from omegaconf import DictConfig
from optuna.trial import TrialState

from experiments.errors import UserInputError
from search.runner import Best, TrialRunner
from search.space import Param

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
# Trials that count toward search.n_trials.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def suggest(trial: optuna.Trial, space: list[Param]) -> dict[str, Any]:
    """Sample every active parameter (parents first), returning {dotted key: value}."""
    sampled: dict[str, Any] = {}
    for p in space:
        if not p.is_active(sampled):
            continue
        if p.kind == "categorical":
            sampled[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            sampled[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return sampled


def make_sampler(cfg: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    """The sampler `search.sampler` names, seeded with `search.seed`."""
    name, seed = str(cfg.sampler), cfg.get("seed")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)
    raise UserInputError(
        f"search.sampler={name!r} is not an Optuna sampler sweeplab knows; accepted: "
        f"{', '.join(SAMPLERS)}."
    )


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
            count = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
            grid[p.name] = [p.low + i * p.step for i in range(count)]
            if p.kind == "float":
                grid[p.name] = [round(v, 12) for v in grid[p.name]]
    return grid


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage; a SQLite file's folder is created first."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.IntegrityError:
            # Workers starting together race to create the schema; the loser retries and finds it.
            time.sleep(0.5 * (attempt + 1))
        except Exception as err:  # SQLAlchemy raises many kinds; all mean the URL is unusable
            raise _bad_storage(url, err) from err
    return optuna.storages.RDBStorage(url)


def _bad_storage(url: str, err: Exception) -> UserInputError:
    return UserInputError(
        f"search.storage={url!r} cannot be opened ({type(err).__name__}: {err}). Accepted: "
        "sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/database."
    )


def best_of(study: optuna.Study) -> Best | None:
    """The study's best complete trial so far, as the runner tracks it."""
    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    return Best(
        float(best.value), best.number, dict(best.params), best.user_attrs.get("mlflow_run_id")
    )


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class OptunaEngine:
    """A persistent Optuna study, continued until search.n_trials trials have finished in all."""

    name = "optuna"

    def __init__(self, cfg: DictConfig, space: list[Param], study_name: str) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cfg, self.space, self.study_name = cfg, space, study_name
        self.study = optuna.create_study(
            study_name=study_name,
            storage=make_storage(str(cfg.search.storage)),
            sampler=make_sampler(cfg.search, space),
            direction=str(cfg.train.direction),
            load_if_exists=True,
        )

    def finished(self) -> int:
        return finished_count(self.study)

    def best(self) -> Best | None:
        return best_of(self.study)

    def optimize(self, runner: TrialRunner, n_trials: int, timeout: float | None) -> None:
        """Run up to `n_trials` more trials (or until `timeout` seconds have passed)."""

        def objective(trial: optuna.Trial) -> float:
            params = suggest(trial, self.space)
            outcome = runner.run(trial.number, params, tags={"optuna_study": self.study_name})
            trial.set_user_attr("mlflow_run_id", outcome.run_id)
            return outcome.metrics[runner.objective]

        total = int(self.cfg.search.n_trials)
        # Other workers sharing the study may be running trials: claim only what is left.
        n_trials = min(n_trials, total - self.claimed())
        if n_trials <= 0:
            print("the remaining trials are running in other workers: nothing to start here.")
            return

        def stop_at_total(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
            if self.claimed() >= total:
                study.stop()

        self.study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[stop_at_total],
        )

    def claimed(self) -> int:
        """Finished trials plus those running now (here or in another worker)."""
        states = (*FINISHED, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states))
