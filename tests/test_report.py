"""Leaderboard and HTML report of real sweeps, read back from MLflow and the Optuna storage."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from experiments.errors import UserInputError
from search.sweep import sweep
from tests.conftest import compose_config, run_cli


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """A real 3-trial Optuna sweep with its final stage and report (pruner off: all complete)."""
    out = tmp_path_factory.mktemp("sweep") / "runs"
    cfg = compose_config(["search.n_trials=3", "search.pruner=none", "final.register=false"], out)
    summary = sweep(cfg)
    return cfg, summary


def test_leaderboard_lists_trials_in_order_with_recorded_values(small_sweep) -> None:
    cfg, summary = small_sweep
    done = run_cli(
        "search.report", "--output-dir", cfg.output_dir, "--format", "json", "--top", "0"
    )
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)

    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    expected = sorted(study.trials, key=lambda t: (-t.value, t.number))
    assert [row["trial"] for row in board] == [t.number for t in expected]
    assert [row["rank"] for row in board] == [1, 2, 3]
    client = MlflowClient(cfg.tracking.tracking_uri)
    for row, trial in zip(board, expected, strict=True):
        assert row["val_accuracy"] == pytest.approx(trial.value)
        assert row["state"] == "complete"
        assert row["run_id"] == trial.user_attrs["mlflow_run_id"]
        run = client.get_run(row["run_id"])
        assert row["seconds"] == pytest.approx(run.data.metrics["train_seconds"])
        assert row["epochs"] == run.data.metrics["epochs"] == 2
        assert row["model_params"] == run.data.metrics["model_params"] > 0
        assert row["model_bytes"] == run.data.metrics["model_bytes"] > 0
        for name, value in trial.params.items():
            assert row[f"param.{name}"] == pytest.approx(value)

    # The terminal table: the same order, the differing parameters as columns; --top cuts it.
    table = run_cli(
        "search.report", summary.study_name, "--output-dir", cfg.output_dir, "--top", "2"
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["rank", "trial", "val_accuracy"]
    assert "learning_rate" in lines[1]
    ranked = [line.split() for line in lines[2:]]
    assert [(int(r[0]), int(r[1])) for r in ranked] == [
        (1, expected[0].number),
        (2, expected[1].number),
    ]
    assert float(ranked[0][2]) == pytest.approx(expected[0].value, abs=1e-4)

    # --sort by a column (ascending seconds), CSV for scripts, by parent run id.
    csv_out = run_cli(
        "search.report", summary.parent_run_id, "--output-dir", cfg.output_dir,
        "--sort", "seconds", "--format", "csv",
    )  # fmt: skip
    assert csv_out.returncode == 0, csv_out.stderr
    header, *rows = csv_out.stdout.splitlines()
    seconds = [float(r.split(",")[header.split(",").index("seconds")]) for r in rows]
    assert seconds == sorted(seconds) and len(seconds) == 3


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["--sort", "nothing"], "--sort 'nothing' is not a column"),
        (["--format", "xml"], "--format 'xml'"),
        (["no-such-study"], "no sweep 'no-such-study'"),
        # quotes in the name once broke MLflow's filter ("Invalid clause(s)"), a traceback
        (["x'y"], 'no sweep "x\'y"'),
        (["x'y\"z"], "no sweep 'x\\'y\"z'"),
    ],
)
def test_report_bad_input_is_one_paragraph_exit_2(small_sweep, args, mention) -> None:
    cfg, _ = small_sweep
    done = run_cli("search.report", "--output-dir", cfg.output_dir, *args)
    assert done.returncode == 2
    assert mention in done.stderr and "Traceback" not in done.stderr


def test_report_without_a_store_says_so(tmp_path) -> None:
    done = run_cli("search.report", "--output-dir", str(tmp_path / "none"))
    assert done.returncode == 2
    assert "there is no MLflow store" in done.stderr and "Traceback" not in done.stderr


def test_report_is_written_logged_and_self_contained(small_sweep, tmp_path) -> None:
    cfg, summary = small_sweep
    path = Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html"
    assert path.is_file()
    client = MlflowClient(cfg.tracking.tracking_uri)
    logged = [a.path for a in client.list_artifacts(summary.parent_run_id, "report")]
    assert logged == [f"report/{path.name}"]
    copy = Path(client.download_artifacts(summary.parent_run_id, f"report/{path.name}", tmp_path))
    assert copy.read_bytes() == path.read_bytes()

    text = path.read_text()
    # Offline: no script, stylesheet or image from anywhere else; plotly.js inlined once.
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"?https?:", text)
    assert text.count("plotly.js v") >= 1 and text.count("<script type='text/javascript'>") == 1
    # A section's title is written whether or not its figure is drawn ("not drawn: ..."), so
    # each section must hold its own plotly figure, with traces that carry data.
    for title in (
        "Optimization history",
        "Parameter importances",
        "Parallel coordinates",
        "Slice plots",
        "Validation curves of the top 3 trials (val_accuracy, from MLflow)",
        "Intermediate values (what the pruner saw)",
    ):
        traces = figure_traces(text, title)
        assert traces, f"{title}: a figure without traces"
        assert any(trace_has_data(t) for t in traces), f"{title}: no trace holds data"
    curves = figure_traces(
        text, "Validation curves of the top 3 trials (val_accuracy, from MLflow)"
    )
    assert len(curves) == 3  # one curve per trial
    assert "<h2>Pruned and failed trials</h2><p>none: every trial ran to its end.</p>" in text
    # 3 trials on 5 parameters deserve the expert warning.
    assert "<h2>Warnings</h2>" in text and "only 3 complete trials for 5 parameters" in text


def figure_traces(page: str, title: str) -> list[dict]:
    """The traces of the plotly figure in the report section `title` (fails when the section
    has no figure: a note instead, or another section's)."""
    start = page.index(f"<h2>{html.escape(title)}</h2>")
    end = page.find("<h2>", start + 1)
    section = page[start : end if end != -1 else len(page)]
    assert "<div class='plot'>" in section, f"{title}: not drawn ({section[:300]})"
    call = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", section)
    assert call is not None, f"{title}: no plotly figure"
    traces, _ = json.JSONDecoder().raw_decode(section, call.end())
    return traces


def trace_has_data(trace: dict) -> bool:
    """Whether a trace plots something: non-empty x / y values (plain or typed arrays), or
    parallel-coordinates dimensions."""

    def filled(value) -> bool:
        if isinstance(value, dict):  # plotly's typed array: {"dtype": ..., "bdata": ...}
            return bool(value.get("bdata"))
        return isinstance(value, list) and len(value) > 0

    if trace.get("dimensions"):
        return all(filled(d.get("values")) for d in trace["dimensions"])
    return filled(trace.get("x")) and filled(trace.get("y"))


def test_keras_tuner_sweep_gets_the_same_leaderboard_and_plots(tmp_path) -> None:
    """No Optuna study: the report rebuilds one from the MLflow records for Optuna's plots."""
    cfg = compose_config(
        ["search=keras_tuner", "search.tuner=random", "search.n_trials=3", "final.enabled=false",
         "tracking.log_models=false"],
        tmp_path / "runs",
    )  # fmt: skip
    summary = sweep(cfg)
    path = Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html"
    text = path.read_text()
    assert "<tr><th>engine</th><td>keras_tuner</td></tr>" in text
    for title in ("Optimization history", "Parameter importances", "Slice plots"):
        # drawn, not "not drawn: ..." (the slice plots: one a parameter, in a grid)
        assert re.search(rf"<h2>{title}</h2>(<div class='grid'>)?<div class='plot'>", text)

    done = run_cli("search.report", "--output-dir", cfg.output_dir, "--format", "json")
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    client = MlflowClient(cfg.tracking.tracking_uri)
    recorded = sorted(
        (client.get_run(row["run_id"]).data.metrics["final_val_accuracy"], row["trial"])
        for row in board
    )
    assert [r["trial"] for r in board] == [
        n for _, n in sorted(recorded, key=lambda x: (-x[0], x[1]))
    ]
    assert board[0]["val_accuracy"] == pytest.approx(summary.best_value)


def test_report_errors_mask_the_password_of_the_tracking_uri(monkeypatch, capsys) -> None:
    """The one entry point that printed its errors itself: a password in --tracking-uri (here
    in the error the store gives) reached the terminal."""
    import search.report as report

    uri = "postgresql://sweeper:hunter2@db.example:5432/mlflow"

    def refused(tracking_uri, experiment, which):
        raise UserInputError(f"no MLflow experiment {experiment!r} in {tracking_uri}")

    import search.config.stores as stores

    monkeypatch.setattr(report, "load_view", refused)
    monkeypatch.setattr(stores, "check_server", lambda key, url: None)  # the store answers
    with pytest.raises(SystemExit) as stopped:
        report.main(["--tracking-uri", uri])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "sweeplab: error: no MLflow experiment 'sweeplab' in postgresql://sweeper:***@" in err


def test_report_exits_130_on_ctrl_c(monkeypatch, capsys) -> None:
    import search.report as report

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "load_view", interrupted)
    with pytest.raises(SystemExit) as stopped:
        report.main(["--output-dir", "anywhere"])
    assert stopped.value.code == 130
    assert "Traceback" not in capsys.readouterr().err


