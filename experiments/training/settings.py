"""A trial's settings parsed once, at the edge of experiments/ (run_trial), into the typed
values the layers below need: the feature cache's and the augmentation with its preset resolved.

The config travels as the trial's identity (its YAML is logged, re-run and diffed); what the
model, the cache and the input pipeline read from it is parsed here and handed down, instead of
each of them re-reading and re-resolving the raw config (four and five times a trial before).
Values are checked before any trial by the sweep's rules table (search/config/rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from experiments.data.augment_options import resolve_preset
from experiments.models.cache_settings import CacheSettings, cache_settings


@dataclass(frozen=True)
class TrialSettings:
    """What the layers of one trial read, parsed from its config once."""

    cache: CacheSettings
    augmentation: dict[str, Any]  # data.augmentation, its preset expanded (empty: off)


def trial_settings(cfg: DictConfig) -> TrialSettings:
    """The settings of the trial `cfg` describes."""
    return TrialSettings(
        cache=cache_settings(cfg),
        augmentation=resolve_preset(cfg.data.get("augmentation")),
    )
