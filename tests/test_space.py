"""The backend-neutral search space: parsing, validation and applying sampled values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments.errors import UserInputError
from search.space.apply import active_values, apply_params
from search.space.spec import Param, flatten_space, parse_space


@pytest.fixture
def base(make_config):
    return make_config()


def test_space_files_parse_into_typed_params(base) -> None:
    params = {p.name: p for p in parse_space(base.space, base)}
    lr = params["optimizer.learning_rate"]
    assert (lr.kind, lr.log, lr.step) == ("float", True, None)
    assert params["model.conv_blocks"] == Param("model.conv_blocks", "int", low=1, high=2, step=1)
    assert params["model.filters"].choices == (8, 16, 32)
    assert params["model.dropout"].step == pytest.approx(0.05)  # the base 0.25 is on the grid


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
        parse_space({"model": {"dropout": spec}}, base)
    assert "model.dropout" in str(err.value)
    assert message in str(err.value)


def test_key_that_is_not_a_config_path(base) -> None:
    with pytest.raises(UserInputError, match="'model.dropuot' is not a config path"):
        parse_space({"model": {"dropuot": {"type": "float", "low": 0, "high": 1}}}, base)


def test_empty_space(base) -> None:
    with pytest.raises(UserInputError, match="search space is empty"):
        parse_space({}, base)


def test_conditions_order_parents_first_and_reject_unknown_parents(base) -> None:
    space = {
        "model": {
            "dense_units": {
                "type": "int",
                "low": 8,
                "high": 64,
                "when": {"model.conv_blocks": 2},
            },
            "conv_blocks": {"type": "int", "low": 1, "high": 2},
        }
    }
    params = parse_space(space, base)
    assert [p.name for p in params] == ["model.conv_blocks", "model.dense_units"]
    assert params[1].is_active({"model.conv_blocks": 2})
    assert not params[1].is_active({"model.conv_blocks": 1})
    with pytest.raises(UserInputError, match="depends on 'model.kernel_size'"):
        parse_space(
            {
                "model": {
                    "dropout": {
                        "type": "float",
                        "low": 0,
                        "high": 1,
                        "when": {"model.kernel_size": [3]},
                    }
                }
            },
            base,
        )


def test_nested_entries_are_named_by_their_dotted_path() -> None:
    spec = {"type": "float", "low": 0, "high": 1}
    nested = {"model": {"dropout": spec, "fine": {"tune": {"low": 1}}}, "empty": {}}
    assert flatten_space(nested) == {"model.dropout": spec, "model.fine.tune": {"low": 1}}


def test_dotted_keys_are_refused_with_the_nested_form(base) -> None:
    """One form: a dotted key could not be changed from the command line."""
    spec = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    with pytest.raises(UserInputError) as err:
        parse_space({"optimizer.learning_rate": spec}, base)
    message = str(err.value)
    assert "'optimizer.learning_rate' is written with dots" in message
    assert "optimizer: {learning_rate: {type: ...}}" in message
    assert "space.optimizer.learning_rate.high=" in message


def test_a_value_that_is_no_spec_is_named_by_its_full_path(base) -> None:
    with pytest.raises(UserInputError, match="'model.dropout' must be a mapping with a `type`"):
        parse_space({"model": {"dropout": 0.3}}, base)
    with pytest.raises(UserInputError, match="name each parent by its dotted path"):
        parse_space(
            {
                "model": {
                    "conv_blocks": {"type": "int", "low": 1, "high": 2},
                    "dropout": {
                        "type": "float",
                        "low": 0,
                        "high": 1,
                        "when": {"model": {"conv_blocks": [2]}},
                    },
                }
            },
            base,
        )


def test_command_line_changes_adds_and_removes_entries(make_config) -> None:
    cfg = make_config(
        "space.optimizer.learning_rate.high=0.1",
        "space.model.conv_blocks.high=3",
        "+space.model.kernel_size={type:int,low:3,high:7,step:2,when:{model.conv_blocks:[3]}}",
        "~space.model.dropout",
    )
    params = {p.name: p for p in parse_space(cfg.space, cfg)}
    assert params["optimizer.learning_rate"] == Param(
        "optimizer.learning_rate", "float", low=0.0003, high=0.1, log=True
    )
    assert params["model.conv_blocks"].high == 3
    assert params["model.kernel_size"] == Param(
        "model.kernel_size", "int", low=3, high=7, step=2, when={"model.conv_blocks": (3,)}
    )
    assert "model.dropout" not in params
    assert list(params)[-1] == "model.kernel_size"  # after its parent


def test_replacing_an_entry_with_another_type_says_how(make_config) -> None:
    cfg = make_config("+space.optimizer.learning_rate={type:categorical,choices:[0.1,0.01]}")
    with pytest.raises(UserInputError, match=r"remove it first: `~space.optimizer.learning_rate"):
        parse_space(cfg.space, cfg)
    cfg = make_config(
        "~space.optimizer.learning_rate",
        "+space.optimizer.learning_rate={type:categorical,choices:[0.1,0.01]}",
    )
    params = {p.name: p for p in parse_space(cfg.space, cfg)}
    assert params["optimizer.learning_rate"].choices == (0.1, 0.01)


def test_removing_every_entry_leaves_an_empty_space(make_config) -> None:
    cfg = make_config("~space.optimizer", "~space.model")
    with pytest.raises(UserInputError, match="search space is empty: choose one with space="):
        parse_space(cfg.space, cfg)


def test_active_values_are_what_the_trial_sampled(base) -> None:
    space = parse_space(
        {
            "model": {
                "batch_norm": {"type": "categorical", "choices": [True, False]},
                "kernel_size": {
                    "type": "int",
                    "low": 3,
                    "high": 5,
                    "when": {"model.batch_norm": [True]},
                },
            },
            "optimizer": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
        },
        base,
    )
    trial = apply_params(base, {"model.batch_norm": False, "optimizer.learning_rate": 0.002})
    assert active_values(space, trial) == {
        "model.batch_norm": False,
        "optimizer.learning_rate": 0.002,
    }
    trial = apply_params(base, {"model.batch_norm": True, "model.kernel_size": 5})
    assert active_values(space, trial)["model.kernel_size"] == 5


def test_apply_params_is_pure_and_overrides_dotted_paths(base) -> None:
    before = OmegaConf.to_yaml(base)
    trial = apply_params(base, {"optimizer.learning_rate": 0.005, "model.conv_blocks": 1})
    assert trial.optimizer.learning_rate == 0.005 and trial.model.conv_blocks == 1
    assert OmegaConf.to_yaml(base) == before
    assert trial.data == base.data


@pytest.mark.parametrize("overrides", [[], ["sweep=transfer"], ["model=branched"]])
def test_config_yaml_is_omegaconfs_text_and_reads_back_the_same(overrides, tmp_path) -> None:
    """The trial config a worker and MLflow get: OmegaConf's own text (made faster), with the
    strings that would read back as numbers, booleans or null still quoted."""
    from conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    from search.space.apply import config_yaml

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=[*overrides, f"output_dir={tmp_path}"])
    cfg = apply_params(base, {"optimizer.learning_rate": 0.004})
    OmegaConf.set_struct(cfg, False)
    cfg.data.tricky = {"float": "1e-3", "bool": "true", "int": "12", "none": None, "text": "é x"}
    text = config_yaml(cfg)
    assert text == OmegaConf.to_yaml(cfg)
    assert OmegaConf.create(text) == cfg
    assert OmegaConf.create(text).data.tricky.float == "1e-3"
