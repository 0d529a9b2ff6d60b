"""What identifies a study, and the checks a sweep config must pass before any training."""

from __future__ import annotations

import hashlib
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from search.space.spec import flatten_space

# The parts of the config that define what a trial is. The budget (search.n_trials, timeout),
# the storage and the tracking settings are left out: changing them continues the same study.
TRIAL_DEFINING_KEYS = ("data", "model", "optimizer", "train", "space", "seed")
OBJECTIVES = ("val_accuracy", "val_loss")
DIRECTIONS = ("maximize", "minimize")


def trial_fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything that defines a trial (verbosity excluded)."""
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig's
    defining = {key: container.get(key) for key in TRIAL_DEFINING_KEYS}
    # train.objectives=null (the default, one objective) leaves existing study names unchanged.
    defining["train"] = {
        k: v
        for k, v in (defining["train"] or {}).items()
        if k != "verbose" and not (k == "objectives" and v is None)
    }
    # By dotted name, so a space means the same study however its YAML nests it (and studies
    # created when space files used dotted keys keep their names).
    defining["space"] = flatten_space(defining["space"] or {})
    text = OmegaConf.to_yaml(OmegaConf.create(defining), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def study_name(cfg: DictConfig) -> str:
    """`search.study_name` when given, else `<sweep_name>-<fingerprint>`."""
    explicit = cfg.search.get("study_name")
    return str(explicit) if explicit else f"{cfg.sweep_name}-{trial_fingerprint(cfg)}"


def check_sweep_config(cfg: DictConfig) -> None:
    """Fail fast, before loading data or training, on values no trial could use."""
    n_trials = cfg.search.n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise UserInputError(
            f"search.n_trials={n_trials!r} is not a positive whole number; it is the study's total "
            "number of finished trials, counted across resumes: use 1 or more, e.g. "
            "search.n_trials=10."
        )
    timeout = cfg.search.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise UserInputError(
            f"search.timeout={timeout!r} must be a positive number of seconds, or null for no limit."
        )
    limit = cfg.search.get("max_consecutive_failures")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(
            f"search.max_consecutive_failures={limit!r} must be a whole number of 1 or more "
            "(failed trials in a row that stop the sweep), or null to never stop."
        )
    if cfg.train.objective not in OBJECTIVES:
        raise UserInputError(
            f"train.objective={cfg.train.objective!r} is not a validation metric that training "
            f"reports; accepted: {', '.join(OBJECTIVES)}. (The objective reads validation data only.)"
        )
    if cfg.train.direction not in DIRECTIONS:
        raise UserInputError(
            f"train.direction={cfg.train.direction!r}; accepted: {', '.join(DIRECTIONS)}."
        )
    smoothing = cfg.train.get("label_smoothing", 0.0)
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, int | float)
        or not 0 <= smoothing < 1
    ):
        # The same rule as experiments/models/losses.py, checked before any data is loaded.
        raise UserInputError(
            f"train.label_smoothing={smoothing!r} must be a number from 0 (off) up to, not "
            "including, 1 (0.1 is usual)."
        )
    epochs = cfg.train.epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserInputError(f"train.epochs={epochs!r} must be a whole number of 1 or more.")
