"""Multi-objective sweeps: a Pareto front no trial dominates, a champion chosen by a config rule."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.final.champion_rule import Rule, choose
from search.sweep import sweep
from search.trials.objectives import Objective
from search.trials.records import Row
from tests.conftest import compose_config, run_cli

TWO_OBJECTIVES = (
    "train.objectives=[{metric:val_accuracy,direction:maximize},"
    "{metric:model_params,direction:minimize}]"
)
# The smallest model that still learns something (chance is 0.1 on ten digits).
RULE = "final.select={minimize:model_params,where:{val_accuracy:{min:0.15}}}"


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    """a is at least as good as b everywhere and strictly better somewhere."""
    better = [x >= y if up else x <= y for x, y, up in zip(a, b, maximize, strict=True)]
    strictly = [x > y if up else x < y for x, y, up in zip(a, b, maximize, strict=True)]
    return all(better) and any(strictly)


@pytest.fixture(scope="module")
def pareto_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("pareto") / "runs"
    cfg = compose_config(["search.n_trials=5", "search.sampler=random", TWO_OBJECTIVES, RULE], out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = sweep(cfg)
    TERMINAL["pareto"] = printed.getvalue()
    return cfg, summary


TERMINAL: dict[str, str] = {}  # what a fixture's sweep printed


def test_the_terminal_shows_every_objective_the_front_and_the_choice(pareto_sweep) -> None:
    """Not a single-objective sweep's lines: the header names both objectives, each trial line
    shows both values (no "best so far"), and the end prints the Pareto front and the choice."""
    cfg, summary = pareto_sweep
    out = TERMINAL["pareto"]
    assert "objectives val_accuracy (maximize), model_params (minimize)" in out
    lines = [line for line in out.splitlines() if re.match(r"trial +\d+  ", line)]
    assert len(lines) == 5
    for line in lines:
        assert re.search(r"val_accuracy=\d\.\d{4} model_params=\d+ ", line), line
        assert " best " not in line
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    front = sorted(t.number for t in study.best_trials)
    assert f"Pareto front (val_accuracy maximize, model_params minimize): {len(front)} of 5" in out
    shown = re.findall(r"^  trial +(\d+)  val_accuracy=", out, re.MULTILINE)
    assert sorted(int(n) for n in shown) == front
    chosen = next(t for t in study.trials if t.user_attrs["mlflow_run_id"] == summary.best_run_id)
    assert re.search(
        rf"champion by the rule \(.*model_params.*\): trial {chosen.number}  val_accuracy=", out
    )
    assert "best val_accuracy = " not in out


def test_two_objectives_give_a_pareto_front_no_trial_dominates(pareto_sweep) -> None:
    cfg, summary = pareto_sweep
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    assert study.metric_names == ["val_accuracy", "model_params"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    # search.pruner=median (the default) was switched off: no trial reported to a pruner.
    assert all(not t.intermediate_values for t in complete)
    # The values Optuna optimized are the ones MLflow recorded for each trial.
    client = MlflowClient(cfg.tracking.tracking_uri)
    for t in complete:
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert t.values == [
            pytest.approx(metrics["final_val_accuracy"]),
            metrics["model_params"],
        ]

    # The report's front (read from its HTML) and the study's: no complete trial dominates a
    # point on it, and every trial off it is dominated by one on it.
    text = (Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html").read_text()
    front = sorted(t.number for t in study.best_trials)
    assert "Pareto front" in text and ", ".join(f"#{n}" for n in front) in text
    up = [True, False]
    for t in complete:
        dominated = any(dominates(o.values, t.values, up) for o in complete if o is not t)
        assert dominated == (t.number not in front), (t.number, t.values)


def test_champion_rule_picks_the_expected_trial(pareto_sweep) -> None:
    cfg, summary = pareto_sweep
    client = MlflowClient(cfg.tracking.tracking_uri)
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    trials = []
    for t in study.trials:
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        trials.append((metrics["model_params"], t.number, metrics["final_val_accuracy"], t))
    eligible = sorted((p, -acc, n, t) for p, n, acc, t in trials if acc >= 0.15)
    assert eligible, "no trial learned above chance: the rule has nothing to pick"
    expected = eligible[0][3]
    assert summary.best_run_id == expected.user_attrs["mlflow_run_id"]
    assert summary.best_params == expected.params
    # The champion is what the final stage tested and registered.
    name = summary.final.registered_uri.removeprefix("models:/").removesuffix("@champion")
    version = client.get_model_version_by_alias(name, "champion")
    assert version.tags["sweeplab.best_run_id"] == summary.best_run_id
    # Its description is the shipped-model card (what shipped, how its validation figure was
    # computed, test accuracy with a 95% Wilson interval), and the study; the same card is on the
    # parent run and at the top of the report.
    description = version.description
    assert description.startswith("Shipped: the ")
    assert "\nValidation: val_accuracy " in description
    assert re.search(
        r"\nTest: accuracy \d\.\d{4} on \d+ images, 95% CI [\d.]+-[\d.]+ \(Wilson\)", description
    )
    assert summary.study_name in description
    parent = client.get_run(summary.parent_run_id)
    card = parent.data.tags["sweeplab.final.card"]
    assert description.startswith(card)
    assert parent.data.tags["mlflow.note.content"].startswith(card + "\n\nSweep of study ")
    report = (Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html").read_text()
    assert "<pre class='card'>Shipped: the " in report


def row(trial: int, acc: float, latency: float, state: str = "complete") -> Row:
    return Row(trial, state, {"val_accuracy": acc}, 2, 1.0, {}, {"latency_ms": latency})


def test_rule_takes_the_most_accurate_under_the_limit() -> None:
    rows = [row(0, 0.99, 9.0), row(1, 0.95, 4.0), row(2, 0.97, 4.9), row(3, 0.999, 1.0, "pruned")]
    objectives = [Objective("val_accuracy", "maximize")]
    rule = Rule(Objective("val_accuracy", "maximize"), {"latency_ms": (None, 5.0)})
    assert choose(rows, rule, objectives).trial == 2  # 0 is too slow, 3 did not finish
    assert choose(rows, Rule(Objective("val_accuracy", "maximize")), objectives).trial == 0
    none = Rule(Objective("val_accuracy", "maximize"), {"latency_ms": (None, 0.5)})
    assert choose(rows, none, objectives) is None
    assert math.isfinite(rows[1].values["val_accuracy"])


@pytest.mark.parametrize(
    ("overrides", "mention"),
    [
        (["search=keras_tuner", TWO_OBJECTIVES], "search.engine=keras_tuner optimizes a single"),
        (["train.objectives=[{metric:speed,direction:minimize}]"], "'speed' is not measured"),
        (["final.select={maximize:val_accuracy,where:{latency_ms:5}}"], "where.latency_ms=5"),
        (["final.select={best:val_accuracy}"], "exactly one of maximize or minimize"),
    ],
)
def test_bad_objectives_are_refused_before_anything_runs(tmp_path, overrides, mention) -> None:
    done = run_cli("search.run", f"output_dir={tmp_path / 'runs'}", *overrides, timeout=120)
    assert done.returncode == 2, done.stderr
    assert mention in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing recorded, nothing left RUNNING


def test_pruning_with_two_objectives_is_switched_off_and_said(tmp_path) -> None:
    """The default pruner (median) meets two objectives: the sweep says pruning is off."""
    from search.trials.objectives import pruning_note

    cfg = compose_config([TWO_OBJECTIVES], tmp_path)
    note = pruning_note(cfg)
    assert note and "search.pruner=median is off" in note
    assert pruning_note(compose_config([TWO_OBJECTIVES, "search.pruner=none"], tmp_path)) is None
    assert pruning_note(compose_config([], tmp_path)) is None


def test_the_readme_rule_is_valid(tmp_path) -> None:
    """The README's command: two objectives and a latency-limited champion rule pass the checks."""
    import re

    from search.checks import check_config
    from search.final.champion_rule import rule_of
    from search.trials.objectives import measured_costs
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    overrides = re.findall(r"'((?:train\.objectives|final\.select)=[^']+)'", readme)
    assert len(overrides) == 2
    cfg = compose_config(["search.pruner=none", *overrides], tmp_path)
    check_config(cfg, models=False)
    rule = rule_of(cfg)
    assert rule.describe() == "maximize val_accuracy where latency_ms <= 5"
    assert "latency_ms" in measured_costs(cfg)