def sweep_with_a_pruned_and_a_budget_stopped_trial(make_config, monkeypatch):
    """A real 3-trial sweep (2 epochs each) whose trial 1 the pruner stops and trial 2 the budget
    (search.timeout), both after epoch 1; returns (its config, its summary)."""
    import search.trials.budget as budget_module

    calls = {"prune": 0, "budget": 0}

    # Both are asked at every epoch's end but the last (never stopped: it completes), the
    # pruner first.
    def should_prune(self) -> bool:
        calls["prune"] += 1
        return calls["prune"] == 2  # trial 1, epoch 0 (2 epochs a trial)

    def stops_running_trial(self, next_epoch: float = 0.0) -> bool:
        calls["budget"] += 1
        return calls["budget"] == 2  # trial 2, epoch 0

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", should_prune)
    monkeypatch.setattr(budget_module.Budget, "stops_running_trial", stops_running_trial)
    cfg = make_config(
        "search.n_trials=3", "search.pruner=median", "final.enabled=false",
        "tracking.log_models=false",
    )  # fmt: skip
    return cfg, sweep(cfg)


def test_report_says_which_trials_the_pruner_stopped_and_which_search_timeout_stopped(
    make_config, monkeypatch
) -> None:
    """Trial 1 is stopped by the pruner, trial 2 by the budget (search.timeout): the MLflow runs
    say who (tag sweeplab.stopped_by) and so does the report; it used to blame the pruner for
    both ("by the none pruner" with search.pruner=none)."""
    cfg, summary = sweep_with_a_pruned_and_a_budget_stopped_trial(make_config, monkeypatch)
    client = MlflowClient(cfg.tracking.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment_name).experiment_id],
        "tags.`sweeplab.kind` = 'trial'",
    )
    tags = {int(r.data.tags["sweeplab.trial_number"]): r.data.tags for r in runs}
    assert [tags[n].get("sweeplab.stopped_by") for n in (0, 1, 2)] == [None, "pruner", "budget"]
    assert tags[2]["sweeplab.state"] == "pruned"

    text = (Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html").read_text()
    rows = {
        n: (state, why)
        for n, state, why in re.findall(
            r"<tr><td>(\d+)</td><td>([^<]*)</td><td>[^<]*</td><td class='reason'>([^<]*)<", text
        )
    }
    assert set(rows) == {"1", "2"}
    assert rows["1"][0] == "pruned"
    assert html.unescape(rows["1"][1]).startswith("pruned after epoch 1 of 2 by the median pruner")
    assert rows["2"][0] == "stopped by the budget"
    assert html.unescape(rows["2"][1]).startswith(
        "stopped by the budget (search.timeout) after epoch 1 of 2"
    )
    assert "pruner" not in rows["2"][1]


def test_csv_and_json_keep_every_row_and_print_numbers_as_people_write_them() -> None:
    """csv/json are every row unless --top is given (the table: the top 10, and it says how many
    trials there are); a whole float prints as an int, others without float noise."""
    from search.report import shown_rows
    from search.reporting.leaderboard import plain, to_csv, to_json
    from search.trials.objectives import Objective
    from search.trials.records import Row

    rows = [
        Row(n, "complete", {"val_accuracy": 0.9}, 2, 1.5, {"dropout": 0.35000000000000003},
            {"model_params": 51946.0, "model_bytes": 207784.0}, f"run{n}", n + 1)
        for n in range(12)
    ]  # fmt: skip
    assert len(shown_rows(rows, None, "csv")) == len(shown_rows(rows, None, "json")) == 12
    assert len(shown_rows(rows, None, "table")) == 10
    assert len(shown_rows(rows, 3, "csv")) == 3 and len(shown_rows(rows, 0, "table")) == 12
    objectives = [Objective("val_accuracy", "maximize")]
    text = to_csv(rows, objectives)
    assert len(text.splitlines()) == 13
    assert ",51946,207784," in text and ",0.35" in text
    assert "51946.0" not in text and "0.35000000000000003" not in text
    board = json.loads(to_json(rows, objectives))
    assert board[0]["model_params"] == 51946 and board[0]["param.dropout"] == 0.35
    assert plain(1 / 3) == 0.3333333333 and plain(float("nan")) != plain(float("nan"))
