"""`model.feature_cache`: whether and where a transfer trial caches its frozen activations.

No Keras here. The values are rows of the sweep's config table (search/config/rules.py) and the
folder is checked with the stores (search/config/stores.py), all before any data is loaded, so a
bad value stops the sweep with exit 2 instead of failing trials. The cache itself is
experiments/training/feature_cache.py.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

DEFAULT_MAX_GB = 5
DEFAULT_AUGMENTED_COPIES = 4


def settings(cfg: DictConfig) -> tuple[bool, Path, int]:
    """(enabled, folder, max bytes) from `model.feature_cache` (each value a row of the sweep's
    config table, search/config/rules.py; the folder is checked with the stores)."""
    options = cfg.model.get("feature_cache") or {}
    enabled = options.get("enabled", False)
    max_gb = options.get("max_gb", DEFAULT_MAX_GB)
    folder = options.get("dir") or Path(str(cfg.get("output_dir") or "runs")) / "feature_cache"
    return enabled, Path(str(folder)).expanduser().resolve(), int(float(max_gb) * 1e9)


def augmented_copies(cfg: DictConfig) -> int:
    """`model.feature_cache.augmented_copies`: K fixed augmented passes for an augmented phase 1
    (0: augmented trials run uncached)."""
    options = cfg.model.get("feature_cache") or {}
    return options.get("augmented_copies", DEFAULT_AUGMENTED_COPIES)
