"""One space, two translators: Optuna's `suggest` and Keras Tuner's `HyperParameters` agree.

For every space file in conf/space/ (globbed, so new spaces are covered) and for a synthetic space
with what the shipped files lack (conditions, int log, bools, None, uneven steps), compare the
distributions a real Optuna trial records with the Keras Tuner hyperparameters: names, types,
bounds, steps, log flags, choices, grids, conditions and which entries are active.
"""

from __future__ import annotations

import random

import optuna
import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from experiments.errors import UserInputError
from search.engines.keras_tuner.translation import decode, encode, params_of, to_hyperparameters
from search.engines.optuna.engine import suggest
from search.space.spec import Param, parse_space

SPACE_FILES = sorted(p.stem for p in (CONF_DIR / "space").glob("*.yaml"))

# What the shipped spaces may not exercise; the keys exist in the default config.
RICH_SPACE = {
    "model": {
        "conv_blocks": {"type": "int", "low": 1, "high": 3},
        "filter_growth": {
            "type": "int",
            "low": 1,
            "high": 2,
            "when": {"model.conv_blocks": [2, 3]},
        },
        "batch_norm": {"type": "categorical", "choices": [True, False]},
        "kernel_size": {
            "type": "int",
            "low": 2,
            "high": 7,
            "step": 2,  # grid 2, 4, 6: the top is the last grid point
            "when": {"model.batch_norm": [True], "model.conv_blocks": [3]},
        },
        "dropout": {"type": "float", "low": 0.0, "high": 0.55, "step": 0.1},
        "dense_units": {"type": "int", "low": 16, "high": 256, "log": True},
        "filters": {"type": "categorical", "choices": [None, 8, 16.5, "wide"]},
    },
    "optimizer": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    },
    "train": {"batch_size": {"type": "categorical", "choices": [32.0, 64.0]}},
}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def space_of(name: str) -> list[Param]:
    """Parse conf/space/NAME.yaml against a config that has its keys: the model that selects it
    by default (its model may differ from the default), or any model with space=NAME."""
    candidates = [
        [f"model={model.stem}", f"space={name}"]
        for model in sorted((CONF_DIR / "model").glob("*.yaml"))
    ]
    errors = []
    for overrides in candidates:
        cfg = _compose(overrides)
        try:
            return parse_space(cfg.space, cfg)
        except UserInputError as err:
            errors.append(f"{overrides}: {err}")
    pytest.fail(f"space {name!r} parses under no config: {errors}")


def optuna_trials(space: list[Param], seed: int = 0) -> list[tuple[dict, dict]]:
    """(sampled params, distributions) of real Optuna trials: one per condition, with its parents
    forced so that each conditional entry is active once, plus random ones."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    forced = [_activating(p, space) for p in space if p.when] + [{}] * 25
    trials = []
    for values in forced:
        if values:
            study.enqueue_trial(values, skip_if_exists=False)
        trial = study.ask()
        trials.append((suggest(trial, space), dict(trial.distributions)))
        study.tell(trial, 0.0)
    return trials


def _activating(p: Param, space: list[Param]) -> dict:
    by_name = {q.name: q for q in space}
    values: dict = {}
    for parent, allowed in p.when.items():
        values.update(_activating(by_name[parent], space))
        values[parent] = allowed[0]
    return values


def check_agreement(space: list[Param]) -> None:
    hps = to_hyperparameters(space)
    kt_params = {hp.name: hp for hp in hps.space}
    by_name = {p.name: p for p in space}
    assert list(kt_params) == [p.name for p in space]  # names, each declared once, parents first

    seen: dict[str, object] = {}
    for sampled, distributions in optuna_trials(space):
        assert set(sampled) == set(distributions)
        seen.update(distributions)
        # Conditions: what Optuna suggested is exactly what Keras Tuner considers active.
        values = hps.copy()
        values.values = {name: encode(by_name[name], v) for name, v in sampled.items()}
        assert {n for n, hp in kt_params.items() if values.is_active(hp)} == set(sampled)
        assert params_of(values.values, space) == sampled
    assert set(seen) == set(kt_params), "some entry was never active in Optuna"

    for name, dist in seen.items():
        p, hp = by_name[name], kt_params[name]
        assert {c.name: [decode(by_name[c.name], v) for v in c.values] for c in hp.conditions} == {
            k: list(v) for k, v in p.when.items()
        }
        _check_distribution(p, hp, dist)


def _check_distribution(p: Param, hp, dist) -> None:
    kind = type(hp).__name__
    if isinstance(dist, CategoricalDistribution):
        assert kind == "Choice"
        assert [decode(p, v) for v in hp.values] == list(dist.choices)
        return
    assert kind == ("Int" if isinstance(dist, IntDistribution) else "Float")
    assert isinstance(dist, IntDistribution | FloatDistribution)
    assert hp.sampling == ("log" if dist.log else "linear")
    assert hp.min_value == pytest.approx(dist.low)
    assert hp.max_value == pytest.approx(dist.high, rel=1e-5)
    if dist.log:
        assert hp.step is None  # Keras Tuner would read a log step as a factor
    elif dist.step is not None:
        assert hp.step == pytest.approx(dist.step)
        grid = [
            dist.low + k * dist.step for k in range(round((dist.high - dist.low) / dist.step) + 1)
        ]
        assert list(hp.values) == pytest.approx(grid)  # the top grid point included
    # Everything Keras Tuner can propose is in Optuna's support, the extremes included.
    rng = random.Random(0)
    for prob in [0.0, 0.999999, *(rng.random() for _ in range(200))]:
        value = decode(p, hp.prob_to_value(prob))
        assert dist._contains(dist.to_internal_repr(value)), (p.name, value)


@pytest.mark.parametrize("name", SPACE_FILES)
def test_translators_agree_on_every_space_file(name: str) -> None:
    check_agreement(space_of(name))


def test_translators_agree_on_conditions_logs_steps_and_odd_choices() -> None:
    check_agreement(parse_space(RICH_SPACE, _compose([])))


def test_hyperband_values_never_become_params() -> None:
    space = space_of("cnn")
    values = {p.name: (p.choices[0] if p.choices else p.low) for p in space}
    values.update(
        {"tuner/epochs": 2, "tuner/initial_epoch": 0, "tuner/bracket": 1, "tuner/round": 0}
    )
    assert list(params_of(values, space)) == [p.name for p in space]
