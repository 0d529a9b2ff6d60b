"""Check, before any data is loaded, that every model a search space can sample can be built.

A model that can fail for reasons the user must fix (a backbone's input size, an alpha without
ImageNet weights, a weights file that is not there) registers a config check and the keys that
decide it. The sweep runs the check on the base config and on every combination of those keys'
categorical choices in the space (respecting `when`), so a bad choice fails in seconds with one
paragraph instead of as a failed trial hours into a sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig

from experiments.errors import UserInputError
from experiments.models.backbones import TRANSFER_KEYS, check_transfer_config
from search.space.apply import apply_params
from search.space.spec import Param


def check_transfer(cfg: DictConfig) -> None:
    """The backbone's settings, then its weights file loaded once (experiments.models.weights_check)."""
    from experiments.models.backbones import input_size
    from experiments.models.weights_check import check_weights

    check_transfer_config(cfg)
    check_weights(cfg.model, input_size(cfg.model, int(cfg.data.image_size)))


MODEL_CHECKS: dict[str, tuple[Callable[[DictConfig], None], tuple[str, ...]]] = {
    "transfer": (check_transfer, TRANSFER_KEYS),
}


def check_models(cfg: DictConfig, space: list[Param]) -> None:
    """Raise `UserInputError` for the first combination of choices no trial could build."""
    check, keys = MODEL_CHECKS.get(str(cfg.model.name), (None, ()))
    if check is None:
        return
    check(cfg)
    searched = [p for p in space if p.name in keys and p.kind == "categorical"]
    for combo in _combinations(searched, {}):
        try:
            check(apply_params(cfg, combo))
        except UserInputError as err:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise UserInputError(
                f"the search space can sample {shown}, which fails: {err}"
            ) from err


def _combinations(params: list[Param], sampled: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every assignment of the active parameters' choices (params are parents first)."""
    if not params:
        yield dict(sampled)
        return
    first, rest = params[0], params[1:]
    if not first.is_active(sampled):
        yield from _combinations(rest, sampled)
        return
    for choice in first.choices:
        yield from _combinations(rest, {**sampled, first.name: choice})
