"""A real browser on a real sweep: headless Chromium opens the HTML report and the MLflow UI.

Debian's `chromium` driven by Playwright for Python (`executable_path`; Playwright's own browser
download needs the internet). Without Chromium or Playwright these tests skip with the reason;
`SWEEPLAB_REQUIRE_BROWSER=1` (set by `.ci/run`) makes that a failure instead. Screenshots go to
`SWEEPLAB_SCREENSHOTS` when it names a folder (else the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from search.sweep import sweep
from tests.conftest import compose_config
from tests.servers import free_port, http_server
from tracking.run_tags import ml_view_url

CHROMIUM = os.environ.get("SWEEPLAB_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.slow  # a sweep, a browser and an MLflow server: about a minute


def chromium_or_skip() -> str:
    """The Chromium executable, or skip (fail under SWEEPLAB_REQUIRE_BROWSER=1) with the reason."""
    reason = None
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        reason = f"Chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("SWEEPLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; SWEEPLAB_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SWEEPLAB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def recorded_sweep(tmp_path_factory):
    chromium_or_skip()  # no sweep when the browser tests would skip anyway
    out = tmp_path_factory.mktemp("browser") / "runs"
    cfg = compose_config(
        [
            "search.n_trials=4",
            "search.pruner=none",
            "search.sampler=random",
            "train.objectives=[{metric:val_accuracy,direction:maximize},"
            "{metric:latency_ms,direction:minimize}]",
        ],
        out,
    )
    return cfg, sweep(cfg)


def test_report_opens_and_every_plot_renders(browser, recorded_sweep, tmp_path) -> None:
    cfg, summary = recorded_sweep
    report = Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html"
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    expected = report.read_text().count("<div class='plot'>")
    assert expected >= 7  # Pareto front, 2 x (history, importances, parallel, slice), curves
    plots = page.locator("div.plot .js-plotly-plot")
    plots.first.wait_for(timeout=30_000)
    assert plots.count() == expected
    for i in range(expected):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 200, i
        # Drawn: an SVG with marks in it (points, lines, bars or parallel-coordinate axes).
        marks = plot.locator("svg.main-svg path, svg.main-svg .point, svg.main-svg .bars")
        assert marks.count() > 3, f"plot {i} looks blank"
    assert errors == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in requests), requests
    # The champion on the Pareto plot: a labelled red star, not a near-white point.
    champion = page.evaluate(
        """() => document.querySelector('div.plot .js-plotly-plot').data
              .filter(t => (t.name || '').startsWith('champion'))
              .map(t => [t.name, t.marker.color, t.text[0]])"""
    )
    assert len(champion) == 1 and champion[0][1] == "#d62728", champion
    assert champion[0][2].startswith("champion: trial ")
    assert page.get_by_text(champion[0][2]).first.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots(tmp_path) / "report-top.png"))
    for i in (0, 2, expected - 1):  # Pareto front, an importance plot, the validation curves
        plots.nth(i).screenshot(path=str(shots(tmp_path) / f"report-plot-{i}.png"))
    page.close()


@pytest.fixture(scope="module")
def wide_sweep(tmp_path_factory):
    """One objective, nine parameters (Optuna's one-row slice plot: 2,700 px), curves reported
    every epoch (intermediate values), not registered."""
    chromium_or_skip()
    out = tmp_path_factory.mktemp("wide") / "runs"
    cfg = compose_config(
        [
            "search.n_trials=4", "search.pruner=none", "search.sampler=random",
            "+space.model.kernel_size={type:categorical,choices:[3,5]}",
            "+space.model.batch_norm={type:categorical,choices:[true,false]}",
            "+space.model.filter_growth={type:categorical,choices:[1,2]}",
            "+space.train.batch_size={type:categorical,choices:[32,64]}",
            "final.register=false",
        ],
        out,
    )  # fmt: skip
    return cfg, sweep(cfg)


def test_the_report_fits_a_1280_px_window_with_one_colour_per_trial(
    browser, wide_sweep, tmp_path
) -> None:
    """No page wider than the window (slice plots in a grid, the leaderboard scrolls in its own
    box), sizes as people write them, each trial one colour in every figure, a legend on the
    intermediate values, every MLflow link in the machine-learning view."""
    cfg, summary = wide_sweep
    report = Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    page.locator("div.plot .js-plotly-plot").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # plotly's responsive resize
    metrics = page.evaluate(
        """() => ({scroll: document.documentElement.scrollWidth, window: window.innerWidth,
                   widest: Math.max(...[...document.querySelectorAll('body *')]
                       .filter(e => !e.closest('.scroll'))
                       .map(e => e.getBoundingClientRect().right))})"""
    )
    assert metrics["scroll"] <= metrics["window"] == 1280, metrics
    assert metrics["widest"] <= 1280, metrics
    # The shipped-model card at the top: what shipped, its validation figure, test with its CI.
    card = page.locator("pre.card")
    assert card.is_visible() and card.bounding_box()["y"] < 200
    assert "95% CI" in card.inner_text() and "Validation: val_accuracy" in card.inner_text()
    slices = page.locator(".grid .plot .js-plotly-plot")
    assert slices.count() == 9  # one per parameter, wrapped into rows
    tops = {round(slices.nth(i).bounding_box()["y"]) for i in range(9)}
    assert len(tops) >= 3  # at most 3-4 a row in 1,280 px
    board = page.locator(".scroll table.board")
    box = page.locator(".scroll").first.bounding_box()
    assert box and box["x"] + box["width"] <= 1280
    text = board.inner_text()
    assert "e+0" not in text and "KB" in text  # model_bytes as a size, parameters as 12,345
    # One colour per trial across figures; the intermediate values have a legend.
    colours = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd =>
              gd.data.filter(t => /^trial \\d+/.test(t.name || ''))
                .map(t => [t.name.match(/^trial (\\d+)/)[1], (t.line || {}).color,
                           gd.layout.showlegend]))"""
    )
    # ... and each point of the slice plots and the history, labelled "trial N".
    points = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd =>
              gd.data.filter(t => Array.isArray(t.text) && Array.isArray((t.marker || {}).color))
                .flatMap(t => t.text.map((label, i) => [label.replace('trial ', ''),
                                                        t.marker.color[i]])))"""
    )
    assert len(points) >= 9 * 4 + 4, points  # 9 slice plots of 4 trials, the history's 4
    by_trial: dict[str, set] = {}
    for trial, colour, _ in colours:
        by_trial.setdefault(trial, set()).add(colour)
    for trial, colour in points:
        by_trial.setdefault(trial, set()).add(colour)
    assert by_trial and all(len(c) == 1 and None not in c for c in by_trial.values()), by_trial
    drawn = [trial for trial, *_ in colours]
    assert all(drawn.count(t) >= 2 for t in by_trial)  # the curves and the intermediate values
    assert sum(1 for *_, legend in colours if legend) == len(by_trial) == 4  # with its legend
    # Epochs from 1 in both figures that draw them (the trial lines' count), not Optuna's step.
    firsts = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd =>
              gd.data.filter(t => /^trial \\d+/.test(t.name || '')).map(t => t.x[0]))"""
    )
    assert firsts and set(firsts) == {1}, firsts
    links = page.eval_on_selector_all("a[href*='#/']", "els => els.map(e => e.href)")
    assert links and all("workflowType=machine_learning" in link for link in links), links
    assert any("#/compare-runs" in link for link in links)
    page.screenshot(path=str(shots(tmp_path) / "report-1280.png"), full_page=True)
    page.close()


