"""The Keras Tuner engine, in three modules: `translation` (the space as HyperParameters),
`settings` (the checked `search` group and its oracle) and `engine` (the tuner and the loop)."""

from search.engines.keras_tuner.engine import KerasTunerEngine

__all__ = ["KerasTunerEngine"]
