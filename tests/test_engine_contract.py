"""One contract, both engines: every case runs against `search=optuna` and `search=keras_tuner`,
the way Optuna runs one storage test suite against every storage.

Real training (tiny CNN on 8x8 digits, in the sweep process), a real MLflow store, a real Optuna
study and Keras Tuner project. What is checked is what a user sees: which trials train, which
count, what stops the sweep and with which exit status, what resuming does.

A config error in the first trial to finish (an error every trial would share, not a NaN loss)
stops the sweep with exit status 2 and is not counted; on resume **both engines train the same
parameters first**. Keras Tuner did so already (the trial stays ongoing in its saved oracle);
Optuna now queues the trial's parameters again, as it does for an interrupted trial. Why this
one, not "sample a new point": the first trial of a new study is the base config (baseline),
the one guarantee that the best is never worse than where the user started; sampling past it
would lose it for good, and the parameters were never judged (the config was at fault), so
after the user's fix they are as good a first trial as they were.
"""

from __future__ import annotations

import inspect
import math
import threading
import time

import optuna
import pytest
from omegaconf import open_dict
from test_baseline import IN_SPACE, base_values
from test_budget import jump_the_clock
from test_sweep import runs_of

import search.trials.budget_stop as budget_stop
from experiments.errors import UserInputError
from search.cli.exit_codes import exit_codes
from search.config.study import study_name
from search.engines import Engine, make_engine
from search.engines.keras_tuner import KerasTunerEngine
from search.engines.optuna.engine import OptunaEngine
from search.engines.optuna.threads import optimize_in_threads
from search.space.spec import parse_space
from search.sweep import prepare, sweep

QUICK = ["tracking.log_models=false", "final.enabled=false", IN_SPACE]
SEARCH = {
    "optuna": ["search.sampler=random", "search.pruner=none"],
    "keras_tuner": ["search=keras_tuner", "search.tuner=random"],
}
ENGINES = pytest.mark.parametrize("engine", list(SEARCH))


def config(make_config, engine: str, *overrides: str):
    return make_config(*SEARCH[engine], *QUICK, *overrides)


def engine_of(cfg) -> Engine:
    """The engine over the study `cfg` names (created, or reloaded when it exists)."""
    cfg = prepare(cfg)
    return make_engine(cfg, parse_space(cfg.space, cfg), study_name(cfg))


def trained(cfg) -> list:
    """The trial runs in the order they started."""
    return sorted(runs_of(cfg, "trial"), key=lambda r: r.info.start_time)


def values(run) -> dict:
    """A trial run's parameters, numbers as numbers."""
    out = {}
    for key, text in run.data.params.items():
        try:
            out[key] = float(text)
        except ValueError:
            out[key] = text
    return out


def fail_first_trainings(monkeypatch, n: int, error: BaseException) -> None:
    """The first `n` trainings in this process raise `error` (the rest train)."""
    import experiments.training.trial as trial_module

    original, calls = trial_module.run_trial, []

    def run_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) <= n:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(trial_module, "run_trial", run_trial)


# --- the protocol: members, signatures, attributes -------------------------------------------

MEMBERS = ("finished", "best", "top", "optimize", "recover", "trial_alive", "is_pruned")


def test_the_protocol_names_every_member_an_engine_must_have() -> None:
    declared = {n for n, v in vars(Engine).items() if callable(v) and not n.startswith("_")}
    assert declared == set(MEMBERS)
    assert set(Engine.__annotations__) == {"tags", "store", "interrupted"}


@pytest.mark.parametrize("cls", [OptunaEngine, KerasTunerEngine])
@pytest.mark.parametrize("member", MEMBERS)
def test_each_engine_member_has_the_protocols_signature(cls, member) -> None:
    """Same parameters (names, kinds, defaults) and the same annotations as `Engine` declares:
    a caller written against the protocol can call either engine."""
    expected = inspect.signature(getattr(Engine, member))
    actual = inspect.signature(getattr(cls, member))
    assert list(actual.parameters) == list(expected.parameters), (cls, member)
    for name, param in expected.parameters.items():
        got = actual.parameters[name]
        assert (got.kind, got.default) == (param.kind, param.default), (cls, member, name)
        assert _same_hint(got.annotation, param.annotation), (cls, member, name)
    assert _same_hint(actual.return_annotation, expected.return_annotation), (cls, member)


@ENGINES
def test_an_engine_has_the_protocols_attributes_and_answers_on_a_new_study(
    make_config, engine
) -> None:
    made = engine_of(config(make_config, engine, "search.n_trials=2"))
    assert isinstance(made.tags, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in made.tags.items()
    )
    assert {"sampler", "pruner"} <= set(made.tags)
    assert isinstance(made.store, str) and made.store
    assert made.interrupted == []
    assert made.finished() == 0 and made.best() is None and made.top(3) == []
    assert made.recover() == []
    assert made.trial_alive({"sweeplab.trial_number": "0"}) is None
    assert not made.is_pruned(ValueError("not a stop"))
    assert made.is_pruned(budget_stop.OutOfTime("search.timeout")) is (engine == "optuna")


