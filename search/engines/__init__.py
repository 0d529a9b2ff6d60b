"""The seam between a sweep and its search engine.

`search.sweep` and `search.execution.resume` call an engine only through `Engine`; each engine module
(the only modules that import optuna or keras_tuner) implements every member, so adding an
engine means one class that satisfies this protocol plus a line in `make_engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from omegaconf import DictConfig

from experiments.errors import UserInputError
from search.config.rules import ENGINES  # search.engine: a row of the table

if TYPE_CHECKING:
    from search.space.spec import Param
    from search.trials.runner import TrialRunner
    from search.trials.types import Best


@runtime_checkable
class Engine(Protocol):
    """A persistent study continued by the same command until `search.n_trials` have finished."""

    tags: dict[str, str]  # engine-specific tags of the sweep run (sampler, tuner kind, project)
    store: str  # where the study lives, as the interrupt message names it
    interrupted: list[int]  # trials of this process cut short by Ctrl-C / SIGTERM

    def finished(self) -> int:
        """Trials that count toward n_trials (`search.trials.outcomes.is_finished`), over all runs."""
        ...

    def best(self) -> Best | None:
        """The best complete trial so far, or None."""
        ...

    def top(self, k: int) -> list[Best]:
        """The k best complete trials, best first (the final stage's top-k re-evaluation)."""
        ...

    def optimize(self, runner: TrialRunner, n_trials: int) -> None:
        """Run trials through `runner` until the study is complete or `runner.budget` says the
        search is over (search.timeout, search/trials/budget.py).

        Raises `TooManyFailures` when `runner.failures` says so, KeyboardInterrupt on Ctrl-C
        after noting the cut trial in `interrupted`.
        """
        ...

    def recover(self) -> list[int]:
        """Before the first trial: fail and queue again the trials of dead processes."""
        ...

    def trial_alive(self, tags: Mapping[str, str]) -> bool | None:
        """Whether the engine trial that a trial run's tags name still runs; None: cannot tell."""
        ...

    def is_pruned(self, err: BaseException) -> bool:
        """Whether `err` is this engine's signal that the pruner stopped the trial."""
        ...


def make_engine(cfg: DictConfig, space: list[Param], name: str) -> Engine:
    """The search engine `search.engine` names, over an existing or new study `name`."""
    engine = str(cfg.search.engine)
    if engine == "keras_tuner":
        from search.engines.keras_tuner import KerasTunerEngine

        return KerasTunerEngine(cfg, space, name)
    if engine == "optuna":
        from search.engines.optuna.engine import OptunaEngine

        return OptunaEngine(cfg, space, name)
    raise _unknown(engine)


def stored_model(cfg: DictConfig, name: str) -> bool | None:
    """Whether study `name` has a completed trial, found without creating anything (the budget's
    refusal comes before any store is: search/trials/preflight.py); None: not known until the
    study is opened (a Keras Tuner project folder that exists, a store that cannot be read)."""
    from search.config.stores import sqlite_path

    if str(cfg.search.engine) == "keras_tuner":
        return None if Path(str(cfg.search.directory)).exists() else False
    storage = str(cfg.search.storage)
    path = sqlite_path(storage)
    if path is not None and not path.exists():
        return False
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study in the store
        return False
    except Exception:  # the engine's own opening says what is wrong with the store
        return None
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _unknown(engine: str) -> UserInputError:
    return UserInputError(
        f"search.engine={engine!r} is not a search engine; accepted: {', '.join(ENGINES)} "
        "(choose with search=NAME)."
    )
