"""The shipped-model card: what shipped, its members, how its validation figure was computed and
its test accuracy with a 95% confidence interval. One text, written on the parent run (tag
`sweeplab.final.card`, artifact shipped_model.md), the registered version's description and the
top of the HTML report, so the three say the same."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.final.reevaluate import Reevaluation
    from search.trials.types import Best

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson(correct_fraction: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (an accuracy on `n` test images)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = min(max(float(correct_fraction), 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), 1.0 if p == 1.0 else min(1.0, centre + half))


def validation_words(
    objective: str, best: Best, reevaluated: Reevaluation | None, asked: bool = False
) -> str:
    """How the shipped config's validation figure was computed; `asked`: whether a re-evaluation
    had contenders (then its absence is "skipped", not "off")."""
    if reevaluated is not None and reevaluated.crowned.scores:
        crowned = reevaluated.crowned
        n = len(crowned.every_score)
        return (
            f"{objective} {crowned.mean:.4f}: the mean of {n} trainings of trial "
            f"{crowned.trial.number}'s config on the validation split (the search's and "
            f"{n - 1} new seed(s)), std {crowned.std:.4f}"
        )
    why = (
        "re-evaluation: skipped (it did not fit in search.timeout, or only one contender)"
        if asked
        else "re-evaluation: off (final.top_k=0)"
    )
    return (
        f"{objective} {best.value:.4f}: trial {best.number}'s one training in the search, on the "
        f"validation split ({why})"
    )


def card_text(
    source: str,
    members: list[str],
    validation: str,
    accuracy: float,
    test_images: int,
    single: float | None = None,
) -> str:
    """The card, a few lines of plain text."""
    low, high = wilson(accuracy, test_images)
    what = source.replace("_", " ")
    lines = [f"Shipped: the {what}" + (f" of {len(members)} models" if members else "")]
    lines += [f"  member: {m}" for m in members]
    lines.append(f"Validation: {validation}")
    test = (
        f"Test: accuracy {accuracy:.4f} on {test_images} images, 95% CI {low:.4f}-{high:.4f} "
        "(Wilson)"
    )
    if single is not None:
        s_low, s_high = wilson(single, test_images)
        test += f"; best single model {single:.4f} ({s_low:.4f}-{s_high:.4f})"
    lines.append(test)
    return "\n".join(lines)
