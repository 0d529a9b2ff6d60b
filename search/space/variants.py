"""The trials right after trial 0 of a new study: the base config with a few values changed.

Why: a budget of a few trials spends its first ones on the sampler's random start-up draws, which
on the transfer space are mostly worse than the base config (docs/benchmarks.md section 2: random
search's best was trial 0 in 3 of 3 seeds). `search.variants` lists a few hand-picked changes to
the base instead (conf/sweep/transfer.yaml: a horizontal flip, the cheap augmentation photos of
objects usually allow), so that a short sweep compares the base with them before it draws at
random. Each variant is `{space key: value}`; the other keys keep
the base config's values. Queued once, after the baseline, in a new study only (Optuna:
`enqueue_trial`; Keras Tuner: the oracle's next proposals), like the baseline itself.

A variant that is not a point of the space (a key the space does not search, a value outside its
range, a key whose `when` is not met) is not queued, whatever `search.baseline` says, and the
sweep prints why, as for the baseline: a user who narrows the space keeps a working sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.errors import UserInputError
from search.space.baseline import Baseline, point_of
from search.space.spec import Param


def check_variants(cfg: DictConfig) -> None:
    """Bad input: `search.variants` must be a list of mappings from config keys to values."""
    raw = cfg.search.get("variants")
    if raw is None:
        return
    ok = isinstance(raw, ListConfig | list) and all(
        isinstance(v, DictConfig | Mapping) and all(isinstance(k, str) for k in v) for v in raw
    )
    if not ok:
        shown = OmegaConf.to_container(raw) if isinstance(raw, DictConfig | ListConfig) else raw
        raise UserInputError(
            f"search.variants={shown!r} is not a list of {{space key: value}} mappings. Each "
            "entry is the base config with those values changed, tried right after trial 0 of "
            "a new study; for example search.variants=[{model.dense_units: 256}], or "
            "search.variants=[] for none."
        )


def variants(space: list[Param], cfg: DictConfig) -> list[tuple[str, Baseline]]:
    """Each variant as (its changes in words, its point of the space or why it is none)."""
    names = {p.name for p in space}
    points = []
    for raw in cfg.search.get("variants") or []:
        changes = cast(dict[str, Any], OmegaConf.to_container(raw))  # check_variants: a mapping
        changed = cfg.copy()
        for key, value in changes.items():
            OmegaConf.update(changed, key, value, merge=False, force_add=True)
        point = point_of(space, changed)  # checked even with search.baseline=false
        outside = list(point.outside)
        for key in changes:
            if key not in names:
                outside.append(f"{key} (not a key of the search space)")
            elif key not in point.values:
                outside.append(f"{key} (inactive: its `when` is not met)")
        words = ", ".join(f"{k}={v!r}" for k, v in changes.items())
        points.append((words, Baseline(point.values, outside)))
    return points


def announce_variants(points: list[tuple[str, Baseline]]) -> None:
    """One line per variant: queued after trial 0, or why not."""
    for words, point in points:
        if point.usable:
            print(f"queued after trial 0: the base config with {words}", flush=True)
        else:
            print(
                f"variant {words} not queued: " + "; ".join(point.outside) + " is not a point "
                "of the search space (search.variants)",
                flush=True,
            )