def test_the_report_names_each_trial_state_as_the_terminal_does(
    browser, make_config, monkeypatch, capsys, tmp_path
) -> None:
    """Trial 1 pruned, trial 2 stopped by the budget: the report a person opens says so in the
    terminal's words (epochs from 1), and never blames the pruner for the budget's stop."""
    chromium_or_skip()
    from tests.test_report import sweep_with_a_pruned_and_a_budget_stopped_trial

    cfg, summary = sweep_with_a_pruned_and_a_budget_stopped_trial(make_config, monkeypatch)
    out = capsys.readouterr().out
    assert "trial   1  pruned after epoch 1 of 2 " in out
    assert "trial   2  stopped by the budget (search.timeout) after epoch 1 of 2 " in out
    report = Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    facts = page.locator("table.facts").inner_text()
    assert "1 complete, 1 pruned, 1 stopped by the budget" in facts
    stopped = page.locator("h2:has-text('Pruned and failed trials') + table")
    stopped.scroll_into_view_if_needed()
    rows = [r.split("\t") for r in stopped.inner_text().splitlines()[1:]]
    assert [r[:2] for r in rows] == [["1", "pruned"], ["2", "stopped by the budget"]]
    assert rows[0][3].startswith("pruned after epoch 1 of 2 by the median pruner")
    assert rows[1][3].startswith("stopped by the budget (search.timeout) after epoch 1 of 2")
    assert "pruner" not in rows[1][3]
    board = page.locator("table.board").first.inner_text()
    assert "stopped by the budget" in board and "pruned" in board
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    stopped.screenshot(path=str(shots(tmp_path) / "report-trial-states.png"))
    page.close()

    # The MLflow run page of the budget-stopped trial says the same: name, description, status.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment_name).experiment_id],
        "tags.`sweeplab.trial_number` = '2'",
    )
    with mlflow_ui(Path(cfg.output_dir), free_port(), tmp_path / "ui.log") as ui:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(ml_view_url(ui, run.info.experiment_id, run.info.run_id))
        page.get_by_text("trial-2 (stopped by the budget)").first.wait_for(timeout=60_000)
        page.get_by_text(
            "Stopped by the budget (search.timeout) after epoch 1 of 2"
        ).first.wait_for(timeout=30_000)
        assert "Killed" in page.inner_text("body")  # not a green Finished
        page.screenshot(path=str(shots(tmp_path) / "mlflow-budget-stopped-run.png"))
        page.close()


