"""The self-contained HTML report of a sweep: what it learned and which model to ship.

One file that opens offline: plotly.js is inlined once in the page head (no script from the
internet), then every figure is a plotly div. The study plots and importances are Optuna's own
(`search.reporting.figures`); the validation curves of the top trials come from the MLflow
metric history; the leaderboard, the pruned / failed trials and the warnings are built here from
the engine-neutral `SweepView`.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.outcome import BUDGET_STOPPED, STOPPED_EARLY
from search.final.champion_rule import choose, effective_rule
from search.reporting.advice import warnings_for
from search.reporting.leaderboard import rank, records
from search.trials.records import Row, SweepView
from tracking.run_tags import ml_compare_url, ml_view_url
from tracking.sweep_records import metric_curves

TOP_CURVES = 5
TOP_ROWS = 15
UI = "http://127.0.0.1:5000"  # where `make ui` serves the store (its default PORT)
# One colour per trial, the same in every figure that draws trials as their own traces.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
CHAMPION = "#d62728"
BYTES = ("model_bytes", "size")  # columns in bytes: printed as human sizes


def colour_of(trial: int) -> str:
    """The colour of trial `trial` in every figure of the report."""
    return PALETTE[trial % len(PALETTE)]


@dataclass
class Report:
    """What the report found, for the caller (and tests) besides the HTML text."""

    html: str
    warnings: list[str]
    pareto: list[int]  # trial numbers on the Pareto front (several objectives)
    figures: list[str]  # titles of the figures drawn
    seconds: float = 0.0


def study_for(view: SweepView) -> Any:
    """The Optuna study: loaded from storage for an Optuna sweep, rebuilt from MLflow otherwise."""
    from search.reporting import figures as optuna_report

    if view.engine == "optuna":
        study = view.engine_record or optuna_report.load_study(
            str(view.cfg.search.storage), view.ref.study
        )
        if study is not None:
            return study
    return optuna_report.study_from_rows(view.rows, view.space, view.objectives)


def build(view: SweepView, tracking_uri: str) -> Report:
    """The report of `view`; reads curves from the MLflow store at `tracking_uri`."""
    from plotly.offline import get_plotlyjs

    from search.reporting import figures as optuna_report

    started = time.perf_counter()
    study = study_for(view)
    multi = len(view.objectives) > 1
    drawn = optuna_report.figures(study, view.objectives)
    ranked = rank(list(view.rows), view.objectives)
    rule = effective_rule(view.cfg)
    best = choose(ranked, rule, view.objectives) if rule else _first_complete(ranked)
    importances = optuna_report.importances(study, 0, multi)
    warnings = warnings_for(best, ranked, view.space, importances)
    pareto = optuna_report.pareto_numbers(study) if multi else []
    curves = _curves_figure(view, ranked, tracking_uri)
    for title, figure, _ in drawn:
        if title == "Pareto front" and figure is not None and best is not None:
            _mark_champion(figure, best, view)
        if title.startswith("Intermediate values") and figure is not None:
            _trial_colours(figure, study)
        if title.startswith(("Slice plots", "Optimization history")) and figure is not None:
            for each in figure if isinstance(figure, list) else [figure]:
                _point_colours(each, study)
    sections = [
        _header(view, best, rule.describe() if rule else None, pareto),
        _warnings_html(warnings),
        _leaderboard_html(view, ranked[:TOP_ROWS], pareto),
    ]
    for title, figure, note in [*drawn, curves]:
        sections.append(_figure_html(title, figure, note))
    sections.append(_stopped_html(view))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>sweep {html.escape(view.ref.study)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
    titles = [t for t, f, _ in [*drawn, curves] if f is not None]
    return Report(page, warnings, pareto, titles, time.perf_counter() - started)


def write(view: SweepView, tracking_uri: str, path: Path) -> Report:
    """Build the report and write it to `path`."""
    report = build(view, tracking_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.html, encoding="utf-8")
    return report


def _mark_champion(figure: Any, best: Row, view: SweepView) -> None:
    """The champion on the Pareto plot: a labelled red star (Optuna draws the front in a blue
    scale by trial number, the first trial almost white)."""
    import plotly.graph_objects as go

    if len(view.objectives) != 2:
        return  # a 3-D front: Optuna's own marks only
    x, y = (best.values.get(o.metric) for o in view.objectives)
    if x is None or y is None:
        return
    figure.add_trace(
        go.Scatter(
            x=[x],
            y=[y],
            mode="markers+text",
            text=[f"champion: trial {best.trial}"],
            textposition="top center",
            marker={"symbol": "star", "size": 18, "color": CHAMPION, "line": {"width": 1}},
            name=f"champion (trial {best.trial})",
            showlegend=True,
        )
    )
    for trace in figure.data[:-1]:  # an outline: the scale's palest points stay visible
        trace.update(marker={"line": {"width": 1, "color": "#555"}})
    figure.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.18})


def _trial_colours(figure: Any, study: Any) -> None:
    """Optuna's intermediate-values plot with a legend, each trial in its report colour."""
    numbers = {t.number: int(t.user_attrs.get("trial", t.number)) for t in study.trials}
    for trace in figure.data:
        name = str(trace.name or "")
        digits = name.removeprefix("Trial").strip()
        if not digits.isdigit():
            continue
        trial = numbers.get(int(digits), int(digits))
        colour = colour_of(trial)
        trace.update(name=f"trial {trial}", showlegend=True, line={"color": colour})
        trace.update(marker={"color": colour})
        if trace.x is not None:  # Optuna's step is the 0-based epoch: counted from 1 here
            trace.update(x=[x + 1 for x in trace.x])
    figure.update_layout(showlegend=True, legend_title_text="trial", xaxis_title="epoch (from 1)")


