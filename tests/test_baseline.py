"""Baseline first: trial 0 of a new study is the base config's own values, in both engines, and
a continued study does not run it again. Real training (tiny CNN on real digits), real storage."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from test_sweep import runs_of
from transfer_helpers import transfer_config

from experiments.errors import UserInputError
from search.config.study import study_name
from search.engines.keras_tuner import KerasTunerEngine
from search.space.baseline import baseline, fits
from search.space.spec import Param, parse_space
from search.sweep import prepare, sweep

NO_MODELS = "tracking.log_models=false"
# TINY's dense_units=16 is not among the CNN space's choices; 32 is, so the base is a point of it.
IN_SPACE = "model.dense_units=32"


def base_values(cfg) -> dict:
    """The base config's value of every space key, read straight from the config."""
    return {
        name: OmegaConf.select(cfg, name)
        for name in ("optimizer.learning_rate", "model.conv_blocks", "model.filters")
    } | {"model.dropout": cfg.model.dropout, "model.dense_units": cfg.model.dense_units}


def test_optuna_trial_0_is_the_base_config_and_is_not_queued_again(make_config, capsys) -> None:
    cfg = make_config("search.n_trials=2", NO_MODELS, IN_SPACE, "optimizer.learning_rate=0.004")
    summary = sweep(cfg)
    assert "trial 0 of this new study: the base config's own values" in capsys.readouterr().out
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    first, second = study.trials
    assert first.params == pytest.approx(base_values(cfg))
    assert first.user_attrs["baseline"] is True and "baseline" not in second.user_attrs
    assert second.params != first.params  # the sampler's own proposal

    more = make_config("search.n_trials=4", NO_MODELS, IN_SPACE, "optimizer.learning_rate=0.004")
    sweep(more)  # the same study, continued
    assert "trial 0 of this new study" not in capsys.readouterr().out
    trials = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage).trials
    assert len(trials) == 4
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]
    assert all(t.params != first.params for t in trials[1:])


def test_a_base_value_outside_the_space_is_not_enqueued(make_config, capsys) -> None:
    # learning_rate 0.05 lies above the space's high end (0.01): the base is not a point of it.
    cfg = make_config("search.n_trials=1", NO_MODELS, IN_SPACE, "optimizer.learning_rate=0.05")
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "no baseline trial: the base config's optimizer.learning_rate=0.05" in out
    assert "accepted: float 0.0003..0.01 log" in out
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage).trials
    assert "baseline" not in trial.user_attrs
    assert 0.0003 <= trial.params["optimizer.learning_rate"] <= 0.01


@pytest.mark.parametrize("engine", ["optuna", "keras_tuner"])
def test_search_baseline_false_leaves_trial_0_to_the_sampler(make_config, capsys, engine) -> None:
    """A plain search (random search as a reference): no base config queued, in either engine."""
    overrides = [NO_MODELS, IN_SPACE, "optimizer.learning_rate=0.004", "search.baseline=false"]
    if engine == "keras_tuner":
        overrides += ["search=keras_tuner", "search.tuner=random"]
    else:
        overrides += ["search.sampler=random"]
    cfg = make_config("search.n_trials=2", *overrides)
    summary = sweep(cfg)
    assert "trial 0 of this new study: the sampler's own draw" in capsys.readouterr().out
    (first, *_) = sorted(
        runs_of(cfg, "trial"), key=lambda r: int(r.data.tags["sweeplab.trial_number"])
    )
    drawn = float(first.data.params["optimizer.learning_rate"])
    assert drawn != 0.004  # the base value; a random float draw equal to it: practically never
    if engine == "optuna":
        study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
        assert not any("baseline" in t.user_attrs for t in study.trials)


@pytest.mark.parametrize("value", ["5", "maybe", "[true]"])
def test_a_search_baseline_that_is_not_a_boolean_is_refused(make_config, value) -> None:
    cfg = make_config(f"search.baseline={value}")
    with pytest.raises(UserInputError, match=r"search\.baseline=.* must be true"):
        sweep(cfg)


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_keras_tuner_first_trial_is_the_base_config(make_config, capsys, tuner) -> None:
    overrides = ["search=keras_tuner", f"search.tuner={tuner}", NO_MODELS, IN_SPACE]
    cfg = make_config("search.n_trials=2", "optimizer.learning_rate=0.004", *overrides)
    sweep(cfg)
    assert "trial 0 of this new study" in capsys.readouterr().out
    prepared = prepare(cfg)
    engine = KerasTunerEngine(prepared, parse_space(cfg.space, cfg), study_name(prepared))
    assert "trial 0 of this new study" not in capsys.readouterr().out  # continued: not again
    trials = sorted(engine.oracle.trials.values(), key=lambda t: int(t.trial_id))
    values = [{k: v for k, v in t.hyperparameters.values.items() if "/" not in k} for t in trials]
    assert values[0] == pytest.approx(base_values(cfg))
    assert all(v != values[0] for v in values[1:])
    # The continued project proposes from the oracle again, not the defaults.
    proposed = engine.oracle._random_values()
    assert proposed != values[0]


def test_fits_reads_ranges_steps_and_choices() -> None:
    stepped = Param("model.dropout", "float", low=0.0, high=0.5, step=0.05)
    assert fits(stepped, 0.25) and fits(stepped, 0) and not fits(stepped, 0.26)
    assert not fits(stepped, 0.55) and not fits(stepped, None) and not fits(stepped, True)
    ints = Param("model.conv_blocks", "int", low=1, high=3, step=1)
    assert fits(ints, 2) and not fits(ints, 2.5) and not fits(ints, 4)
    choice = Param("model.filters", "categorical", choices=(8, 16))
    assert fits(choice, 16) and not fits(choice, 32)
    flags = Param("model.batch_norm", "categorical", choices=(False, True))
    assert fits(flags, True) and not fits(Param("x", "categorical", choices=(0, 1)), True)


def test_baseline_holds_only_active_keys(tmp_path) -> None:
    cfg = transfer_config(tmp_path, "model.input_size=96", "space=transfer_wide")  # a size of it
    base = baseline(parse_space(cfg.space, cfg), cfg)
    assert base.usable
    assert base.values["model.alpha"] == 0.25 and base.values["model.backbone"] == "mobilenet"
    cfg.model.backbone = "efficientnetb0"  # not in the space's choices
    assert baseline(parse_space(cfg.space, cfg), cfg).outside == [
        "model.backbone='efficientnetb0' (accepted: 'mobilenet')"
    ]
