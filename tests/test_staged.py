"""The staged search (`search.staged`, search/engines/optuna/staged.py) on real tiny transfer
sweeps (MobileNet 0.25 with its ImageNet weights, the embedded digits photos): the screen trains
head configurations on cached features in its own study, the main study's next trials carry its
best heads, and a kill -9 in either stage resumes without training a finished trial twice."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState
from transfer_helpers import NO_AUGMENTATION, make_keras_home, transfer_config

from experiments.errors import UserInputError
from search.checks import check_config
from search.config.study import study_name
from search.engines.optuna.staged import CARRIED, ScreenBudget, fixed_by_screen, screen_trials
from search.engines.staging import staged_note
from search.sweep import prepare, sweep
from search.trials import preflight
from search.trials.budget import Budget
from search.trials.types import Best
from tests.conftest import ROOT, run_cli

# Trial 0, then the screen's 4 head configurations (2 phase-1 epochs each), then 2 two-phase
# trials, one per carried head; no variant, so trial 1 is the first carried head.
STAGED = (
    "search.n_trials=3",
    "search.variants=[]",
    "search.staged.trials=4",
    "search.staged.carry=2",
    "search.staged.epochs=2",
    "train.epochs=3",
    "model.fine_tune.head_epochs=2",
    "final.top_k=0",
)


def screen_runs(cfg, screen: str) -> list:
    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    query = f"tags.`sweeplab.study` = '{screen}'"
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


@pytest.mark.slow  # a transfer sweep of 7 trials and its final stage: minutes on 2 busy cores
def test_screen_runs_and_the_main_study_carries_its_best_heads(
    tmp_path, monkeypatch, capsys
) -> None:
    home = make_keras_home(tmp_path, monkeypatch)
    cfg = transfer_config(tmp_path, *STAGED, f"keras_home={home}", "search.workers=0")
    summary = sweep(cfg)
    out = capsys.readouterr().out
    name = summary.study_name
    assert f"search.staged: screen stage, study '{name}-screen'" in out
    screen = optuna.load_study(study_name=f"{name}-screen", storage=cfg.search.storage)
    finished = [t for t in screen.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    # The screen samples the head's knobs only; its trial 0 is the base config's head.
    assert all(not fixed_by_screen(k) for t in screen.trials for k in t.params)
    assert screen.trials[0].params["optimizer.learning_rate"] == cfg.optimizer.learning_rate
    best = sorted(
        (t for t in screen.trials if t.state == TrialState.COMPLETE),
        key=lambda t: (-t.value, t.number),
    )[:2]
    main = optuna.load_study(study_name=name, storage=cfg.search.storage)
    assert main.user_attrs[CARRIED] == [t.number for t in best]
    carried = main.trials[1 : 1 + len(best)]
    for trial, head in zip(carried, best, strict=True):
        assert trial.user_attrs["screen_head"] == head.number
        assert {k: trial.params[k] for k in head.params} == head.params
        # The fine-tuning knobs and augmentation are the main study's sampler's.
        assert {k for k in trial.params if fixed_by_screen(k)} == {
            "model.fine_tune.head_epochs",
            "model.fine_tune.unfreeze_layers",
            "model.fine_tune.lr_multiplier",
            "data.augmentation.preset",
        }
    # MLflow: the screen's trial runs nest under one `screen` run under the sweep's parent
    # run, carry the screen's study name (the main leaderboard never lists them), log no model.
    runs = screen_runs(cfg, f"{name}-screen")
    (stage,) = [r for r in runs if r.data.tags["sweeplab.kind"] == "stage"]
    trials = [r for r in runs if r.data.tags["sweeplab.kind"] == "trial"]
    assert len(trials) == 4
    assert stage.data.tags["mlflow.parentRunId"] == summary.parent_run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {stage.info.run_id}
    assert all("sweeplab.model_uri" not in r.data.tags for r in trials)
    assert all(r.data.tags["sweeplab.stage"] == "screen" for r in trials)
    assert stage.info.status == "FINISHED"


def test_the_plan_says_what_the_screen_takes() -> None:
    now = [0.0]
    budget = Budget(300.0, clock=lambda: now[0], screen_share=0.25)
    now[0] = 40.0
    budget.record(Best(0.9, 0, {}, None), 40.0)
    plan = budget.plan(Best(0.9, 0, {}, None))
    # 260 s left, 5 s kept for the test: 255 s of search, a quarter of it the screen's.
    assert "a screen of head configurations on cached features for about 64s" in plan
    assert "then about 4 more trials like it" in plan
    budget.screen_share = 0.05  # 13 s: too little for a screen, which is then skipped
    assert "screen" not in budget.plan(Best(0.9, 0, {}, None))


def test_without_a_time_budget_the_screen_is_sized_by_the_search() -> None:
    cfg = OmegaConf.create(
        {"search": {"timeout": None, "n_trials": 2, "staged": {"share": 0.3, "trials": 500}}}
    )
    assert screen_trials(cfg) == 4  # ceil(0.3 / 0.7 x 4.5 x 2): not the 500 ceiling
    cfg.search.n_trials = 1000
    assert screen_trials(cfg) == 500
    cfg.search.timeout = 600  # the share of the time ends the screen; the ceiling is a ceiling
    cfg.search.n_trials = 2
    assert screen_trials(cfg) == 500


def test_no_screen_when_no_two_phase_trial_would_fit_after_it() -> None:
    """At about 1x the recipe's time a screen could fit but none of its heads could then be
    fine-tuned: it is skipped, and the plan says no screen."""
    now = [0.0]
    budget = Budget(300.0, clock=lambda: now[0], screen_share=0.3)
    budget.record(Best(0.9, 0, {}, None), 60.0)
    now[0] = 200.0  # 100 s left, 95 s of search: a 28.5-s screen leaves 66.5 s, one 60-s trial
    assert budget.screen_seconds(0.3) == pytest.approx(0.3 * 95.0)
    now[0] = 220.0  # 75 s of search: a 22.5-s screen would leave 52.5 s, under one trial
    assert budget.screen_seconds(0.3) == 0.0
    assert "screen" not in budget.plan(Best(0.9, 0, {}, None))


def test_the_screen_ends_when_its_share_is_spent_and_says_so_once(capsys) -> None:
    now = [0.0]
    budget = ScreenBudget(30.0, clock=lambda: now[0], has_model=True)
    budget.record(Best(0.5, 0, {}, None), 4.0)
    now[0] = 25.0
    assert not budget.search_over() and not budget.plateaued()  # 5 s left: one more fits
    now[0] = 27.0
    assert budget.search_over() and budget.search_over() and budget.plateaued()
    assert not budget.stops_running_trial()  # a running head ends its epochs in the share
    now[0] = 30.5
    assert budget.stops_running_trial()  # past the share: stopped at its next epoch end
    out = capsys.readouterr().out
    assert out.count("screen: its share of search.timeout (search.staged.share) is spent") == 1


def test_staging_is_optuna_only_and_said_so(tmp_path) -> None:
    assert staged_note(transfer_config(tmp_path)) is None
    kt = staged_note(transfer_config(tmp_path, "search=keras_tuner"))
    assert kt is not None and "Optuna engine only" in kt and "one stage" in kt
    with pytest.raises(UserInputError, match=r"search\.staged\.share=1\.5.*from 0 up to"):
        check_config(transfer_config(tmp_path, "search.staged.share=1.5"), models=False)


# The kill tests: a screen and main trials long enough for a kill to land inside them.
KILL = (
    "search.n_trials=4",
    "search.variants=[]",
    "search.staged.trials=6",
    "search.staged.carry=2",
    "search.staged.epochs=15",
    "train.epochs=15",
    "model.fine_tune.head_epochs=2",
    "final.top_k=0",
    "final.retrain=false",
    "search.pruner=none",
    "tracking.log_models=false",
)


def start(args: list[str]) -> subprocess.Popen:
    """The sweep as a user starts it, in a process of its own to kill (its stderr kept)."""
    command = [sys.executable, "-m", "search.run", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)  # fmt: skip


def wait_until(proc: subprocess.Popen, out: Path, ready, timeout: float = 300) -> None:
    """Block until `ready()`; read only once the MLflow store exists (created after the study,
    reading earlier could race its schema)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        if (out / "mlflow.db").exists() and ready():
            return
        time.sleep(0.2)
    raise AssertionError("the awaited trial never started")