def _point_colours(figure: Any, study: Any) -> None:
    """Each trial's point in its report colour (not a blue scale by trial number), labelled
    "trial N": the slice plots' points (coloured by trial number) and the history's values."""
    numbers = {t.number: int(t.user_attrs.get("trial", t.number)) for t in study.trials}
    for trace in figure.data:
        if trace.type != "scatter" or "markers" not in str(trace.mode or ""):
            continue
        marker = trace.marker
        if trace.name == "Feasible Trial" and marker.color is not None:  # a slice plot
            trials = [numbers.get(int(n), int(n)) for n in marker.color]
            trace.update(marker={"colorscale": None, "showscale": False, "colorbar": None})
        elif (
            trace.name not in ("Infeasible Trial",) and trace.x is not None and not trace.line.dash
        ):
            if str(trace.mode) != "markers":  # the history's best-value line
                continue
            trials = [numbers.get(int(n), int(n)) for n in trace.x]
        else:
            continue
        trace.update(
            marker={"color": [colour_of(t) for t in trials]},
            text=[f"trial {t}" for t in trials],
        )


def _first_complete(ranked: list[Row]) -> Row | None:
    return next((r for r in ranked if r.state == "complete"), None)


def _curves_figure(view: SweepView, ranked: list[Row], tracking_uri: str) -> tuple[str, Any, str]:
    import plotly.graph_objects as go

    metric = next((o.metric for o in view.objectives if o.metric.startswith("val_")), "val_loss")
    top = [r for r in ranked if r.state in ("complete", *STOPPED_EARLY)][:TOP_CURVES]
    title = f"Validation curves of the top {len(top)} trials ({metric}, from MLflow)"
    if not top:
        return title, None, "not drawn: no trial reached the end of an epoch"
    histories = metric_curves(tracking_uri, [r.run_id for r in top], metric)
    figure = go.Figure()
    for r in top:
        values = histories.get(r.run_id, [])
        figure.add_trace(
            go.Scatter(
                x=list(range(1, len(values) + 1)),  # epochs counted from 1, as trial lines
                y=values,
                mode="lines+markers",
                name=f"trial {r.trial} (rank {r.rank}, {r.state})",
                line={"color": colour_of(r.trial)},
                marker={"color": colour_of(r.trial)},
            )
        )
    figure.update_layout(title=title, xaxis_title="epoch (from 1)", yaxis_title=metric)
    return title, figure, ""


