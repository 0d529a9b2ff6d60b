"""The plan before trial 0 (issue 25): a trial's parts are timed on the user's data, the plan says
what `search.timeout` buys, and a budget that cannot fit trial 0 and the final stage is refused
before anything is created. Real tiny transfer sweeps (MobileNet 0.25, the real ImageNet file, the
embedded digits at 16 px, the model at 32 px), real Optuna and MLflow stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from transfer_helpers import make_keras_home, transfer_config

import search.trials.preflight as preflight_module
from experiments.training.timings import PhaseCost, Probe
from search.final.reevaluate import Contenders
from search.sweep import sweep
from search.trials.budget import TEST_SECONDS, Budget
from search.trials.plan import (
    EPOCH_SECONDS,
    READ_BYTES_PER_SECOND,
    TRIAL_SECONDS,
    UNCACHED_FIXED,
    WRITE_BYTES_PER_SECOND,
    Plan,
    Shape,
    build_seconds,
    make_plan,
    plan_lines,
    refusal,
    trial_seconds,
)
from search.trials.types import Best

# The transfer sweep at its smallest: every trial on cached activations, same cost as trial 0.
TINY_TRANSFER = [
    "data.image_size=16",
    "model.input_size=32",
    "train.batch_size=64",
    "data.augmentation.preset=none",
]


def probe(**changes) -> Probe:
    """A cached two-phase trial's timings, made up round for the arithmetic."""
    values = dict(
        build=2.0,
        phases={1: PhaseCost(1.0, 0.01, 0.005), 2: PhaseCost(3.0, 0.1, 0.05, epoch=0.2)},
        cached=True,
        extract_fixed=1.0,
        extract_image=0.004,
        build_images=1000,
        build_bytes=200_000_000,
        seconds=6.0,
    )
    return Probe(**{**values, **changes})


SHAPE = Shape(train_images=800, val_images=200, batch_size=100, epochs=10, head_epochs=6)


def test_a_trials_seconds_are_its_parts() -> None:
    """8 training and 2 validation batches an epoch; 6 epochs of phase 1, 4 of phase 2 (whose
    fit loop costs 0.2 s an epoch beyond its steps)."""
    phase1 = 1.0 + 6 * (8 * 0.01 + 2 * 0.005 + EPOCH_SECONDS)
    phase2 = 3.0 + 4 * (8 * 0.1 + 2 * 0.05 + 0.2 + EPOCH_SECONDS)
    build = 1.0 + 1000 * 0.004 + 200_000_000 / WRITE_BYTES_PER_SECOND
    assert trial_seconds(probe(), SHAPE) == pytest.approx(2.0 + build + phase1 + phase2)
    # A later trial reads the entries trial 0 wrote, instead of building them.
    later = 2.0 + 200_000_000 / READ_BYTES_PER_SECOND + phase1 + phase2
    assert trial_seconds(probe(), SHAPE, first=False) == pytest.approx(later)
    # Entries of an earlier sweep: trial 0 reads them too, and builds only what is missing.
    resumed = probe(build_images=0, build_bytes=0, stored_bytes=200_000_000)
    assert trial_seconds(resumed, SHAPE) == pytest.approx(later)
    # A one-phase model (cnn): its one fit, no cache.
    cnn = Probe(2.0, {1: PhaseCost(1.0, 0.01, 0.005)})
    one = Shape(800, 200, 100, epochs=5, head_epochs=5)
    assert trial_seconds(cnn, one) == pytest.approx(2.0 + 1.0 + 5 * (0.09 + EPOCH_SECONDS))


def test_an_augmented_trials_phase_2_is_priced_uncached() -> None:
    """Phase 2 of a trial with an augmentation preset runs the whole model: each batch also
    passes the frozen part (100 images x 4 ms), and its tracing costs UNCACHED_FIXED times."""
    plain = trial_seconds(probe(), SHAPE, first=False)
    augmented = trial_seconds(probe(), SHAPE, first=False, augmented=True)
    frozen = 100 * 0.004
    extra = (UNCACHED_FIXED - 1) * 3.0 + 4 * (8 * frozen + 2 * frozen)
    assert augmented - plain == pytest.approx(extra)
    # Trial 0 augmented itself: its phase 2 was timed as it runs; nothing more to price.
    assert trial_seconds(probe(phase2_uncached=True), SHAPE, augmented=True) == pytest.approx(
        trial_seconds(probe(phase2_uncached=True), SHAPE)
    )


def budget(seconds: float, members: int | None = 1) -> Budget:
    """sweep=transfer's final stage: 3 contenders, 1 seed each, retraining on train + val
    (`members` models: None is final.retrain_seeds=auto, up to final.ensemble=5)."""
    return Budget(
        seconds, top_k=3, seeds=1, retrain=True, retrain_scale=1.25, members=members,
        ensemble=5, contenders=Contenders(3, True), clock=lambda: 0.0, started=0.0,
    )  # fmt: skip


