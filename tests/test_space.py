"""The backend-neutral search space: parsing, validation and applying sampled values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments.errors import UserInputError
from search.space import Param, apply_params, flatten_space, parse_space


@pytest.fixture
def base(make_config):
    return make_config()


def test_space_files_parse_into_typed_params(base) -> None:
    params = {p.name: p for p in parse_space(base.space, base)}
    lr = params["optimizer.learning_rate"]
    assert (lr.kind, lr.log, lr.step) == ("float", True, None)
    assert params["model.conv_blocks"] == Param("model.conv_blocks", "int", low=1, high=2, step=1)
    assert params["model.filters"].choices == (8, 16, 32)
    assert params["model.dropout"].step == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "uniform", "low": 0, "high": 1}, "type 'uniform'; accepted types: float, int"),
        ({"type": "float", "low": 0.5, "high": 0.5}, "low=0.5 >= high=0.5"),
        ({"type": "float", "low": 0.9, "high": 0.1}, "low=0.9 >= high=0.1"),
        ({"type": "float", "low": 0.0, "high": 0.5, "log": True}, "log scale needs low > 0"),
        ({"type": "int", "low": -1, "high": 4, "log": True}, "log scale needs low > 0"),
        ({"type": "categorical", "choices": []}, "non-empty list of `choices`"),
        ({"type": "float", "low": 0.1}, "needs `low` and `high`"),
        ({"type": "int", "low": 1.5, "high": 4}, "not integers"),
        ({"type": "float", "low": 0.0, "high": 1.0, "stepp": 0.1}, "unknown key(s) ['stepp']"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 2.0}, "step=2.0"),
        ({"low": 0, "high": 1}, "type None"),
    ],
)
def test_bad_space_entries_name_the_value(base, spec, message) -> None:
    with pytest.raises(UserInputError) as err:
        parse_space({"model.dropout": spec}, base)
    assert "model.dropout" in str(err.value)
    assert message in str(err.value)


def test_key_that_is_not_a_config_path(base) -> None:
    with pytest.raises(UserInputError, match="'model.dropuot' is not a config path"):
        parse_space({"model.dropuot": {"type": "float", "low": 0, "high": 1}}, base)


def test_empty_space(base) -> None:
    with pytest.raises(UserInputError, match="search space is empty"):
        parse_space({}, base)


def test_conditions_order_parents_first_and_reject_unknown_parents(base) -> None:
    space = {
        "model.dense_units": {
            "type": "int",
            "low": 8,
            "high": 64,
            "when": {"model.conv_blocks": 2},
        },
        "model.conv_blocks": {"type": "int", "low": 1, "high": 2},
    }
    params = parse_space(space, base)
    assert [p.name for p in params] == ["model.conv_blocks", "model.dense_units"]
    assert params[1].is_active({"model.conv_blocks": 2})
    assert not params[1].is_active({"model.conv_blocks": 1})
    with pytest.raises(UserInputError, match="depends on 'model.kernel_size'"):
        parse_space(
            {
                "model.dropout": {
                    "type": "float",
                    "low": 0,
                    "high": 1,
                    "when": {"model.kernel_size": [3]},
                }
            },
            base,
        )


def test_nested_and_dotted_forms_are_the_same_space() -> None:
    nested = {"model": {"dropout": {"type": "float", "low": 0, "high": 1}}}
    assert flatten_space(nested) == {"model.dropout": {"type": "float", "low": 0, "high": 1}}


def test_apply_params_is_pure_and_overrides_dotted_paths(base) -> None:
    before = OmegaConf.to_yaml(base)
    trial = apply_params(base, {"optimizer.learning_rate": 0.005, "model.conv_blocks": 1})
    assert trial.optimizer.learning_rate == 0.005 and trial.model.conv_blocks == 1
    assert OmegaConf.to_yaml(base) == before
    assert trial.data == base.data