def _header(view: SweepView, best: Row | None, rule: str | None, pareto: list[int]) -> str:
    counts: dict[str, int] = {}
    for r in view.rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in view.objectives)
    card = view.ref.tags.get("sweeplab.final.card")
    lines = [
        f"<h1>Sweep {html.escape(view.ref.study)}</h1>",
        f"<pre class='card'>{html.escape(card)}</pre>" if card else "",
        "<table class='facts'>",
        _fact("engine", view.engine),
        _fact("objectives", objectives),
        _fact("trials", states),
        _fact("parent run", view.ref.run_id),
    ]
    if rule:
        lines.append(_fact("champion rule", rule))
    if best is not None:
        values = ", ".join(f"{k}={_num(v)}" for k, v in best.values.items())
        params = ", ".join(f"{k}={_num(v)}" for k, v in best.params.items())
        lines.append(_fact("best trial", f"#{best.trial}: {values}; {params}"))
    if pareto:
        lines.append(_fact("Pareto front", ", ".join(f"#{n}" for n in pareto)))
    shipped = _shipped(view.ref.tags, view.ref.metrics)
    if shipped:
        lines.append(_fact("shipped model", shipped))
    why = view.ref.tags.get("sweeplab.final.shipped_why")
    if why:
        lines.append(_fact("why it shipped", why))
    lines.append("</table>")
    lines.append(_exports_html(view.ref.tags.get("sweeplab.final.exports")))
    return "\n".join(lines)


EXPORT_COLUMNS = ("format", "accuracy", "size", "ms_per_image", "size_ratio", "accuracy_delta")


def _exports_html(measured: str | None) -> str:
    """The exports as measured from their own files on the test split (final.export): what a
    user deploys, how accurate, large and fast it is; empty without exports."""
    if not measured:
        return ""
    import json

    rows = json.loads(measured)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in EXPORT_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_num(r.get(c), c))}</td>" for c in EXPORT_COLUMNS)
        + "</tr>"
        for r in rows
    )
    return (
        "<h2>Exports, measured from each file on the test split</h2>"
        f"<div class='scroll'><table class='exports'><tr>{head}</tr>{body}</table></div>"
        "<p>ms_per_image: median of single-image calls at batch 1 on this machine; size_ratio "
        "and accuracy_delta against the float32 TFLite file.</p>"
    )


def _shipped(tags: dict[str, str], metrics: dict[str, float]) -> str:
    """What the final stage tested and registered: its source (the members of an ensemble) and
    its test accuracy; empty when the final stage did not run."""
    source = tags.get("sweeplab.final.source")
    if not source:
        return ""
    what = source.replace("_", " ")
    members = tags.get("sweeplab.final.ensemble_members")
    if members:
        what = f"the average of {len(members.split('; '))} models: {members}"
    accuracy = metrics.get("test_accuracy")
    return what + ("" if accuracy is None else f"; test accuracy {accuracy:.4f}")


def _fact(name: str, value: str) -> str:
    return f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return "<h2>Warnings</h2><p>none: the sweep looks well set up.</p>"
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<h2>Warnings</h2><ul class='warnings'>{items}</ul>"


def _leaderboard_html(view: SweepView, rows: list, pareto: list[int]) -> str:
    table = records(rows, view.objectives)
    if not table:
        return "<h2>Leaderboard</h2><p>no trials recorded.</p>"
    columns = [c for c in table[0] if c != "run_id"]
    for entry in table[1:]:
        columns.extend(c for c in entry if c not in columns and c != "run_id")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    experiment = view.ref.experiment_id
    body = []
    for entry in table:
        mark = " class='pareto'" if entry["trial"] in pareto else ""
        cells = []
        for c in columns:
            text = html.escape(_num(entry.get(c), c))
            if c == "trial" and entry.get("run_id"):  # the trial's run, in the ML view
                link = html.escape(ml_view_url(UI, experiment, entry["run_id"]))
                text = f"<a href='{link}' title='its MLflow run (make ui)'>{text}</a>"
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr{mark}>{''.join(cells)}</tr>")
    note = " (Pareto-optimal trials highlighted)" if pareto else ""
    runs = [str(e["run_id"]) for e in table if e.get("run_id")]
    compare = html.escape(ml_compare_url(UI, experiment, runs))
    return (
        f"<h2>Leaderboard: top {len(rows)}{note}</h2>"
        f"<p>Trial numbers link to their MLflow runs; <a href='{compare}'>compare these trials "
        "in MLflow</a> (served by <code>make ui</code>).</p>"
        f"<div class='scroll'><table class='board'><tr>{head}</tr>{''.join(body)}</table></div>"
    )


