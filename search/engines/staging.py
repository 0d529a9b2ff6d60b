"""Whether a sweep runs the staged search (`search.staged`, search/engines/optuna/staged.py).

Apart from the staged search itself so that the sweep can decide, and say why not, without
importing Optuna (a Keras Tuner sweep never does).
"""

from __future__ import annotations

from omegaconf import DictConfig

from search.trials.objectives import objectives_of


def staged_on(cfg: DictConfig) -> bool:
    """search.staged.enabled, as configured (the sweep may still run one stage: `staged_note`)."""
    return bool((cfg.search.get("staged") or {}).get("enabled"))


def staged_note(cfg: DictConfig) -> str | None:
    """With search.staged on, why this sweep searches in one stage after all (a line to print);
    None when the staged search runs. Staging is a default of the transfer sweep, so a sweep it
    does not fit is not refused: it runs as it would without it, and says so."""
    engine = str(cfg.search.engine)
    if engine != "optuna":
        return (
            f"search.staged: the staged search runs with the Optuna engine only; search.engine="
            f"{engine} searches in one stage (search.staged.enabled=false hides this line)"
        )
    if cfg.model.get("fine_tune") is None:
        return (
            "search.staged: the model has no fine-tuning schedule (model.fine_tune), so there is "
            "no cheap phase to screen; the search runs in one stage"
        )
    if len(objectives_of(cfg)) > 1:
        return "search.staged: several objectives (train.objectives): the search runs in one stage"
    return None


def staged_runs(cfg: DictConfig) -> bool:
    """Whether this sweep searches in two stages: search.staged on, and nothing that rules it out."""
    return staged_on(cfg) and staged_note(cfg) is None