def _same_hint(a, b) -> bool:
    return str(a).replace(" ", "") == str(b).replace(" ", "")


# --- top(): non-finite scores rank nowhere ---------------------------------------------------


def add_scores(made: Engine, scores: list[float]) -> None:
    """Complete trials with these objective values, no training."""
    if isinstance(made, OptunaEngine):
        for score in scores:
            made.study.add_trial(optuna.trial.create_trial(value=score))
        return
    assert isinstance(made, KerasTunerEngine)
    for score in scores:
        trial = made.oracle.create_trial(made.tuner.tuner_id)
        made.oracle.update_trial(trial.trial_id, {made.objective: score})
        trial.status = "COMPLETED"
        made.oracle.end_trial(trial)


@ENGINES
def test_top_and_best_drop_non_finite_scores(make_config, engine) -> None:
    made = engine_of(config(make_config, engine, "search.n_trials=9"))
    add_scores(made, [0.5, math.inf, 0.7, -math.inf, 0.6])
    assert [b.value for b in made.top(10)] == [0.7, 0.6, 0.5]
    assert [b.value for b in made.top(2)] == [0.7, 0.6]
    best = made.best()
    assert best is not None and best.value == 0.7


# --- resume -------------------------------------------------------------------------------


@ENGINES
def test_a_second_run_continues_the_study_and_trains_nothing_twice(make_config, engine) -> None:
    first = sweep(config(make_config, engine, "search.n_trials=2"))
    cfg = config(make_config, engine, "search.n_trials=3")
    second = sweep(cfg)
    assert second.study_name == first.study_name and second.finished_trials == 3
    runs = trained(cfg)
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert sorted(int(r.data.tags["sweeplab.trial_number"]) for r in runs) == [0, 1, 2]
    assert [r.data.tags["mlflow.parentRunId"] for r in runs].count(second.parent_run_id) == 1
    assert len({tuple(sorted(r.data.params.items())) for r in runs}) == 3
    assert engine_of(cfg).finished() == 3


# --- baseline and variants ---------------------------------------------------------------


@ENGINES
def test_trial_0_is_the_base_config_then_the_variants(make_config, engine) -> None:
    cfg = config(
        make_config, engine, "search.n_trials=3", "search.variants=[{model.dense_units:64}]"
    )
    sweep(cfg)
    base, variant, drawn = (values(r) for r in trained(cfg))
    assert base == pytest.approx(base_values(cfg))
    assert variant == pytest.approx(base_values(cfg) | {"model.dense_units": 64})
    assert drawn not in (base, variant)


# --- failures: the streak and its default ------------------------------------------------


@ENGINES
def test_five_failures_in_a_row_stop_the_sweep_by_default(make_config, capsys, engine) -> None:
    cfg = config(make_config, engine, "search.n_trials=7")
    assert cfg.search.max_consecutive_failures == 5  # one default, conf/search/*.yaml
    with open_dict(cfg):  # every trial's loss becomes NaN: a genuine, counted failure
        cfg.space.optimizer.learning_rate = {"type": "categorical", "choices": [1e9]}
    with pytest.raises(SystemExit) as stopped, exit_codes():
        sweep(cfg)
    assert stopped.value.code == 3
    assert "5 trials failed in a row (search.max_consecutive_failures=5)" in capsys.readouterr().err
    assert [r.info.status for r in trained(cfg)] == ["FAILED"] * 5
    assert engine_of(cfg).finished() == 5  # genuine failures count toward n_trials


# --- a config error in the first trial ---------------------------------------------------


@ENGINES
def test_a_config_error_in_the_first_trial_stops_and_the_same_trial_is_redone(
    make_config, monkeypatch, capsys, engine
) -> None:
    cfg = config(make_config, engine, "search.n_trials=2")
    fail_first_trainings(monkeypatch, 1, TypeError("Unknown optimizer argument: no_such_option"))
    with pytest.raises(SystemExit) as stopped, exit_codes():
        sweep(cfg)
    assert stopped.value.code == 2
    assert "the first trial failed" in capsys.readouterr().err
    (failed,) = trained(cfg)
    assert failed.info.status == "FAILED"
    assert engine_of(cfg).finished() == 0  # not counted

    monkeypatch.undo()  # the user fixed the config
    summary = sweep(cfg)
    assert summary.finished_trials == 2
    runs = trained(cfg)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED", "FINISHED"]
    assert values(runs[1]) == values(failed) == pytest.approx(base_values(cfg))
    assert values(runs[2]) != values(failed)


# --- an interrupt ------------------------------------------------------------------------


@ENGINES
def test_an_interrupted_trial_is_redone_first_on_resume(make_config, monkeypatch, engine) -> None:
    cfg = config(make_config, engine, "search.n_trials=3")
    import experiments.training.trial as trial_module

    original, calls = trial_module.run_trial, []

    def interrupted_second(*args, **kwargs):  # Ctrl-C in the second trial
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trial_module, "run_trial", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        sweep(cfg)
    done, cut = trained(cfg)
    assert (done.info.status, cut.info.status) == ("FINISHED", "KILLED")
    assert engine_of(cfg).finished() == 1

    monkeypatch.undo()
    assert sweep(cfg).finished_trials == 3
    runs = trained(cfg)
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FINISHED", "FINISHED"]
    assert values(runs[2]) == values(cut)  # redone first
    finished = [tuple(sorted(r.data.params.items())) for r in runs if r.info.status == "FINISHED"]
    assert len(set(finished)) == 3  # nothing trained twice


