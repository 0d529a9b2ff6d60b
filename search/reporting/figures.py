"""Optuna's side of the sweep report: the study, its plots and its parameter importances.

The engine-specific half of `search.reporting.html` (only engine modules import optuna). For an
Optuna sweep the study is loaded from its storage; for a Keras Tuner sweep (no study) the MLflow
trial rows become Optuna `FrozenTrial`s in an in-memory study, so both engines get Optuna's own
plots and importance code rather than hand-written ones.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from experiments.outcome import STOPPED_EARLY, state_label
from search.space.spec import Param
from search.trials.objectives import Direction, Objective
from search.trials.records import Row

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def load_study(storage: str, name: str) -> optuna.Study | None:
    """The sweep's study from its storage, or None when the storage has no such study.

    None also when the storage cannot be opened (a moved SQLite file, a database that is
    down): the report then rebuilds the study from the MLflow records instead of failing.
    """
    quiet()
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return None  # opening it would create an empty database at the old place
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - any storage error: fall back to the MLflow records
        return None


def study_truth(study: optuna.Study) -> dict[int, tuple[str, list[float] | None]]:
    """Each trial's state and values as the study stores them (what the engine optimized)."""
    truth: dict[int, tuple[str, list[float] | None]] = {}
    for t in study.get_trials(deepcopy=False):
        state = STATES.get(t.state, t.state.name.lower())
        if t.state == TrialState.FAIL and "failure_reason" not in t.user_attrs:
            state = "interrupted"  # cut short by a kill: Optuna says FAIL, the sweep re-ran it
        state = state_label(state, t.user_attrs.get("stopped_by"))
        truth[t.number] = (state, list(t.values) if t.values is not None else None)
    return truth


def distributions(space: Sequence[Param]) -> dict[str, BaseDistribution]:
    """The space as Optuna distributions (a stepped float loses its step: KT rounds values)."""
    out: dict[str, BaseDistribution] = {}
    for p in space:
        if p.kind == "categorical":
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None  # numeric: parse_space sets both
            out[p.name] = IntDistribution(
                int(p.low), int(p.high), log=p.log, step=1 if p.log else int(p.step or 1)
            )
        else:
            assert p.low is not None and p.high is not None  # numeric: parse_space sets both
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


def study_from_rows(
    rows: Sequence[Row], space: Sequence[Param], objectives: Sequence[Objective]
) -> optuna.Study:
    """An in-memory study holding the rows as trials (for engines that have no study)."""
    quiet()
    study = optuna.create_study(directions=[cast(Direction, o.direction) for o in objectives])
    study.set_metric_names([o.metric for o in objectives])
    dists = distributions(space)
    trials: list[FrozenTrial] = []
    for row in sorted(rows, key=lambda r: r.trial):
        params = {k: v for k, v in row.params.items() if k in dists and _fits(dists[k], v)}
        values = [row.values.get(o.metric) for o in objectives]
        complete = row.state == "complete" and all(_finite(v) for v in values)
        state = TrialState.PRUNED if row.state in STOPPED_EARLY else TrialState.FAIL
        trials.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE if complete else state,
                # complete: every value is a finite number (the checker sees float | None)
                values=[float(v) for v in values] if complete else None,  # type: ignore[arg-type]
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs={"mlflow_run_id": row.run_id, "trial": row.trial},
            )
        )
    study.add_trials(trials)
    return study


def _finite(value: Any) -> bool:
    return value is not None and not math.isnan(float(value))


def _fits(dist: BaseDistribution, value: Any) -> bool:
    with contextlib.suppress(Exception):
        return dist._contains(dist.to_internal_repr(value))
    return False


def import_in_background() -> None:
    """Import what `figures` draws with, in a daemon thread: `optuna.visualization` pulls in
    matplotlib and plotly, parameter importances scikit-learn (about a second of the report's
    time otherwise). Started while trials train in worker processes, where this process mostly
    waits; an import that fails here is raised again, with its error, where it is used."""

    def imports() -> None:
        with contextlib.suppress(BaseException):
            importlib.import_module("optuna.visualization")
            importlib.import_module("optuna.importance")
            importlib.import_module("plotly.offline")

    threading.Thread(target=imports, name="sweeplab-report-imports", daemon=True).start()


def figures(study: optuna.Study, objectives: Sequence[Objective]) -> list[tuple[str, Any, str]]:
    """(title, plotly figure or None, note) for each of Optuna's study plots.

    A plot Optuna cannot draw yet (one complete trial, no parameter that varies) comes back as
    None with the reason, so the report says why instead of leaving a blank box.
    """
    vis = optuna.visualization
    names = [o.metric for o in objectives]
    out: list[tuple[str, Any, str]] = []
    if len(objectives) > 1:
        out.append(_draw("Pareto front", lambda: vis.plot_pareto_front(study, target_names=names)))
    for i, o in enumerate(objectives):
        target = _target(i) if len(objectives) > 1 else None
        label = f" ({o.metric})" if len(objectives) > 1 else ""
        kwargs = {"target": target, "target_name": o.metric}
        out.append(
            _draw(
                f"Optimization history{label}",
                lambda kw=kwargs: vis.plot_optimization_history(study, **kw),
            )
        )
        out.append(
            _draw(
                f"Parameter importances{label}",
                lambda kw=kwargs: vis.plot_param_importances(study, **kw),
            )
        )
        out.append(
            _draw(
                f"Parallel coordinates{label}",
                lambda kw=kwargs: vis.plot_parallel_coordinate(study, **kw),
            )
        )
        out.append(_slices(study, f"Slice plots{label}", kwargs))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        out.append(
            _draw(
                "Intermediate values (what the pruner saw)",
                lambda: vis.plot_intermediate_values(study),
            )
        )
    return out


def _slices(study: optuna.Study, title: str, kwargs: dict[str, Any]) -> tuple[str, Any, str]:
    """One slice plot per parameter (a list of figures the report lays out in a grid), not
    Optuna's single row of every parameter: 13 of them made a 3,900-px wide page."""
    names = sorted({p for t in study.get_trials(deepcopy=False) for p in t.params})
    drawn = [_draw(title, lambda n=n: vis_slice(study, n, kwargs)) for n in names]
    plots = [figure for _, figure, _ in drawn if figure is not None]
    if not plots:
        return drawn[0] if drawn else (title, None, "not drawn: no parameter sampled yet")
    return title, plots, ""


def vis_slice(study: optuna.Study, name: str, kwargs: dict[str, Any]) -> Any:
    figure = optuna.visualization.plot_slice(study, params=[name], **kwargs)
    figure.update_layout(title=name, width=None, height=320, margin={"t": 40, "b": 40})
    return figure


def _target(i: int) -> Callable[[FrozenTrial], float]:
    return lambda t: t.values[i]


# `make` is called without arguments; `...` lets a lambda bind the loop's values as defaults.
def _draw(title: str, make: Callable[..., Any]) -> tuple[str, Any, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figure = make()
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return title, None, f"not drawn: {err}"
    if not figure.data:
        return title, None, "not drawn: no complete trial with values for this plot yet"
    return title, figure, ""


def importances(study: optuna.Study, index: int, multi: bool) -> dict[str, float]:
    """Optuna's fANOVA importances for objective `index` ({} when it cannot compute them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(
                optuna.importance.get_param_importances(
                    study, target=_target(index) if multi else None
                )
            )
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def pareto_numbers(study: optuna.Study) -> list[int]:
    """The sweep trial numbers on the Pareto front (Optuna's `best_trials`)."""
    return sorted(int(t.user_attrs.get("trial", t.number)) for t in study.best_trials)
