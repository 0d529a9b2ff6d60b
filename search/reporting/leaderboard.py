"""The leaderboard: a sweep's trials ranked, as a terminal table, CSV or JSON.

Engine-neutral: it ranks `Row`s built from the MLflow trial records (and the engine's own values
where it has a study, see `search.report`). Finished trials come before pruned ones, pruned before
failed, so "rank 1" is always a trial that ran to its end.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from experiments.errors import UserInputError
from experiments.outcome import BUDGET_STOPPED
from search.trials.objectives import Objective
from search.trials.records import Row

STATE_ORDER = {
    "complete": 0,
    "pruned": 1,
    BUDGET_STOPPED: 1,
    "failed": 2,
    "interrupted": 3,
    "running": 4,
}
# Columns every row has; `--sort` takes these, an objective or any logged metric.
FIXED = ("trial", "state", "epochs", "seconds", "model_params", "model_bytes", "latency_ms")


def rank(rows: list[Row], objectives: Sequence[Objective], sort: str | None = None) -> list[Row]:
    """Rows in leaderboard order, `rank` set from 1.

    Default: by state (complete first), then the first objective in its direction, then the
    other objectives. `sort` names a column (ascending, or descending for a maximized objective);
    a leading `-` reverses it.
    """
    if sort:
        key, reverse = sort.lstrip("-"), sort.startswith("-")
        known = {*FIXED, *(o.metric for o in objectives)} | {m for r in rows for m in r.metrics}
        if key not in known:
            raise UserInputError(
                f"--sort {sort!r} is not a column; accepted: {', '.join(sorted(known))} "
                "(a leading - reverses the order)."
            )
        maximize = any(o.metric == key and o.maximize for o in objectives)
        ordered = sorted(rows, key=lambda r: _missing_last(r.get(key), maximize != reverse))
    else:
        ordered = sorted(
            rows,
            key=lambda r: (
                STATE_ORDER.get(r.state, 9),
                *(_missing_last(r.values.get(o.metric), o.maximize) for o in objectives),
                r.trial,
            ),
        )
    for position, row in enumerate(ordered, start=1):
        row.rank = position
    return ordered


def _missing_last(value: Any, descending: bool) -> tuple[int, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0)
    if isinstance(value, int | float):
        return (0, -value if descending else value)
    return (0, str(value))


def differing(rows: Sequence[Row]) -> list[str]:
    """The parameter names whose values differ among `rows` (the ones worth a column)."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row.params if k not in names)
    return [n for n in names if len({repr(r.params.get(n)) for r in rows}) > 1]


def records(rows: Sequence[Row], objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """One flat dict per row: the machine-readable leaderboard (CSV and JSON)."""
    out = []
    for r in rows:
        out.append(
            {
                "rank": r.rank,
                "trial": r.trial,
                **{o.metric: r.values.get(o.metric) for o in objectives},
                "state": r.state,
                "epochs": r.epochs,
                "seconds": r.seconds,
                "model_params": r.metrics.get("model_params"),
                "model_bytes": r.metrics.get("model_bytes"),
                "latency_ms": r.metrics.get("latency_ms"),
                "run_id": r.run_id,
                **{f"param.{k}": v for k, v in r.params.items()},
            }
        )
    return [{k: plain(v) for k, v in entry.items()} for entry in out]


def plain(value: Any) -> Any:
    """A number as a person writes it: a whole float as an int (`51946`, not `51946.0`), any
    other float to 10 significant digits (`0.35`, not `0.35000000000000003`); NaN stays NaN."""
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    if value.is_integer() and abs(value) < 1e15:
        return int(value)
    return float(f"{value:.10g}")


def to_csv(rows: Sequence[Row], objectives: Sequence[Objective]) -> str:
    table = records(rows, objectives)
    columns: list[str] = []
    for entry in table:
        columns.extend(k for k in entry if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def to_json(rows: Sequence[Row], objectives: Sequence[Objective]) -> str:
    table = [  # JSON has no NaN: null
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in entry.items()}
        for entry in records(rows, objectives)
    ]
    return json.dumps(table, indent=2, default=str)


def to_table(rows: Sequence[Row], objectives: Sequence[Objective]) -> str:
    """An aligned text table: rank, trial, objectives, state, epochs, seconds, size, params."""
    shown = differing(rows)
    header = [
        "rank",
        "trial",
        *(o.metric for o in objectives),
        "state",
        "epochs",
        "seconds",
        "params",
        *(n.split(".")[-1] for n in shown),
    ]
    if any(r.metrics.get("latency_ms") is not None for r in rows) and not any(
        o.metric == "latency_ms" for o in objectives
    ):
        header.insert(header.index("params") + 1, "latency_ms")
    lines = [header]
    for r in rows:
        line = [
            str(r.rank),
            str(r.trial),
            *(_fmt(r.values.get(o.metric)) for o in objectives),
            r.state,
            _fmt(r.epochs),
            _fmt(r.seconds, ".1f"),
            _fmt(r.metrics.get("model_params"), ",.0f"),
        ]
        if "latency_ms" in header and not any(o.metric == "latency_ms" for o in objectives):
            line.append(_fmt(r.metrics.get("latency_ms"), ".2f"))
        line.extend(_fmt(r.params.get(n)) for n in shown)
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i < 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    if isinstance(value, int) and "f" in spec:
        return format(value, spec)
    return str(value)