def mlflow_ui(output_dir: Path, port: int, log: Path):
    """`make ui`'s command over the sweep's store, as a context manager yielding its URI."""
    args = ["mlflow", "ui", "--backend-store-uri", f"sqlite:///{output_dir}/mlflow.db"]
    args += ["--default-artifact-root", str(output_dir / "mlartifacts")]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return http_server(args, port, log, env)


def test_mlflow_ui_opens_at_the_sweeps_parent_run(browser, recorded_sweep, tmp_path) -> None:
    cfg, summary = recorded_sweep
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(cfg.tracking.tracking_uri).get_run(summary.parent_run_id)
    with mlflow_ui(Path(cfg.output_dir), free_port(), tmp_path / "ui.log") as ui:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(ml_view_url(ui, parent.info.experiment_id, parent.info.run_id))
        page.get_by_text(parent.info.run_name).first.wait_for(timeout=60_000)
        # The machine-learning view (Model registry in the sidebar); the parent run lists the
        # best trial's parameters as its own, with user, source and a description.
        page.get_by_text("Model registry").first.wait_for(timeout=30_000)
        params = page.get_by_text(f"Parameters ({len(summary.best_params)})")
        params.wait_for(timeout=30_000)
        body = page.inner_text("body")
        assert "python -m" in body or "__main__" in body  # the source, not empty
        assert f"report/{summary.study_name}.html" in body  # the description names the report
        # ... after the shipped-model card: what shipped, test accuracy with its 95% interval.
        assert "Shipped: the " in body and "95% CI" in body
        assert "trial-0" in body and "Created by" in body
        page.screenshot(path=str(shots(tmp_path) / "mlflow-parent-run.png"))
        params.scroll_into_view_if_needed()
        page.get_by_text("model.dense_units", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots(tmp_path) / "mlflow-parent-params.png"))
        page.goto(ml_view_url(ui, parent.info.experiment_id))
        page.get_by_text(parent.info.run_name).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots(tmp_path) / "mlflow-runs.png"))
        assert errors == []
        page.close()
