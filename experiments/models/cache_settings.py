"""`model.feature_cache`: whether and where a transfer trial caches its frozen activations.

No Keras here. The values are rows of the sweep's config table (search/config/rules.py) and the
folder is checked with the stores (search/config/stores.py), all before any data is loaded, so a
bad value stops the sweep with exit 2 instead of failing trials. The cache itself is
experiments/training/feature_cache.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

DEFAULT_MAX_GB = 5
DEFAULT_AUGMENTED_COPIES = 4


@dataclass(frozen=True)
class CacheSettings:
    """`model.feature_cache` parsed once a trial (experiments.training.settings)."""

    enabled: bool
    folder: Path
    max_bytes: int
    augmented_copies: int  # K fixed augmented passes for an augmented phase 1 (0: uncached)


def cache_settings(cfg: DictConfig) -> CacheSettings:
    """`model.feature_cache` of `cfg` (each value a row of the sweep's config table,
    search/config/rules.py; the folder is checked with the stores)."""
    options = cfg.model.get("feature_cache") or {}
    folder = options.get("dir") or Path(str(cfg.get("output_dir") or "runs")) / "feature_cache"
    return CacheSettings(
        enabled=bool(options.get("enabled", False)),
        folder=Path(str(folder)).expanduser().resolve(),
        max_bytes=int(float(options.get("max_gb", DEFAULT_MAX_GB)) * 1e9),
        augmented_copies=int(options.get("augmented_copies", DEFAULT_AUGMENTED_COPIES)),
    )
