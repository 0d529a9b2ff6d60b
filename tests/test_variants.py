"""search.variants: the base config with a few values changed, tried right after trial 0 of a new
study, in both engines; a variant that is not a point of the space is not queued, and says why.
Real training (tiny CNN on real digits), real Optuna storage and Keras Tuner project."""

from __future__ import annotations

import optuna
import pytest
from test_baseline import IN_SPACE, NO_MODELS, base_values

from experiments.errors import UserInputError
from search.config.study import study_name
from search.engines.keras_tuner import KerasTunerEngine
from search.space.spec import parse_space
from search.space.variants import announce_variants, check_variants, variants
from search.sweep import prepare, sweep

BASE = "optimizer.learning_rate=0.004"
TWO_VARIANTS = (
    "search.variants=[{model.dense_units:64},"
    "{model.dense_units:128,optimizer.learning_rate:0.001},"
    "{model.dense_units:999},{model.no_such_key:1}]"
)


def test_optuna_queues_the_variants_after_trial_0_in_order(make_config, capsys) -> None:
    cfg = make_config("search.n_trials=4", NO_MODELS, IN_SPACE, BASE, TWO_VARIANTS)
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "queued after trial 0: the base config with model.dense_units=64" in out
    assert "model.dense_units=999 (accepted: 32, 64, 128)" in out
    assert "model.no_such_key (not a key of the search space)" in out
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    base, first, second, drawn = study.trials
    assert base.params == pytest.approx(base_values(cfg))
    assert first.params == pytest.approx(base_values(cfg) | {"model.dense_units": 64})
    changed = {"model.dense_units": 128, "optimizer.learning_rate": 0.001}
    assert second.params == pytest.approx(base_values(cfg) | changed)
    assert first.user_attrs["variant"] == "model.dense_units=64"
    assert "variant" not in drawn.user_attrs and "baseline" not in drawn.user_attrs
    assert drawn.params not in (base.params, first.params, second.params)

    sweep(make_config("search.n_trials=5", NO_MODELS, IN_SPACE, BASE, TWO_VARIANTS))
    assert "queued after trial 0" not in capsys.readouterr().out  # continued: not again
    trials = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage).trials
    assert [t.number for t in trials if "variant" in t.user_attrs] == [1, 2]


def test_keras_tuner_proposes_the_variants_after_the_defaults(make_config, capsys) -> None:
    overrides = ["search=keras_tuner", "search.tuner=random", NO_MODELS, IN_SPACE, BASE]
    cfg = make_config("search.n_trials=3", "search.variants=[{model.dense_units:64}]", *overrides)
    sweep(cfg)
    assert "queued after trial 0: the base config with model.dense_units=64" in (
        capsys.readouterr().out
    )
    prepared = prepare(cfg)
    engine = KerasTunerEngine(prepared, parse_space(cfg.space, cfg), study_name(prepared))
    trials = sorted(engine.oracle.trials.values(), key=lambda t: int(t.trial_id))
    values = [{k: v for k, v in t.hyperparameters.values.items() if "/" not in k} for t in trials]
    assert values[0] == pytest.approx(base_values(cfg))
    assert values[1] == pytest.approx(base_values(cfg) | {"model.dense_units": 64})
    assert values[2] not in values[:2]


@pytest.mark.parametrize(
    "bad", ["search.variants=5", "search.variants=[64]", "search.variants=[[1]]"]
)
def test_variants_that_are_not_a_list_of_mappings_are_refused(make_config, bad) -> None:
    with pytest.raises(UserInputError, match=r"is not a list of \{space key: value\} mappings"):
        check_variants(make_config(bad))


@pytest.mark.parametrize("base", ["true", "false"])
def test_variants_are_checked_against_the_space_whatever_search_baseline_says(
    make_config, base, capsys
) -> None:
    """search.baseline=false used to turn the range check off: a variant outside the space was
    queued (Optuna trained it, Keras Tuner got it as an out-of-range default)."""
    cfg = make_config(f"search.baseline={base}", IN_SPACE, BASE, TWO_VARIANTS)
    points = dict(variants(parse_space(cfg.space, cfg), cfg))
    assert points["model.dense_units=64"].usable
    outside = points["model.dense_units=999"]
    assert not outside.usable
    assert outside.outside == ["model.dense_units=999 (accepted: 32, 64, 128)"]
    assert not points["model.no_such_key=1"].usable
    announce_variants(list(points.items()))
    assert "variant model.dense_units=999 not queued" in capsys.readouterr().out
