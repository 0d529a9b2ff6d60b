"""`final.ensemble`: which of the models the sweep trained the shipped model averages.

By the end of a sweep the final stage holds several models of its best configs: the model it
would test alone (the crowned config's re-trained or retrained model, or the best trial's own),
the other re-evaluation models, and each contender's trial model in the MLflow store. Their
seeds disagree on many images, and the average of their class probabilities is more accurate:
every average of 2 to 4 of six base and flipped-base transfer models tested above its members'
mean, by +1.3 to +5.9 points on cifar10-test 300/class and +0.5 to +2.8 on sign-language-digits
(bench/ensemble.py, docs/benchmarks.md section 10). So the shipped model is the average of up to `final.ensemble` of them, the
single model first, then the others by validation score, best first.

Only contenders are members (the configs within the noise of the best, search/final/reevaluate.py), so
a clearly weaker config never dilutes the ensemble; and only models that read the same images
(the same data config) and take the same input as the single model, so the average is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:  # mlflow loads only when the final stage runs
    from search.final.reevaluate import Reevaluation
    from search.trials.types import Best
    from tracking.champion import FinalRecorder


@dataclass
class Member:
    """A trained model the ensemble may average. `score`: its validation objective (None when it
    trained on the validation images too, as `final.retrain` does); `load` gives the model, so a
    trial model is read from the store only when it is chosen."""

    label: str
    trial: int  # the trial whose config it trained
    score: float | None
    load: Callable[[], Any]


def in_memory(model: Any) -> Callable[[], Any]:
    """A Member's loader for a model already in memory."""
    return lambda: model


def ensemble_size(cfg: DictConfig) -> int:
    """`final.ensemble`: how many models the shipped model averages (1: a single model); a row
    of search/config/rules.py, checked before the sweep."""
    return int((cfg.get("final") or {}).get("ensemble", 1))


def with_crowned(contenders: list[Best], best: Best) -> list[Best]:
    """The trials whose models may join the ensemble: the re-evaluation's contenders (the top
    final.top_k within the noise of the best; none when it is 0), and always the crowned one."""
    return contenders if any(t.number == best.number for t in contenders) else [best, *contenders]


SINGLE_LABELS = {
    "trial_model": "trial {n}",
    "retrained_train": "trial {n} retrained on train",
    "retrained_train_val": "trial {n} retrained on train + validation",
}


def shipped_model(
    cfg: DictConfig,
    recorder: FinalRecorder,
    single: tuple[Any, str],
    best: Best,
    contenders: list[Best],
    reevaluated: Reevaluation | None,
    seeds: list[Member] | None = None,
) -> tuple[Any, str, list[str]]:
    """The shipped model: the average of the single model (`single`: it and its source), the
    crowned config's other seeds retrained on train + validation (`seeds`), then up to
    final.ensemble in all with the contenders' models; the single model alone when no other is at
    hand, or when a champion rule chose it. Returns (model, source, the members' labels)."""
    from experiments.data.load import loading_key
    from experiments.models.ensemble import average_model
    from search.final.champion_rule import effective_rule
    from search.space.apply import apply_params

    model, source = single
    if effective_rule(cfg) is not None:
        print(
            "final: final.ensemble is not applied: the champion was chosen by final.select or by "
            "several objectives, whose metrics (a latency, a size) an average of models would "
            "change; the chosen trial's model is shipped alone"
        )
        return model, source, []
    seed = int(cfg.seed)
    key = loading_key(apply_params(cfg, best.params).data, seed)
    same_images = {
        t.number: t
        for t in contenders
        if loading_key(apply_params(cfg, t.params).data, seed) == key
    }
    retrained = reevaluated.trained if reevaluated is not None else []
    single_member = next((m for m in retrained if m.load() is model), None)
    others = [m for m in retrained if m.trial in same_images and m is not single_member]
    others += [
        Member(
            f"trial {t.number}", t.number, float(t.value), partial(recorder.trial_model, t.run_id)
        )
        for t in same_images.values()
        if t.run_id is not None and not (source == "trial_model" and t.number == best.number)
    ]
    first = single_member or Member(
        SINGLE_LABELS[source].format(n=best.number), best.number, None, lambda: model
    )
    maximize = cfg.train.direction == "maximize"
    candidates = ranked(first, others, maximize)
    candidates[1:1] = seeds or []  # the strongest members: the best config on more images
    chosen = gather(candidates, ensemble_size(cfg))
    if len(chosen) == 1:
        return model, source, []
    objective = str(cfg.train.objective)
    labels = [
        m.label + ("" if m.score is None else f" ({objective} {m.score:.4f})") for m, _ in chosen
    ]
    print(f"final: the shipped model averages {len(chosen)} models: {'; '.join(labels)}")
    return average_model([m for _, m in chosen]), "ensemble", labels


def ranked(single: Member, others: list[Member], maximize: bool) -> list[Member]:
    """The single model first, then the others by validation score, best first (a tie keeps
    their order)."""
    sign = -1.0 if maximize else 1.0
    scored = [m for m in others if m.score is not None]
    # Every member of `scored` has a score: the checker does not carry the filter into the lambda.
    return [single, *sorted(scored, key=lambda m: sign * float(m.score))]  # type: ignore[arg-type]


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