def running(storage: str, name: str, at_least_finished: int) -> bool:
    """Whether study `name` has a trial training and `at_least_finished` finished ones."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # not created yet
        return False
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    return TrialState.RUNNING in states and done >= at_least_finished


def trained_once(cfg, study: str) -> None:
    """Each finished trial of `study` has one MLflow run that finished it (none ran twice)."""
    runs = [r for r in screen_runs(cfg, study) if r.data.tags["sweeplab.kind"] == "trial"]
    ended = [
        int(r.data.tags["sweeplab.trial_number"])
        for r in runs
        if r.data.tags.get("sweeplab.state") in ("complete", "pruned")
    ]
    assert len(ended) == len(set(ended)), ended
    assert [r for r in runs if r.info.status == "RUNNING"] == []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["screen", "main"])
def test_a_staged_sweep_killed_in_either_stage_resumes(tmp_path, monkeypatch, stage) -> None:
    home = make_keras_home(tmp_path, monkeypatch)
    out = tmp_path / "runs"
    args = [
        "sweep=transfer",
        *NO_AUGMENTATION,
        "data.image_size=16",
        "model.input_size=32",
        "train.batch_size=64",
        *KILL,
        f"keras_home={home}",
        f"output_dir={out}",
    ]
    cfg = prepare(transfer_config(tmp_path, *KILL, f"keras_home={home}"))
    name, storage = study_name(cfg), str(cfg.search.storage)
    proc = start(args)
    try:
        if stage == "screen":  # two head configurations done, a third training
            wait_until(proc, out, lambda: running(storage, f"{name}-screen", 2))
        else:  # the heads carried, trial 1 (the first carried head) training
            wait_until(
                proc,
                out,
                lambda: (
                    running(storage, name, 1)
                    and CARRIED in optuna.load_study(study_name=name, storage=storage).user_attrs
                ),
            )
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    screen = optuna.load_study(study_name=f"{name}-screen", storage=storage)
    before = {t.number for t in screen.trials if t.state != TrialState.RUNNING}

    resumed = run_cli("search.run", *args)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "recovered from a killed run: trial(s) #" in resumed.stdout
    screen = optuna.load_study(study_name=f"{name}-screen", storage=storage)
    finished = [t for t in screen.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6  # search.staged.trials, across the two runs
    if stage == "screen":
        (killed,) = [t for t in screen.trials if t.state == TrialState.FAIL]
        assert killed.number not in before
        (retry,) = [t for t in screen.trials if t.user_attrs.get("retry_of") == killed.number]
        assert retry.params == killed.params and retry.state == TrialState.COMPLETE
    else:
        assert "search.staged: the screen stage ended in an earlier run" in resumed.stdout
        assert "search.staged: screen stage" not in resumed.stdout
        assert {t.number for t in screen.trials} == before  # not one more screen trial
    main = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in main.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4
    heads = {t.number: t.params for t in screen.trials}
    for number in main.user_attrs[CARRIED]:  # each carried head trained in two phases
        assert any(all(t.params[k] == v for k, v in heads[number].items()) for t in done)
    trained_once(cfg, name)
    trained_once(cfg, f"{name}-screen")


@pytest.mark.slow  # ~35 s on 2 busy cores
def test_a_budget_spent_by_trial_0_starts_no_other_trial(tmp_path, monkeypatch, capsys) -> None:
    """At 1x the recipe's time, trial 0 and the final stage fill the budget: no screen, and no
    trial started only to be stopped (Optuna starts one before its first stop check)."""
    home = make_keras_home(tmp_path, monkeypatch)
    planned = preflight.check

    def at_1x(cfg, data, budget, *args):
        """A budget that trial 0 (never stopped: the study has no model yet) and the final stage
        fill, however fast trial 0 runs: what passed the plan's check, less trial 0's share (the
        plan's estimate of a tiny trial is seconds off either way; test_plan.py checks it)."""
        plan = planned(cfg, data, budget, *args)
        budget.seconds = plan.spent + plan.final
        return dataclasses.replace(plan, budget=budget.seconds)

    monkeypatch.setattr(preflight, "check", at_1x)
    cfg = transfer_config(
        tmp_path, "search.timeout=600", "train.epochs=2", "model.fine_tune.head_epochs=1",
        "final.top_k=0", "final.retrain=false", f"keras_home={home}", "search.workers=0",
    )  # fmt: skip
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "search.timeout: the time left is the final stage's; no new trial" in out
    assert "screen stage" not in out
    main = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    states = [t.state for t in main.trials]
    assert states == [TrialState.COMPLETE], out  # not one draw stopped


@pytest.mark.slow  # a transfer sweep: 3 two-phase trials, 2 screen heads, its final stage
def test_the_variants_run_before_the_screen(tmp_path, monkeypatch) -> None:
    """Trial 0's variants (their kinds price the reserve) train before the screen takes its
    share: run after it, the flip variant raised the reserve past the time the screen had left
    for its heads, and a 10x sweep on cifar10-test screened 51 heads and fine-tuned none."""
    home = make_keras_home(tmp_path, monkeypatch)
    cfg = transfer_config(
        tmp_path, *STAGED, "search.variants=[{data.augmentation.preset:flip}]",
        "search.staged.trials=2", "search.staged.carry=1", f"keras_home={home}",
    )  # fmt: skip
    summary = sweep(cfg)
    main = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    screen = optuna.load_study(
        study_name=f"{summary.study_name}-screen", storage=cfg.search.storage
    )
    variant = main.trials[1]
    assert "variant" in variant.user_attrs and variant.state == TrialState.COMPLETE
    assert variant.params["data.augmentation.preset"] == "flip"
    assert len(screen.trials) == 2
    assert variant.datetime_complete < min(t.datetime_start for t in screen.trials)
    assert main.trials[2].user_attrs["screen_head"] in main.user_attrs[CARRIED]  # then its head
