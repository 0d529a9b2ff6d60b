"""Optuna samplers and pruners from config: `_target_` nodes built by `hydra.utils.instantiate`.

Short names keep working (`search.sampler=random`), any Optuna sampler and option is reachable
from the command line, the seed reaches the sampler, and a bad target or option is one paragraph
naming it (exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from experiments.errors import UserInputError
from search.engines.optuna.algorithms import make_pruner, make_sampler
from search.space.spec import parse_space
from search.sweep import prepare, sweep
from tests.conftest import TINY, run_cli


def build(make_config, *overrides: str):
    cfg = prepare(make_config(*overrides))
    return make_sampler(cfg.search, parse_space(cfg.space, cfg)), make_pruner(cfg.search)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
    ],
)
def test_short_sampler_names_still_work(make_config, name, cls) -> None:
    sampler, _ = build(make_config, f"search.sampler={name}")
    assert type(sampler) is cls


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_short_pruner_names_still_work(make_config, name, cls) -> None:
    _, pruner = build(make_config, f"search.pruner={name}")
    assert type(pruner) is cls


def sample(sampler: optuna.samplers.BaseSampler, n: int = 3) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    return [study.ask().suggest_float("x", 0.0, 1.0) for _ in range(n)]


def test_the_seed_reaches_the_sampler(make_config) -> None:
    first = sample(build(make_config, "search.sampler=random", "search.seed=7")[0])
    again = sample(build(make_config, "search.sampler=random", "search.seed=7")[0])
    other = sample(build(make_config, "search.sampler=random", "search.seed=8")[0])
    assert first == again != other


def test_options_and_new_samplers_need_no_code(make_config) -> None:
    tpe, median = build(
        make_config,
        "search.samplers.tpe.n_startup_trials=3",
        "+search.samplers.tpe.constant_liar=true",
        "search.pruners.median.n_warmup_steps=4",
    )
    assert tpe._n_startup_trials == 3 and tpe._constant_liar is True
    assert median._n_warmup_steps == 4
    named, _ = build(
        make_config,
        "+search.samplers.nsga={_target_:optuna.samplers.NSGAIISampler,population_size:8}",
        "search.sampler=nsga",
    )
    assert type(named) is optuna.samplers.NSGAIISampler and named._population_size == 8
    inline, _ = build(
        make_config, "search.sampler={_target_:optuna.samplers.NSGAIISampler,population_size:6}"
    )
    assert type(inline) is optuna.samplers.NSGAIISampler and inline._population_size == 6


def test_grid_sampler_gets_its_grid_from_the_space(make_config) -> None:
    cfg = prepare(make_config("search.sampler=grid"))
    space = OmegaConf.create(
        {
            "model": {
                "filters": {"type": "categorical", "choices": [8, 16]},
                "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            }
        }
    )
    grid = make_sampler(cfg.search, parse_space(space, cfg))
    assert type(grid) is optuna.samplers.GridSampler
    assert grid._search_space == {"model.dropout": [0.0, 0.1, 0.2], "model.filters": [8, 16]}
    with pytest.raises(UserInputError, match="optimizer.learning_rate"):  # continuous: no grid
        make_sampler(cfg.search, parse_space(cfg.space, cfg))


@pytest.mark.parametrize(
    ("override", "mentions"),
    [
        ("search.sampler=annealing", ["search.sampler='annealing'", "tpe, random"]),
        ("search.samplers.tpe._target_=optuna.samplers.NoSuch", ["optuna.samplers.NoSuch"]),
        ("search.samplers.tpe._target_=optuna.pruners.MedianPruner", ["not an Optuna sampler"]),
        ("+search.samplers.tpe.warmup=3", ["search.samplers.tpe=", "TPESampler", "warmup"]),
        ("search.pruners.median.n_warmup_steps=-1", ["search.pruners.median=", "MedianPruner"]),
    ],
)
def test_bad_sampler_or_pruner_is_one_paragraph(make_config, override, mentions) -> None:
    cfg = make_config(override)
    with pytest.raises(UserInputError) as err:
        sweep(cfg)
    for mention in mentions:
        assert mention in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    assert not (Path(cfg.output_dir) / "mlflow.db").exists()
    assert not (Path(cfg.output_dir) / "optuna.db").exists()


def test_bad_target_on_the_command_line_exits_2_without_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "search.run",
        *TINY,
        f"output_dir={tmp_path}",
        "search.samplers.tpe._target_=optuna.samplers.NoSuchSampler",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("sweeplab: error: search.samplers.tpe._target_=")
    assert "optuna.samplers.NoSuchSampler" in result.stderr and "Traceback" not in result.stderr
