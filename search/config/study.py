"""What identifies a study (its name and the fingerprint of what defines a trial).

The values a sweep config must have are the rows of search/config/rules.py.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from search.space.spec import flatten_space

# The parts of the config that define what a trial is. The budget (search.n_trials, timeout),
# the storage and the tracking settings are left out: changing them continues the same study.
TRIAL_DEFINING_KEYS = ("data", "model", "optimizer", "train", "space", "seed")


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
