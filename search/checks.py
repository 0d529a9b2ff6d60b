"""`check_config`: every check of a sweep config, run once before anything is created.

The sweep (`search.sweep`), the cluster launch (`search.cluster.checks`, in the process that
submits the jobs) and `python -m search.rerun` (on the logged trial config) call this one
function, so a value refused by one is refused by all three, and a bad value fails once, in a
second, instead of inside every queued job or trial. It imports no TensorFlow: the table and
the structural checks read the config only, Optuna's sampler and pruner are built (cheap, no
trial), and the model checks read weights files without Keras.

What runs, in order:
1. the space's own grammar (`search.space.spec.parse_space`: types, bounds, steps, `when`);
2. the table (`search.config.rules`): every key's value, and every value the space can produce;
3. what is not one key's value: `search.variants`, objectives, the champion rule
   (`final.select`), the final stage's formats and seeds, worker combinations, the Optuna
   sampler and pruner classes and options;
4. (`models=True`) every model the space can sample can be built (`search.config.models`): the
   sweep runs this later itself, once its output folder exists, because it may download a
   missing weights file.
The stores (folders, SQLite files, servers) are checked apart (`search.config.stores`): a
cluster launch cannot see its workers' disks, and a rerun creates no store.
"""

from __future__ import annotations

from omegaconf import DictConfig

from search.config.models import check_models
from search.config.rules import check_values
from search.execution.pool import worker_settings
from search.final.champion_rule import rule_of
from search.final.stage import check_final_config
from search.space.spec import Param, parse_space
from search.space.variants import check_variants
from search.trials.objectives import check_objectives


def check_config(cfg: DictConfig, *, models: bool = True) -> list[Param]:
    """Raise `UserInputError` (one paragraph) for the first value or setting no trial could use;
    return the parsed search space."""
    space = parse_space(cfg.space, cfg)
    check_values(cfg, space)  # the table: fixed values and every value the space can produce
    check_variants(cfg)
    check_objectives(cfg)
    rule_of(cfg)  # final.select
    check_final_config(cfg)
    worker_settings(cfg)  # combinations: search.workers with the engine and trial_timeout
    check_engine_settings(cfg, space)
    if models:
        check_models(cfg, space)
    return space


def check_engine_settings(cfg: DictConfig, space: list[Param]) -> None:
    """The engine's own settings that are classes, not values: Optuna's sampler and pruner are
    built once from their nodes (a name not in search.samplers, a `_target_` that is not an
    Optuna class, an option the class refuses). Keras Tuner's settings are rows of the table."""
    if str(cfg.search.engine) != "optuna":
        return
    from search.engines.optuna.algorithms import make_pruner, make_sampler

    make_sampler(cfg.search, space)
    make_pruner(cfg.search)