def _figure_html(title: str, figure: Any, note: str) -> str:
    if figure is None:
        return f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(note)}</p>"
    if isinstance(figure, list):  # one small plot per parameter, in a grid that wraps
        divs = "".join(f"<div class='plot'>{_plot_div(f, '320px')}</div>" for f in figure)
        return f"<h2>{html.escape(title)}</h2><div class='grid'>{divs}</div>"
    return f"<h2>{html.escape(title)}</h2><div class='plot'>{_plot_div(figure, '460px')}</div>"


def _plot_div(figure: Any, height: str) -> str:
    """A figure as wide as its box (never a fixed width wider than the window)."""
    figure.update_layout(width=None, autosize=True)
    return str(
        figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            default_height=height,
            default_width="100%",
            config={"responsive": True},
        )
    )


def _stopped_html(view: SweepView) -> str:
    stopped = [r for r in view.records if r.state not in ("complete",)]
    if not stopped:
        return "<h2>Pruned and failed trials</h2><p>none: every trial ran to its end.</p>"
    pruner = str(view.cfg.search.get("pruner") or "")
    rows = []
    for r in stopped:
        why = _pruned_why(r.tags, pruner) if r.state in STOPPED_EARLY else r.reason or r.state
        rows.append(
            f"<tr><td>{r.number}</td><td>{html.escape(r.state)}</td>"
            f"<td>{_num(r.epochs)}</td><td class='reason'>{html.escape(why)}</td></tr>"
        )
    return (
        "<h2>Pruned and failed trials</h2><table class='board'><tr><th>trial</th><th>state</th>"
        f"<th>epochs</th><th>why</th></tr>{''.join(rows)}</table>"
    )


def _pruned_why(tags: dict[str, str], pruner: str) -> str:
    """Why a trial stopped early, from its tag sweeplab.stopped_by (written by the runner), in
    the terminal line's words: epochs counted from 1."""
    trained = tags.get("sweeplab.epochs_trained", "?")
    planned = tags.get("sweeplab.epochs_planned")
    of = f" of {planned}" if planned else ""
    stopped_by = tags.get("sweeplab.stopped_by")
    if stopped_by == "budget":
        return (
            f"{BUDGET_STOPPED} (search.timeout) after epoch {trained}{of}: the time left was "
            "the final stage's"
        )
    if stopped_by == "pruner" or (stopped_by is None and pruner not in ("", "none")):
        return f"pruned after epoch {trained}{of} by the {pruner} pruner: its curve was below the others"
    return f"stopped after epoch {trained}{of} (recorded before sweeplab said by what)"


def _num(value: Any, column: str = "") -> str:
    """A number as a person reads it: `51,946` parameters, `203 KB`, `0.963`; never `5.195e+04`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in BYTES and isinstance(value, int | float):
        return human_bytes(float(value))
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def human_bytes(size: float) -> str:
    """`207784` -> `203 KB` (1 KB = 1,024 bytes)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" or size >= 100 else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} GB"


STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.facts th { background: #f3f3f3; }
.board tr.pareto { background: #e8f4e8; }
.warnings li { color: #8a4b00; margin: 4px 0; }
.note { color: #777; font-style: italic; }
.reason { max-width: 700px; white-space: pre-wrap; }
/* Fits a 1,280-px window: wide tables scroll in their own box, plots take the page's width,
   the per-parameter slice plots wrap into a grid. */
body { max-width: 1400px; }
.scroll { max-width: 100%; overflow-x: auto; }
.plot { max-width: 100%; overflow: hidden; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 8px; }
.facts td { overflow-wrap: anywhere; }
.card { background: #f4f8f4; border: 1px solid #9c9; padding: 8px 12px; white-space: pre-wrap; }
"""
