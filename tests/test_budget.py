"""`search.timeout` is the whole invocation's budget (search/trials/budget.py): the search keeps back
what the final stage's re-evaluation needs, a running trial is stopped once the time left is the
final stage's, and the final stage re-trains only contenders that still fit. The sweep test runs a
real sweep (tiny CNN on real digits, real MLflow and Optuna stores) on a clock that the test moves.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from test_sweep import runs_of

import search.trials.budget as budget_module
from search.config.study import study_name
from search.engines.optuna.engine import ObjectivePruning
from search.final.reevaluate import Candidate, Contenders, crown
from search.sweep import prepare, sweep
from search.trials import preflight
from search.trials.budget import MEMBER_SHARE, PLAIN, TEST_SECONDS, Budget, kind_of
from search.trials.types import Best


class Clock:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def jump_the_clock(monkeypatch, at_reading: int) -> None:
    """Budgets a sweep builds start at 0 on a clock that jumps past any budget at its
    `at_reading`-th reading (after trial 0 the plan reads it, then the check before trial 1,
    then trial 1's first epoch end)."""
    clock, reads = Clock(), []
    original = Budget.from_config.__func__

    def from_config(
        cls, config, contenders, started=None, retrain_scale=1.0, noise=None, members=1
    ):
        made = original(cls, config, contenders, 0.0, retrain_scale, noise, members)
        made.clock = ticking
        return made

    def ticking() -> float:
        reads.append(clock.now)
        if len(reads) >= at_reading:
            clock.now = 1e6
        return clock.now

    monkeypatch.setattr(budget_module.Budget, "from_config", classmethod(from_config))


def trial(number: int, value: float) -> Best:
    return Best(value, number, {"optimizer.learning_rate": 0.001 * (number + 1)}, None)


def test_the_search_keeps_back_the_reevaluation_of_its_contenders() -> None:
    clock = Clock()
    contenders = Contenders(top_k=2, maximize=True)
    budget = Budget(100.0, top_k=2, seeds=2, contenders=contenders, clock=clock)
    clock.now = 99.0
    assert not budget.search_over()
    clock.now = 101.0  # over, but no model yet: a running trial goes on to give one
    assert budget.search_over() and not budget.stops_running_trial()

    budget.record(trial(0, 0.80), seconds=10.0)
    budget.record(trial(1, 0.85), seconds=6.0)
    budget.record(trial(2, 0.70), seconds=30.0)  # third: not among the top 2
    assert budget.reserve() == pytest.approx(2 * (6.0 + 10.0) + TEST_SECONDS)
    # A new trial starts only while the shortest one so far (6 s) still fits before the reserve.
    clock.now = 100.0 - budget.reserve() - 6.0 - 0.1
    assert not budget.search_over()
    clock.now += 0.2
    assert budget.search_over() and not budget.stops_running_trial()
    clock.now = (
        100.0 - budget.reserve() + 0.1
    )  # a running trial stops once only the reserve is left
    assert budget.stops_running_trial()
    assert budget.fits(30.0 - TEST_SECONDS - 1.0) and not budget.fits(40.0)


def test_retrain_is_reserved_and_replaces_a_lone_contenders_reevaluation() -> None:
    kept = Budget(100.0, top_k=1, seeds=1, contenders=Contenders(1, True), clock=Clock())
    retrained = Budget(
        100.0, top_k=1, seeds=1, retrain=True, retrain_scale=1.25,
        contenders=Contenders(1, True), clock=Clock(),
    )  # fmt: skip
    for budget in (kept, retrained):
        budget.record(trial(0, 0.9), seconds=12.0)
    assert kept.reserve() == pytest.approx(12.0 + TEST_SECONDS)  # one re-training
    assert retrained.reserve() == pytest.approx(1.25 * 12.0 + TEST_SECONDS)  # the retraining only


def test_no_budget_never_ends_the_search() -> None:
    budget = Budget(None, top_k=3, seeds=2, contenders=Contenders(3, True))
    budget.record(trial(0, 0.9), seconds=1e9)
    assert not budget.search_over() and budget.fits(1e12)


def test_contenders_are_the_top_k_within_the_noise_of_the_best() -> None:
    trials = [trial(0, 0.654), trial(1, 0.100), trial(2, 0.640), trial(3, 0.600)]
    # 451 validation images at p = 0.654: one standard error is 0.0224, two are 0.0448.
    picked = Contenders(top_k=3, maximize=True, val_images=451, within_se=2.0)(trials)
    assert [t.number for t in picked] == [0, 2]
    unfiltered = Contenders(top_k=3, maximize=True, val_images=451, within_se=None)(trials)
    assert [t.number for t in unfiltered] == [0, 2, 3]
    # A loss has no binomial scale: the top k as they are, lowest first.
    losses = Contenders(top_k=2, maximize=False, val_images=None, within_se=2.0)(trials)
    assert [t.number for t in losses] == [1, 3]
    # The same config twice (a re-queued trial) is one contender.
    twice = [trial(0, 0.7), Best(0.69, 5, trial(0, 0).params, None), trial(2, 0.68)]
    assert [t.number for t in Contenders(2, True)(twice)] == [0, 2]


def test_a_running_trial_is_pruned_once_the_time_left_is_the_final_stages(tmp_path) -> None:
    clock = Clock()
    budget = Budget(100.0, top_k=1, seeds=1, contenders=Contenders(1, True), clock=clock)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    running = study.ask()
    callback = ObjectivePruning(running, "val_accuracy", budget)
    assert callback.decides  # even without a pruner: the worker must wait for the verdict
    logs = {"loss": 1.0, "val_accuracy": 0.5}
    clock.now = 500.0
    callback.on_epoch_end(0, logs)  # no model yet: the first trial always finishes
    budget.record(trial(0, 0.9), seconds=20.0)
    clock.now = 100.0 - 20.0 - TEST_SECONDS - 1.0
    callback.on_epoch_end(1, logs)
    clock.now += 2.0
    with pytest.raises(optuna.TrialPruned, match="search.timeout"):
        callback.on_epoch_end(2, logs)
    # The last epoch is never stopped: the trial trained them all and completes.
    ObjectivePruning(running, "val_accuracy", budget, epochs=4).on_epoch_end(3, logs)


@pytest.mark.parametrize("retrain", [False, True])
def test_a_sweep_stops_its_running_trial_and_skips_what_does_not_fit(
    make_config, monkeypatch, capsys, retrain
) -> None:
    """Trial 0 completes; trial 1 starts with time to spare, then the clock jumps past the
    budget at its first epoch's end: it is pruned, no trial 2 starts, and neither the
    re-evaluation nor the retraining fits, so the best trial's logged model is tested as it is."""
    jump_the_clock(monkeypatch, at_reading=3)  # at trial 1's first epoch end
    cfg = make_config(
        "search.n_trials=5", "search.timeout=600", "final.top_k=2", "final.seeds=1",
        "search.pruner=none", f"final.retrain={str(retrain).lower()}",
    )  # fmt: skip
    summary = sweep(cfg)

    out = capsys.readouterr().out
    study = optuna.load_study(
        study_name=study_name(prepare(cfg)), storage=prepare(cfg).search.storage
    )
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    assert "stopped by the budget (search.timeout) after epoch 1 of" in out
    assert "no new trial" in out
    if retrain:  # a lone contender is retrained, not re-evaluated; the retraining does not fit
        assert "trial 0 is the only contender" in out
        assert "retraining on train + validation (" in out
    else:
        assert "re-evaluation of trial 0 skipped" in out
    assert summary.final is not None and summary.final.source == "trial_model"
    runs = runs_of(cfg)
    if not retrain:  # skipped says "skipped", not a mean with std 0.0
        (parent,) = runs_of(cfg, "sweep")
        assert not any(k.startswith("reeval_trial") for k in parent.data.metrics)
        assert parent.data.tags["sweeplab.final.reevaluation"] == "skipped"
    pruned = [r for r in runs_of(cfg, "trial") if r.data.tags.get("sweeplab.state") == "pruned"]
    assert runs and all(
        r.info.status == "FINISHED" for r in runs if r.info.run_id != pruned[0].info.run_id
    )
    assert len(pruned) == 1
    # One name for the state everywhere: MLflow's run (status, name, description), Optuna.
    assert pruned[0].info.status == "KILLED"
    assert pruned[0].data.tags["sweeplab.stopped_by"] == "budget"
    assert pruned[0].data.tags["mlflow.runName"].endswith("(stopped by the budget)")
    note = pruned[0].data.tags["mlflow.note.content"]
    assert note.startswith("Stopped by the budget (search.timeout) after epoch 1 of")
    assert "pruner" not in note
    assert study.trials[1].user_attrs["stopped_by"] == "budget"
    # ... the leaderboard and the HTML report's table of stopped trials.
    from search.reporting.html import _stopped_html
    from search.reporting.leaderboard import rank, to_table
    from search.reporting.load import load_view

    view = load_view(prepare(cfg).tracking.tracking_uri, "sweeplab", None)
    states = {r.trial: r.state for r in rank(view.rows, view.objectives)}
    assert states == {0: "complete", 1: "stopped by the budget"}
    assert "stopped by the budget" in to_table(view.rows, view.objectives)
    table = _stopped_html(view)
    assert "stopped by the budget (search.timeout) after epoch 1 of" in table
    assert "pruner" not in table


def test_a_lone_contender_to_be_retrained_is_not_reevaluated() -> None:
    budget = Budget(
        100.0, top_k=3, seeds=1, retrain=True, contenders=Contenders(3, True, 310, 2.0),
        clock=Clock(),
    )  # fmt: skip
    budget.record(trial(0, 0.95), seconds=10.0)
    budget.record(trial(1, 0.50), seconds=10.0)  # far below: no contender
    assert budget.reserve() == pytest.approx(10.0 + TEST_SECONDS)  # the retraining alone


def test_a_sweep_retrains_its_only_contender_without_reevaluating_it(make_config, capsys) -> None:
    cfg = make_config("search.n_trials=1", "final.top_k=3", "final.seeds=1", "final.retrain=true")
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "trial 0 is the only contender" in out and "re-evaluated trial" not in out
    assert summary.final is not None and summary.final.source == "retrained_train_val"


def test_a_contender_the_budget_skipped_still_competes_with_its_search_score() -> None:
    """Round 7's bench on sign-language-digits: trial 1 (search 0.974) re-evaluated at 0.945 on
    a new seed; trial 0 (0.968) did not fit and was skipped, yet trial 1 was crowned."""
    reevaluated = Candidate(trial(1, 0.974), seeds=[1], scores=[0.945])
    skipped = Candidate(trial(0, 0.968))
    # Logged as skipped: no mean over one score with a std of 0.0.
    assert skipped.summary()["skipped"] is True
    assert skipped.summary()["mean"] is None and skipped.summary()["std"] is None
    assert reevaluated.mean == pytest.approx((0.974 + 0.945) / 2)
    assert crown([reevaluated, skipped], maximize=True) is skipped
    steady = Candidate(trial(1, 0.974), seeds=[1], scores=[0.970])
    assert crown([steady, skipped], maximize=True) is steady
    losses = [Candidate(trial(0, 0.30), scores=[0.40]), Candidate(trial(1, 0.32))]
    assert crown(losses, maximize=False) is losses[1]  # a loss: the lower mean wins
    tie = [Candidate(trial(0, 0.9)), Candidate(trial(1, 0.9))]
    assert crown(tie, maximize=True) is tie[0]  # the better-ranked trial keeps a tie


def test_patience_ends_the_search_after_trials_without_a_gain_beyond_the_noise() -> None:
    """search.patience: P trials in a row that beat the best by no more than one standard error
    end the search (the rest of the budget goes to the final stage); a real gain resets it."""
    contenders = Contenders(top_k=1, maximize=True, val_images=100)
    budget = Budget(
        1000.0, top_k=1, seeds=1, contenders=contenders, clock=Clock(), patience=2,
        noise=contenders.noise,
    )  # fmt: skip
    noise = contenders.noise(0.80)  # sqrt(0.8 * 0.2 / 100) = 0.04
    assert noise == pytest.approx(0.04)
    budget.record(trial(0, 0.80), seconds=10.0)
    budget.record(trial(1, 0.80 + noise - 0.001), seconds=10.0)  # within the noise: no gain
    assert not budget.plateaued() and not budget.search_over()
    budget.record(trial(2, 0.90), seconds=10.0)  # beyond it: the count starts again
    assert budget.since_gain == 0 and budget.leading == 0.90
    budget.record(trial(3, 0.85), seconds=10.0)
    assert not budget.search_over()
    budget.record_pruned()  # a pruned trial gains nothing either
    assert budget.plateaued() and budget.search_over()


def test_patience_needs_a_time_budget() -> None:
    """Without search.timeout there is no rest of the time to give elsewhere: n_trials decides."""
    budget = Budget(None, patience=1, clock=Clock())
    for number in range(3):
        budget.record(trial(number, 0.5), seconds=1.0)
    assert budget.since_gain == 2 and not budget.plateaued() and not budget.search_over()


def test_the_plan_says_what_the_budget_buys() -> None:
    clock = Clock()
    budget = Budget(
        400.0, top_k=1, seeds=1, retrain=True, retrain_scale=1.5, members=None, ensemble=5,
        contenders=Contenders(1, True), clock=clock, patience=10,
    )  # fmt: skip
    clock.now = 20.0
    budget.record(trial(0, 0.9), seconds=20.0)
    plan = budget.plan(trial(0, 0.9))
    # 380 s left; the reserve is five retrainings (30 s each: half the budget holds 6, the
    # ensemble takes 5) and the test margin; 20-s trials fit 11x in the 225 s left.
    assert budget.reserve() == pytest.approx(5 * 30.0 + TEST_SECONDS)
    assert "380s of search.timeout left: about 11 more trials like it" in plan
    assert "search.patience" in plan
    assert (
        "it holds 5 model(s) of the crowned config retrained on train + validation at about "
        "30s each (final.retrain_seeds)" in plan
    )


def test_patience_ends_a_sweep_and_the_rest_buys_retrained_seeds(make_config, capsys) -> None:
    """A real sweep on a roomy budget: after `search.patience` trials without a gain the search
    ends, and the final stage retrains the crowned config on train + validation with new seeds,
    each a member of the shipped ensemble, up to final.ensemble."""
    cfg = make_config(
        "search.n_trials=30", "search.timeout=600", "search.patience=1", "search.sampler=random",
        "search.pruner=none", "~space.optimizer", "~space.model",
        "+space.model.filters={type:categorical,choices:[8]}",  # every trial is the base
        "final.retrain=true", "final.retrain_seeds=auto", "final.ensemble=3",
        "final.register=false", "final.top_k=0",
    )  # fmt: skip
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "plan: trial 0 trained in" in out
    assert "search.patience=1): the" in out
    assert summary.finished_trials < 30
    assert out.count("final: retraining the best config on train + validation") == 3
    assert summary.final.source == "ensemble"
    assert f"seed {cfg.seed + 101}" in out and f"seed {cfg.seed + 102}" in out


def test_retrain_seeds_is_checked(make_config) -> None:
    from experiments.errors import UserInputError
    from search.final.stage import check_final_config

    for bad in ("0", "4", "many"):
        cfg = make_config(f"final.retrain_seeds={bad}", "final.ensemble=3")
        with pytest.raises(UserInputError, match=f"final.retrain_seeds='?{bad}'? must be"):
            check_final_config(prepare(cfg))


def test_a_retraining_is_priced_with_the_features_it_must_build_again() -> None:
    """Train + validation joins the trials' entries, so a retraining without augmentation builds
    nothing; one with augmentation builds its copies of train + validation again (its kind's
    largest build, scaled like the training); a trial not measured here, the largest build."""
    budget = Budget(1000.0, retrain=True, retrain_scale=1.25, clock=Clock())
    budget.record(trial(0, 0.9), seconds=40.0, cache_build=16.0)  # trial 0 built the features
    budget.record(trial(1, 0.95), seconds=24.0)  # trial 1 read them
    flip = kind_of({"preset": "flip"})
    budget.record(trial(2, 0.96), seconds=50.0, cache_build=20.0, kind=flip)  # built its copies
    budget.record(trial(3, 0.97), seconds=31.0, kind=flip)  # read them
    assert budget.retrain_seconds(trial(0, 0.9)) == pytest.approx(1.25 * 24.0)
    assert budget.retrain_seconds(trial(1, 0.95)) == pytest.approx(1.25 * 24.0)
    assert budget.retrain_seconds(trial(3, 0.97)) == pytest.approx(1.25 * (31.0 + 20.0))
    assert budget.retrain_seconds(trial(9, 0.9)) == pytest.approx(
        1.25 * (budget.estimate(None) + 20.0)
    )


def test_a_trial_is_priced_by_its_kind_before_it_starts() -> None:
    """An augmented trial trains phase 2 uncached and, the first of its preset, builds its copies:
    it is priced by the plan until one ran, then by what it took; a plain one by trial 0 less
    the features trial 0 built (cached now). cifar10-test at 1x the recipe's time started the
    flip variant on trial 0's price, and the budget stopped it in the retraining's time."""
    clock = Clock()
    budget = Budget(300.0, retrain=True, clock=clock)
    budget.unseen_augmented = 90.0  # the plan's: phase 2 uncached, copies built
    budget.record(trial(0, 0.9), seconds=60.0, cache_build=20.0, kind=PLAIN)
    flip = kind_of({"preset": "flip"})
    assert flip != PLAIN and kind_of({"preset": "none"}) == PLAIN == kind_of(None)
    assert budget.price(PLAIN) == budget.price(None) == pytest.approx(40.0)
    assert budget.price(flip) == pytest.approx(90.0)
    reserve = budget.reserve()  # the retraining: trial 0 again, its features read, not built
    assert reserve == pytest.approx(40.0 + TEST_SECONDS)
    clock.now = 300.0 - reserve - 60.0  # room for a plain trial, not for a flip one
    assert not budget.search_over(PLAIN) and not budget.search_over(None)
    assert budget.search_over(flip) and budget.too_long(flip)
    assert not budget.too_long(PLAIN)  # what search_over let start: no clock read, no stop
    # Once a flip trial ran, its own time prices the next (its copies exist: build left out).
    budget.record(trial(1, 0.91), seconds=70.0, cache_build=25.0, kind=flip)
    assert budget.price(flip) == pytest.approx(45.0)
    assert budget.price(kind_of({"preset": "light"})) == pytest.approx(90.0)  # not seen yet


def test_a_running_trial_stops_an_epoch_before_the_reserve() -> None:
    """The stop comes when one more epoch as long as the last would reach the final stage's time:
    stopped only once there, a trial overran the reserve by up to an epoch, and the retraining
    then no longer fit."""
    clock = Clock()
    budget = Budget(100.0, retrain=True, clock=clock)
    budget.record(trial(0, 0.9), seconds=20.0)
    clock.now = 100.0 - budget.reserve() - 5.0  # 5 s before the reserve
    assert not budget.stops_running_trial(0.0)
    assert not budget.stops_running_trial(4.0)
    assert budget.stops_running_trial(6.0)


@pytest.mark.parametrize("queued", [True, False], ids=["queued-variant", "sampled"])
def test_a_trial_too_dear_for_the_time_left_is_not_started(
    make_config, monkeypatch, capsys, queued
) -> None:
    """A real sweep whose plan prices a trial of an augmentation not trained yet beyond the time
    left: after trial 0, trial 1 is not started, whether queued (the flip variant after the
    plain base: it stays queued for a resume) or sampled (the grid's other preset after trial 0's:
    PRUNED, marked, no MLflow run), and the final stage keeps its time: the retraining runs."""
    announce = preflight.announce

    def dear_augmentation(plan, budget, *args, **kwargs):
        announce(plan, budget, *args, **kwargs)
        budget.unseen_augmented = 1e5  # as a plan of a slow augmented phase 2 would say

    monkeypatch.setattr(preflight, "announce", dear_augmentation)
    cfg = make_config(
        "search.n_trials=4", "search.timeout=600", "final.top_k=0", "final.retrain=true",
        "search.workers=0", "data.augmentation.preset=none", "~space.optimizer",
        "~space.model",
        *(
            ["+space.data.augmentation.preset={type:categorical,choices:[none,flip]}",
             "search.variants=[{data.augmentation.preset:flip}]"]
            if queued  # the base (none) is trial 0, the variant is queued after it
            else ["+space.data.augmentation.preset={type:categorical,choices:[flip,light]}",
                  "search.sampler=grid"]  # no base in the space: the grid's two presets
        ),
    )  # fmt: skip
    summary = sweep(cfg)

    out = capsys.readouterr().out
    study = optuna.load_study(
        study_name=study_name(prepare(cfg)), storage=prepare(cfg).search.storage
    )
    assert study.trials[0].state == TrialState.COMPLETE
    if queued:
        assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.WAITING], out
        assert "search.timeout: the time left is the final stage's; no new trial" in out
    else:
        assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED], out
        presets = [t.params["data.augmentation.preset"] for t in study.trials]
        assert sorted(presets) == ["flip", "light"]  # trial 1's preset had not trained yet
        kind = kind_of({"preset": presets[1]})
        assert study.trials[1].user_attrs["not_started"] == kind
        assert f"search.timeout: trial 1 not started: a trial with augmentation {kind}" in out
        assert "another draw may cost less" in out  # the grid had no other: the search ended
    assert [r.data.tags["mlflow.runName"] for r in runs_of(cfg, "trial")] == ["trial-0"]
    assert summary.final is not None and summary.final.source != "trial_model"
    assert "final: retraining the best config on train + validation" in out, out


