"""A recorded sweep read back from MLflow: its config, space, objectives and one `Row` a trial.

The leaderboard ranks the rows, the champion rule chooses among them, the report draws them.

Engine-neutral: everything comes from the MLflow records (`tracking.sweep_records`), which both
engines write the same way. Params come back from MLflow as strings; they are typed again with
the sweep's own space, so the rows compare, sort and plot like the values the engine sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from search.space.spec import Param, parse_space
from search.trials.objectives import Objective, objectives_of
from tracking.sweep_records import SweepRef, TrialRecord


@dataclass
class Row:
    """One trial as the leaderboard shows it."""

    trial: int
    state: str
    values: dict[str, float | None]  # objective metric -> value
    epochs: int | None
    seconds: float | None
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    rank: int = 0

    def get(self, key: str) -> Any:
        if key in self.values:
            return self.values[key]
        if key in ("trial", "state", "epochs", "seconds"):
            return getattr(self, key)
        return self.metrics.get(key)


@dataclass
class SweepView:
    """One sweep (a study, all its invocations) ready to rank, plot and advise on."""

    ref: SweepRef
    cfg: DictConfig
    space: list[Param]
    objectives: list[Objective]
    records: list[TrialRecord]
    rows: list[Row]
    # The engine's own record where one was read for the view (an Optuna study), so the report
    # drawn from the view does not open the storage a second time.
    engine_record: Any = field(default=None, repr=False)

    @property
    def engine(self) -> str:
        return str(self.cfg.search.engine)


def view_of(ref: SweepRef, records: list[TrialRecord]) -> SweepView:
    """The view of a sweep from its parent run and its trial records."""
    cfg = cast(DictConfig, OmegaConf.create(ref.config_yaml))  # the sweep's config: a mapping
    space = parse_space(cfg.space, cfg)
    objectives = objectives_of(cfg)
    rows = [row_of(r, objectives, space) for r in records]
    return SweepView(ref, cfg, space, objectives, records, rows)


def metric_value(metrics: dict[str, float], name: str) -> float | None:
    """A trial's value of `name`: its end-of-training value (final_*) or the last one logged."""
    value = metrics.get(f"final_{name}", metrics.get(name))
    return None if value is None or math.isnan(value) else float(value)


def row_of(record: TrialRecord, objectives: list[Objective], space: list[Param]) -> Row:
    """The leaderboard row of one trial record."""
    return Row(
        trial=record.number,
        state=record.state,
        values={o.metric: metric_value(record.metrics, o.metric) for o in objectives},
        epochs=record.epochs,
        seconds=record.seconds,
        params=typed_params(record.params, space),
        metrics=dict(record.metrics),
        run_id=record.run_id,
    )


def typed_params(params: dict[str, str], space: list[Param]) -> dict[str, Any]:
    """MLflow's string params as the space's values (int, float, or the matching choice)."""
    by_name = {p.name: p for p in space}
    typed: dict[str, Any] = {}
    for name, text in params.items():
        p = by_name.get(name)
        if p is None:
            typed[name] = text
        elif p.kind == "categorical":
            typed[name] = next((c for c in p.choices if str(c) == text), text)
        elif p.kind == "int":
            typed[name] = int(float(text))
        else:
            typed[name] = float(text)
    return typed
