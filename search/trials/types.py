"""The small types every stage of a sweep passes around; a leaf module, so the budget, the
runner, the engines and the final stage can share them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Best:
    """The trial an engine (or a champion rule) holds best: its objective value, number, sampled
    params and the MLflow run that records it (None where the engine lost that link)."""

    value: float
    number: int
    params: dict[str, Any]
    run_id: str | None