def test_the_reserve_holds_the_retraining_of_whichever_contender_is_crowned() -> None:
    """The re-evaluation may crown any contender: the reserve keeps the dearest one's retraining,
    not the search's best's (a 10x sweep on cifar10-test crowned a contender whose 95-s
    retraining then no longer fit, and shipped 3 models instead of 5)."""
    budget = Budget(
        1000.0, top_k=2, seeds=1, retrain=True, retrain_scale=1.25,
        contenders=Contenders(2, True), clock=Clock(),
    )  # fmt: skip
    budget.record(trial(0, 0.90), seconds=20.0)  # the search's best: cheap
    budget.record(trial(1, 0.89), seconds=60.0)  # a contender within the noise: dear
    assert budget.retrain_reserve([trial(0, 0.90), trial(1, 0.89)]) == pytest.approx(1.25 * 60.0)
    assert budget.reserve() == pytest.approx(20.0 + 60.0 + 1.25 * 60.0 + TEST_SECONDS)


def test_the_reserve_holds_the_ensembles_retrained_members() -> None:
    """final.retrain_seeds=auto reserves as many retrainings of the crowned config as half the
    budget holds (MEMBER_SHARE), from 1 to final.ensemble; a number reserves that many. Reserved
    for one only, a 10x sweep on cifar10-test searched to its end and shipped 3 models of 5."""

    def budget(seconds: float, members: int | None) -> Budget:
        made = Budget(
            seconds, retrain=True, retrain_scale=1.5, members=members, ensemble=5, clock=Clock()
        )
        made.record(trial(0, 0.9), seconds=20.0)  # its retraining: 1.5 x 20 = 30 s
        return made

    assert MEMBER_SHARE == 0.5
    assert budget(1000.0, None).retrained(30.0) == 5  # 500 s hold 16: up to final.ensemble
    assert budget(1000.0, None).reserve() == pytest.approx(5 * 30.0 + TEST_SECONDS)
    assert budget(200.0, None).retrained(30.0) == 3  # 100 s hold 3
    assert budget(200.0, None).reserve() == pytest.approx(3 * 30.0 + TEST_SECONDS)
    assert budget(40.0, None).retrained(30.0) == 1  # 20 s hold none: one all the same
    assert budget(1000.0, 2).reserve() == pytest.approx(2 * 30.0 + TEST_SECONDS)  # a number
    assert budget(1000.0, 1).reserve() == pytest.approx(30.0 + TEST_SECONDS)
    # The members are of the dearest contender's config, as any may be crowned.
    dear = Budget(
        1000.0, top_k=2, seeds=1, retrain=True, members=None, ensemble=5,
        contenders=Contenders(2, True), clock=Clock(),
    )  # fmt: skip
    dear.record(trial(0, 0.90), seconds=20.0)
    dear.record(trial(1, 0.89), seconds=90.0)  # 500 s hold 5 of its 90-s retrainings
    assert dear.reserve() == pytest.approx(20.0 + 90.0 + 5 * 90.0 + TEST_SECONDS)


def test_the_reevaluation_gives_way_to_the_reserved_members(make_config, capsys) -> None:
    """With the time for the reserved members and no more, the re-evaluation is skipped and the
    members are trained: they are the measured gain, the re-evaluation only chooses."""
    from search.final.reevaluate import reevaluate

    cfg = prepare(make_config("search.n_trials=1"))
    budget = Budget(
        1000.0, top_k=2, seeds=1, retrain=True, members=3, ensemble=3,
        contenders=Contenders(2, True), clock=Clock(),
    )  # fmt: skip
    top = [trial(0, 0.90), trial(1, 0.89)]
    for t in top:
        budget.record(t, seconds=40.0)
    budget.clock.now = 1000.0 - (3 * 40.0 + 30.0 + TEST_SECONDS)  # members fit, a 40-s seed not

    class Untouched:  # the runner a re-evaluation would train with: it must not be asked
        def data_for(self, trial_cfg):
            raise AssertionError("a re-evaluation trained where the members needed the time")

    assert reevaluate(cfg, Untouched(), top, 1, budget) is None
    out = capsys.readouterr().out
    assert "re-evaluation of trial 0 skipped: its 40s of re-training do not fit" in out
    assert "re-evaluation of trial 1 skipped" in out