# --- search.pruner under Keras Tuner -----------------------------------------------------


def test_keras_tuner_says_it_does_not_use_a_pruner(make_config, capsys) -> None:
    """sweep=transfer sets search.pruner=hyperband; under Keras Tuner it is named, not silent."""
    made = engine_of(make_config(*SEARCH["keras_tuner"], "search.pruner=hyperband"))
    out = capsys.readouterr().out
    assert "search.pruner=hyperband is not used with search=keras_tuner" in out
    assert "search.tuner=hyperband" in out and made.tags["pruner"] == "none"
    engine_of(make_config(*SEARCH["keras_tuner"]))  # the default, none: no note
    assert "search.pruner" not in capsys.readouterr().out


# --- search.workers >= 2 (Optuna only: Keras Tuner's oracle is sequential) ----------------


@pytest.mark.parametrize("error", [UserInputError("a config error"), KeyboardInterrupt()])
def test_an_error_in_one_thread_stops_the_others_without_study_stop_errors(error) -> None:
    """Before: the failing thread called Study.stop outside its optimize loop (RuntimeError, an
    "Exception in thread" traceback per thread) and its siblings went on to the end."""
    study = optuna.create_study()
    uncaught: list[BaseException] = []
    hook, threading.excepthook = threading.excepthook, lambda a: uncaught.append(a.exc_value)
    started = threading.Barrier(2)

    def objective(trial: optuna.Trial) -> float:
        if trial.number < 2:
            started.wait(timeout=10)  # both threads hold a trial
        if trial.number == 0:
            raise error
        time.sleep(0.2)
        return 1.0

    try:
        with pytest.raises(type(error)):
            optimize_in_threads(
                study, objective, 2, lambda: len(study.trials) >= 30, catch=(RuntimeError,)
            )
    finally:
        threading.excepthook = hook
    assert uncaught == []
    assert len(study.trials) <= 3  # the sibling finished its trial, started at most one more


TWO_OBJECTIVES = (
    "train.objectives=[{metric:val_accuracy,direction:maximize},"
    "{metric:model_params,direction:minimize}]"
)


def test_the_budget_stops_a_running_trial_of_a_multi_objective_sweep(
    make_config, monkeypatch, capsys
) -> None:
    """Trial 0 completes; the clock jumps past the budget at trial 1's first epoch end: it is
    pruned there (before: it trained all its epochs, Optuna has no pruning callback then)."""
    jump_the_clock(monkeypatch, at_reading=3)  # at trial 1's first epoch end
    cfg = make_config(
        "search.n_trials=4", "search.timeout=600", "search.sampler=random", "train.epochs=3",
        TWO_OBJECTIVES, "tracking.log_models=false", "final.enabled=false",
    )  # fmt: skip
    sweep(cfg)
    assert "stopped by the budget (search.timeout) after epoch 1 of 3" in capsys.readouterr().out
    made = engine_of(cfg)
    assert isinstance(made, OptunaEngine)
    states = [t.state for t in made.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]


@pytest.mark.slow
def test_a_config_error_with_two_workers_stops_with_exit_2(make_config, monkeypatch, capfd) -> None:
    """The first trial to finish fails on a config error: exit 2, nothing counted, whatever the
    number of workers (before: with two, the first trial to fail was the second started, so
    both failures counted and the streak exited 3).

    The error is raised in the sweep process as a trial is handed to its worker (an error every
    trial shares, not a `TrialFailed`), after both threads have started their trial."""
    from search.execution import pool

    def refused(self, config_yaml, shared, costs):
        time.sleep(1.0)  # both trials have started
        raise RuntimeError("a setting every trial shares is wrong")

    monkeypatch.setattr(pool.Worker, "send_trial", refused)
    cfg = make_config(
        *QUICK, "search.workers=2", "search.n_trials=4", "search.max_consecutive_failures=2",
    )  # fmt: skip
    with pytest.raises(SystemExit) as stopped, exit_codes():
        sweep(cfg)
    err = capfd.readouterr().err
    assert stopped.value.code == 2, err
    assert "the first trial failed" in err and "a setting every trial shares" in err
    assert "Exception in thread" not in err and "Study.stop" not in err
    made = engine_of(cfg)
    assert made.finished() == 0
    trials = made.study.trials  # both failed on it, uncounted; their parameters queued first
    states = sorted(t.state.name for t in trials)
    assert states == ["FAIL", "FAIL", "WAITING", "WAITING"], [
        (t.state, t.user_attrs) for t in trials
    ]
    assert all("failure_reason" not in t.user_attrs for t in trials)
    assert {t.user_attrs.get("retry_of") for t in trials if t.state.name == "WAITING"} == {0, 1}
