"""Keys added on the command line with `+` must be read by something.

Hydra's own error for a mistyped key (`train.epoch=3`) suggests `+train.epoch=3`, which adds a
key that nothing reads: the sweep then ran as if nothing was said. A `+KEY` is accepted only at the extension points below, where extra keys are
read by design; anything else is an error that names the key and the closest existing one.
(`++KEY=VALUE` is Hydra's "set, adding if missing" and is left to the user: it is not checked.)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Prefixes under which added keys are read: the search space (entries), the optimizer (Keras
# optimizer keyword arguments), samplers and pruners (new nodes and their keyword arguments).
EXTENSION_POINTS = ("space.", "optimizer.", "search.samplers.", "search.pruners.", "hydra.")
ACCEPTED = (
    "+GROUP=NAME for a config group (e.g. +sweep=cnn); +space.KEY={type: ...} (a search-space "
    "entry); +optimizer.KEY=VALUE (a keyword argument of the Keras optimizer); "
    "+search.samplers.NAME / +search.pruners.NAME (a sampler or pruner node, or one of its "
    "options). To change an existing key, drop the +: KEY=VALUE."
)


def check_added_keys(overrides: Iterable[str], cfg: DictConfig) -> None:
    """Raise `UserInputError` for a `+KEY=VALUE` outside the extension points (Hydra refuses
    `+KEY` for a key that exists, so every accepted one is new)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if not override.is_add() or override.package is not None:
            continue
        if (CONF_DIR / key.replace(".", "/")).is_dir():
            continue  # a config group: +sweep=cnn
        if key.startswith(EXTENSION_POINTS):
            continue
        raise UserInputError(
            f"{override.input_line!r} adds the key {key!r}, which nothing in sweeplab reads"
            f"{_suggestion(cfg, key)}. Keys can be added with + only at the extension points: "
            f"{ACCEPTED}"
        )


def _suggestion(cfg: DictConfig, key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    names = [str(k) for k in node if str(k) != leaf]
    close = difflib.get_close_matches(leaf, names, n=1)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
