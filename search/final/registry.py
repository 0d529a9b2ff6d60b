"""Which registered model a sweep's champion belongs to, and whether it replaces the current one.

A registered model stands for one task: the sweep and the data it is tested on. The default name
is `sweeplab-<sweep_name>-<data>-<fingerprint>`: the data's name (its folder, keras dataset or
`digits`) for people, and the first 8 hex digits of the data fingerprint (a content hash of the
train / validation / test splits, the `sweeplab.data_fingerprint` tag of every trial) so that
two sweeps on different data never share a name, and so never move one alias between unrelated
models. A new version is registered only when its test score beats the current champion's on
the same split: a re-run that finds the same or a worse model leaves the alias where it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig


@dataclass(frozen=True)
class Decision:
    """Whether to register, and the sentence that says why."""

    register: bool
    reason: str


def data_label(source: str, info: Mapping[str, object]) -> str:
    """A readable name of the data: the folder's name, the keras dataset, or the source."""
    if source == "directory" and info.get("path"):
        label = Path(str(info["path"])).name
    elif source == "keras" and info.get("name"):
        label = str(info["name"])
    else:
        label = source
    return re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_") or source


def registered_name(cfg: DictConfig, label: str, fingerprint: str) -> str:
    """`final.registered_name`, or sweeplab-<sweep_name>-<data label>-<fingerprint[:8]>."""
    explicit = cfg.final.get("registered_name")
    return str(explicit) if explicit else f"sweeplab-{cfg.sweep_name}-{label}-{fingerprint[:8]}"


def decide(
    metric: str,
    value: float,
    fingerprint: str,
    champion: Mapping[str, str] | None,
    where: str,
) -> Decision:
    """Register when there is no champion, or when `value` beats its `metric` on the same data.

    `champion` holds the current champion version's sweeplab tags (None: no champion yet), `where`
    names it (models:/NAME@ALIAS, version N) for the sentence. Scores are compared as they are
    recorded (6 significant digits), so re-testing the same model never counts as a win.
    """
    if champion is None:
        return Decision(True, f"the first champion {where}")
    theirs = champion.get("data_fingerprint")
    if theirs != fingerprint:
        return Decision(
            False,
            f"the champion {where} was tested on other data (fingerprint {theirs or 'unknown'}, "
            f"this sweep {fingerprint}): test scores of different splits do not compare. The "
            "alias stays; give final.registered_name=NAME to register this model under its own "
            "name.",
        )
    ours, best = float(f"{value:.6g}"), champion.get(metric)
    if best is None:
        return Decision(
            False,
            f"the champion {where} has no recorded {metric}; the alias stays (choose another "
            "final.champion_metric, or final.registered_name=NAME).",
        )
    if ours > float(best):
        return Decision(True, f"{metric}={ours:.6g} beats the champion {where} ({best})")
    return Decision(
        False,
        f"{metric}={ours:.6g} does not beat the champion {where} ({metric}={best} on the same "
        "test split); the alias stays.",
    )
