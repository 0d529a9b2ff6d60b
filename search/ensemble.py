"""`final.ensemble`: which of the models the sweep trained the shipped model averages.

By the end of a sweep the final stage holds several models of its best configs: the model it
would test alone (the crowned config's re-trained or retrained model, or the best trial's own),
the other re-evaluation models, and each contender's trial model in the MLflow store. Their
seeds disagree on many images, and their average is more accurate than any one of them:
on cifar10-test 300/class every pair and triple of six base and flipped-base models tested
better averaged than their members' mean, by 2.4 to 4.3 points (docs/transfer.md, "The shipped
model: an ensemble"). So the shipped model is the average of up to `final.ensemble` of them, the
single model first, then the others by validation score, best first.

Only contenders are members (the configs within the noise of the best, search/reevaluate.py), so
a clearly weaker config never dilutes the ensemble; and only models that read the same images
(the same data config) and take the same input as the single model, so the average is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from experiments.errors import UserInputError


@dataclass
class Member:
    """A trained model the ensemble may average. `score`: its validation objective (None when it
    trained on the validation images too, as `final.retrain` does); `load` gives the model, so a
    trial model is read from the store only when it is chosen."""

    label: str
    trial: int  # the trial whose config it trained
    score: float | None
    load: Callable[[], Any]


def ensemble_size(cfg: DictConfig) -> int:
    """`final.ensemble`, checked: how many models the shipped model averages (1: a single model)."""
    size = (cfg.get("final") or {}).get("ensemble", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserInputError(
            f"final.ensemble={size!r} must be a whole number of 1 or more: how many of the models "
            "the sweep trained for its best configs the shipped model averages (1: the single "
            "best model, as tested without an ensemble)."
        )
    return size


def ranked(single: Member, others: list[Member], maximize: bool) -> list[Member]:
    """The single model first, then the others by validation score, best first (a tie keeps
    their order)."""
    sign = -1.0 if maximize else 1.0
    scored = [m for m in others if m.score is not None]
    return [single, *sorted(scored, key=lambda m: sign * float(m.score))]


def gather(candidates: list[Member], size: int) -> list[tuple[Member, Any]]:
    """The first `size` candidates whose model loads and fits the first one's input and classes,
    with their models; a trial that logged no model is passed over, as is one that does not fit
    (said, so a user who searched the input size knows why it is missing)."""
    chosen: list[tuple[Member, Any]] = []
    for member in candidates:
        if len(chosen) == size:
            break
        model = member.load()
        if model is None:
            continue
        if chosen and not compatible(model, chosen[0][1]):
            print(f"final: {member.label} is left out of the ensemble: its model takes other input")
            continue
        chosen.append((member, model))
    return chosen


def compatible(model: Any, reference: Any) -> bool:
    """Whether `model` takes the same input and predicts as many classes as `reference`."""
    return tuple(model.input_shape[1:]) == tuple(reference.input_shape[1:]) and tuple(
        model.output_shape[1:]
    ) == tuple(reference.output_shape[1:])
