"""How a trial's frozen-feature cache answered: sent back by a worker with the trial's result.

Its own module, free of TensorFlow, so that the sweep process can unpickle it without importing
TensorFlow (experiments.training.feature_cache, where the cache lives, needs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CacheReport:
    """Whether a trial ran on cached activations, and how the cache answered."""

    used: bool
    reason: str  # "cached", or why the trial ran uncached
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # damaged entries found, deleted and rebuilt
    build_seconds: float = 0.0  # inference passes that built missing entries
    entries: list[str] = field(default_factory=list)

    def tags(self) -> dict[str, str]:
        """Flat string tags for a tracker (experiments/ does not import one)."""
        return {
            "sweeplab.feature_cache": self.reason,
            "sweeplab.feature_cache.hits": str(self.hits),
            "sweeplab.feature_cache.misses": str(self.misses),
            "sweeplab.feature_cache.corrupt": str(self.corrupt),
            "sweeplab.feature_cache.build_seconds": f"{self.build_seconds:.2f}",
        }