def test_the_plan_adds_up_and_names_the_smallest_budget() -> None:
    timings, roomy = probe(), budget(600.0)
    plan = make_plan(timings, SHAPE, roomy, spent=12.0)
    trial0 = trial_seconds(timings, SHAPE)
    assert plan.trial0 == pytest.approx(trial0)
    assert plan.later == pytest.approx(trial_seconds(timings, SHAPE, first=False) + TRIAL_SECONDS)
    # The final stage's share is what the budget reserves once trial 0 has completed.
    after = budget(600.0)
    after.record(Best(0.9, 0, {}, None), trial0, build_seconds(timings))
    assert plan.final == pytest.approx(after.reserve())
    assert plan.final > TEST_SECONDS
    # A tested model needs trial 0 and its test; the whole final stage, its reserve too.
    assert plan.needed == pytest.approx(12.0 + trial0 + TRIAL_SECONDS + TEST_SECONDS)
    assert plan.whole == pytest.approx(12.0 + trial0 + TRIAL_SECONDS + plan.final)
    assert plan.fits and plan.complete
    assert plan.trials() == int((600.0 - plan.whole) // plan.later)  # one member: whole = final
    assert "retraining (1 model)" in plan.final_parts
    assert plan.smallest() % 10 == 0 and plan.needed <= plan.smallest() < plan.needed + 10
    assert plan.whole <= plan.smallest(whole=True) < plan.whole + 10
    tight = make_plan(timings, SHAPE, budget(plan.smallest() - 10.0), spent=12.0)
    assert not tight.fits and tight.trials() == 0
    text = refusal(tight)
    assert f"search.timeout={plan.smallest() - 10} is too small" in text
    assert f"Give search.timeout={plan.smallest()} or more ({plan.smallest(whole=True)} for" in text
    # Trial 0 and its test fit, the retraining not: it runs, and the plan says what is skipped.
    short = make_plan(timings, SHAPE, budget(plan.whole - 1.0), spent=12.0)
    assert short.fits and not short.complete and short.trials() == 0
    said = "\n".join(plan_lines(short, val_images=200, patience=None))
    assert "does not fit whole after trial 0" in said
    assert f"search.timeout={plan.smallest(whole=True)} gives the whole final stage" in said
    assert "does not fit whole" not in "\n".join(plan_lines(plan, 200, None))
    # A resumed study with a model needs no trial 0: only the test must fit.
    resumed = make_plan(timings, SHAPE, budget(plan.smallest() - 10.0), 12.0, has_model=True)
    assert resumed.fits and resumed.needed == pytest.approx(12.0 + TEST_SECONDS)
    assert resumed.whole == pytest.approx(12.0 + plan.final)


def test_with_auto_members_the_plan_reserves_them_and_the_smallest_whole_budget_one() -> None:
    """final.retrain_seeds=auto: the final stage's share holds as many retrained models as half
    the budget does (up to final.ensemble), and the search gets what is left; the whole final
    stage needs only one, so the smallest budget named for it is the one-model budget's."""
    timings = probe()
    one, auto = (make_plan(timings, SHAPE, budget(600.0, m), spent=12.0) for m in (1, None))
    after = budget(600.0, None)
    after.record(Best(0.9, 0, {}, None), auto.trial0, build_seconds(timings))
    each = after.retrain_seconds(after.completed[0])
    members = after.retrained(each)
    assert 1 < members <= 5 and members == min(5, int(0.5 * 600.0 // each))
    assert f"retraining ({members} models)" in auto.final_parts
    assert (
        auto.final
        == pytest.approx(after.reserve())
        == pytest.approx(one.final + (members - 1) * each)
    )
    assert auto.whole == pytest.approx(one.whole)  # one model is the whole final stage's least
    assert auto.searching == pytest.approx(one.searching - (members - 1) * each)
    assert auto.trials() < one.trials()


def test_the_printed_plan_says_each_stage_and_what_to_watch() -> None:
    plan = make_plan(probe(), SHAPE, budget(600.0), spent=12.0)
    lines = plan_lines(plan, val_images=200, patience=10)
    text = "\n".join(lines)
    assert f"trial 0 about {plan.trial0:.0f}s" in text
    assert f"about {plan.trials()} more trials like trial 0" in text
    assert f"the final stage {plan.final:.0f}s" in text
    assert "with an augmentation preset" in text and "search.patience" in text
    assert "2.1 points (one standard error at 0.90 on 200 validation images)" in text
    assert all(line.startswith("plan: ") for line in lines)


def test_a_staged_searchs_screen_has_its_line_and_leaves_fewer_two_phase_trials() -> None:
    plan = dataclasses.replace(make_plan(probe(), SHAPE, budget(600.0), spent=12.0), screen=60.0)
    lines = plan_lines(plan, val_images=200, patience=10)
    assert plan.trials() == int((plan.searching - 60.0) // plan.later)
    assert any("about 60s go first to a screen of head configurations" in x for x in lines)
    one_stage = make_plan(probe(), SHAPE, budget(600.0), spent=12.0)
    assert not any("screen" in x for x in plan_lines(one_stage, 200, 10))


def test_reserve_after_is_the_reserve_once_a_first_trial_completed() -> None:
    planned, real = budget(600.0), budget(600.0)
    real.record(Best(0.9, 0, {}, None), 30.0, cache_build=10.0)
    assert planned.reserve_after(30.0, 10.0) == pytest.approx(real.reserve())
    assert planned.reserve() == 0.0 and not planned.completed  # the budget itself is untouched


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: 'dir' or the file's SHA-256."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            state[os.path.join(dirpath, name)] = "dir"
        for name in filenames:
            path = Path(dirpath, name)
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.mark.slow
def test_a_budget_too_small_is_refused_before_anything_is_created(tmp_path) -> None:
    """As a user runs it: exit 2, one paragraph naming search.timeout and the smallest budget
    that fits, and the output folder as it was (no optuna.db, mlflow.db, feature cache)."""
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    weights = ROOT.parent / "shared" / "data" / "keras-weights" / "mobilenet_2_5_224_tf_no_top.h5"
    if not weights.exists():
        pytest.skip(f"{weights} is not here")
    (keras_home / "models" / weights.name).write_bytes(weights.read_bytes())
    # A Keras home in use holds keras.json (Keras writes it at its first import, not the sweep).
    (keras_home / "keras.json").write_text(
        '{"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow", '
        '"image_data_format": "channels_last"}'
    )
    out = tmp_path / "runs"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    before = snapshot(tmp_path)
    done = run_cli(
        "search.run", "+sweep=transfer", *TINY_TRANSFER, f"output_dir={out}",
        f"keras_home={keras_home}", "search.timeout=5",
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and done.stderr.count("sweeplab: error: ") == 1, output
    (paragraph,) = [line for line in done.stderr.splitlines() if "sweeplab: error:" in line]
    assert "search.timeout=5 is too small" in paragraph
    smallest = int(re.search(r"Give search.timeout=(\d+) or more", paragraph).group(1))
    assert smallest > 5 and smallest % 10 == 0
    assert snapshot(tmp_path) == before, output  # nothing created, nothing changed
    assert not (out / "optuna.db").exists() and not (out / "mlflow.db").exists()


@pytest.mark.slow
def test_a_resumed_study_with_a_model_is_not_refused(tmp_path, monkeypatch, capsys) -> None:
    """Its model exists: a budget too small for a trial 0 still ends with the study's model
    tested (no trial fits), where a new study is refused."""
    make_keras_home(tmp_path, monkeypatch)
    first = transfer_config(tmp_path, "search.n_trials=1", "search.workers=0", "final.top_k=0")
    sweep(first)
    capsys.readouterr()
    again = transfer_config(
        tmp_path, "search.n_trials=3", "search.workers=0", "final.top_k=0", "search.timeout=1"
    )
    summary = sweep(again)
    out = capsys.readouterr().out
    assert "the study has a model already" in out and "is too small" not in out
    assert summary.final is not None and "test_accuracy" in summary.final.metrics
    # Nothing else fits: a trial that started is stopped by the budget at its first epoch end.
    assert summary.finished_trials == 1 or "stopped by the budget" in out


@pytest.mark.slow
@pytest.mark.timing  # `make bench-plan`: wall-clock against wall-clock moves with a shared machine's load
def test_the_plan_matches_what_ran(tmp_path, monkeypatch, capsys) -> None:
    """A roomy budget, every trial like trial 0 (its activations cached): trial 0's seconds and
    the number of trials come within 25 % of the plan printed before trial 0."""
    make_keras_home(tmp_path, monkeypatch)
    plans: list[Plan] = []
    original = preflight_module.make_plan

    def keep(*args, **kwargs) -> Plan:
        plans.append(original(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(preflight_module, "make_plan", keep)
    cfg = transfer_config(
        tmp_path, "search.n_trials=100", "search.timeout=120", "search.pruner=none",
        "search.patience=null", "search.variants=[]", "~space.train", "~space.data",
        "~space.model", "final.top_k=0", "final.retrain=false", "final.ensemble=1",
        "final.register=false", "search.staged.enabled=false",
    )  # fmt: skip
    summary = sweep(cfg)
    out = capsys.readouterr().out
    (plan,) = plans
    assert f"about {plan.trials()} more trials like trial 0" in out
    trial0 = float(re.search(r"trial +0 +val_accuracy=\S+ +([\d.]+)s", out).group(1))
    planned_trials = 1 + plan.trials()
    report = (
        f"trial 0 planned {plan.trial0:.1f}s, ran {trial0:.1f}s; trials planned "
        f"{planned_trials} ({plan.later:.1f}s each after trial 0), ran "
        f"{summary.finished_trials}; probe {plan.probe:.1f}s\n{out}"
    )
    print(report.splitlines()[0])  # the figures, with pytest -s
    assert abs(trial0 - plan.trial0) <= 0.25 * trial0, report
    assert abs(summary.finished_trials - planned_trials) <= 0.25 * planned_trials, report
