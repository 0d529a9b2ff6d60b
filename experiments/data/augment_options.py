"""The settings of `data.augmentation`, without Keras: what the config check and the layers share.

The config check (search/config/rules.py) reads the accepted values here before TensorFlow loads;
experiments/data/augment.py builds the layers from the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.errors import UserInputError

FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
STRENGTHS = {"rotation": 0.5, "translation": 0.5, "zoom": 0.9, "crop": 0.9, "contrast": 1.0}
# Named settings for `data.augmentation.preset`; `light` is the transfer overlay's earlier base
# (flip, 18 degrees, 10% zoom and shift), close to the seed's recipe (20 degrees, 20% shift).
# `flip` alone costs next to nothing at 224 px, where rotation, zoom and shift resample every
# image (about 12 ms an image on 2 cores: docs/transfer.md).
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "flip": {"flip": "horizontal"},
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.1},
}


def resolve_preset(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """`data.augmentation` with a named `preset` expanded into its keys (and `preset` removed).

    A preset replaces flip and the strengths, so setting one of them as well is an error rather
    than a silent choice between the two; `fill_mode` still applies. The preset's name is a row of
    the config check (search/config/rules.py), checked before any trial.
    """
    cfg = dict(cfg or {})
    unknown = set(cfg) - {"preset", "flip", "fill_mode", *STRENGTHS}
    if unknown:
        raise UserInputError(
            f"data.augmentation has unknown key(s) {sorted(unknown)}; accepted: preset, flip, "
            f"fill_mode, {', '.join(STRENGTHS)}."
        )
    preset = cfg.pop("preset", None)
    if preset is None:
        return cfg
    also_set = sorted(
        key for key in ("flip", *STRENGTHS) if cfg.get(key) not in (None, 0, 0.0, "none")
    )
    if also_set:
        raise UserInputError(
            f"data.augmentation.preset={preset} and data.augmentation.{also_set[0]}="
            f"{cfg[also_set[0]]!r} are both set; a preset replaces flip and the strengths: "
            "set data.augmentation.preset=null to use the keys, or leave them off."
        )
    return {"fill_mode": cfg.get("fill_mode"), **PRESETS[str(preset)]}
