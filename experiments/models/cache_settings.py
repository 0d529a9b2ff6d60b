"""`model.feature_cache`: whether and where a transfer trial caches its frozen activations.

No Keras here: the sweep's up-front check (`check_transfer_config`) validates these settings
before any data is loaded, so a bad value stops the sweep with exit 2 instead of failing trials.
The cache itself is experiments/training/feature_cache.py.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from experiments.errors import UserInputError

DEFAULT_MAX_GB = 5
DEFAULT_AUGMENTED_COPIES = 4


def settings(cfg: DictConfig) -> tuple[bool, Path, int]:
    """(enabled, folder, max bytes) from `model.feature_cache`; bad values are user errors."""
    options = cfg.model.get("feature_cache") or {}
    enabled = options.get("enabled", False)
    if not isinstance(enabled, bool):
        raise UserInputError(
            f"model.feature_cache.enabled={enabled!r} must be true or false (train on cached "
            "activations of the frozen backbone, or not)."
        )
    max_gb = options.get("max_gb", DEFAULT_MAX_GB)
    if isinstance(max_gb, bool) or not isinstance(max_gb, int | float) or max_gb <= 0:
        raise UserInputError(
            f"model.feature_cache.max_gb={max_gb!r} must be a positive number of gigabytes (the "
            "size limit of the cache folder; least recently used entries are deleted beyond it)."
        )
    folder = options.get("dir") or Path(str(cfg.get("output_dir") or "runs")) / "feature_cache"
    return enabled, Path(str(folder)).expanduser().resolve(), int(float(max_gb) * 1e9)


def augmented_copies(cfg: DictConfig) -> int:
    """`model.feature_cache.augmented_copies`: K fixed augmented passes for an augmented phase 1
    (0: augmented trials run uncached)."""
    options = cfg.model.get("feature_cache") or {}
    copies = options.get("augmented_copies", DEFAULT_AUGMENTED_COPIES)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise UserInputError(
            f"model.feature_cache.augmented_copies={copies!r} must be a whole number, 0 or more "
            "(how many augmented copies of the training images phase 1 cycles over; 0: trials "
            "with augmentation run uncached)."
        )
    return copies
