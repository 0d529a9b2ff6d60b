"""The tuning expert's warnings on constructed trial rows (fast; the report tests use real ones)."""

from __future__ import annotations

from search.reporting.advice import warnings_for
from search.space.spec import Param
from search.trials.records import Row

SPACE = [
    Param("optimizer.learning_rate", "float", 1e-4, 1e-1, log=True),
    Param("model.dropout", "float", 0.0, 0.5),
    Param("model.conv_blocks", "int", 1, 2),
    Param("model.units", "int", 16, 256),
]


def row(n: int, lr: float, dropout: float, blocks: int = 1, units: int = 64) -> Row:
    params = {
        "optimizer.learning_rate": lr,
        "model.dropout": dropout,
        "model.conv_blocks": blocks,
        "model.units": units,
    }
    return Row(n, "complete", {"val_accuracy": 0.9}, 2, 1.0, params)


def test_best_value_at_the_edge_of_a_log_range_is_flagged() -> None:
    best = row(0, 0.095, 0.25, blocks=2, units=250)
    found = warnings_for(best, [best], SPACE, {})
    assert any("learning_rate=0.095 is at the top edge" in w for w in found)
    assert any("model.units=250 is at the top edge" in w for w in found)
    assert not any("dropout" in w for w in found)  # 0.25: the middle
    assert not any("conv_blocks" in w for w in found)  # 1..2 has no inside
    # 3e-4 on [1e-4, 1e-1] is 16% of the way in log scale: not an edge; 1.2e-4 is.
    assert not any("learning_rate" in w for w in warnings_for(row(0, 3e-4, 0.2), [], SPACE, {}))
    assert any("bottom edge" in w for w in warnings_for(row(0, 1.2e-4, 0.2), [], SPACE, {}))


def test_no_effect_and_too_few_trials() -> None:
    rows = [row(i, 1e-3, 0.1 * (i % 5)) for i in range(6)]
    importances = {"optimizer.learning_rate": 0.9, "model.dropout": 0.095, "model.units": 0.005}
    found = warnings_for(rows[0], rows, SPACE, importances)
    assert any(
        "model.units has almost no effect on the objective (importance 0.5%)" in w for w in found
    )
    assert not any("model.dropout has almost no effect" in w for w in found)
    assert any("only 6 complete trials for 4 parameters: about 40" in w for w in found)
    # Importances from fewer than 5 trials say nothing yet: no "no effect" warning.
    assert not any("no effect" in w for w in warnings_for(rows[0], rows[:3], SPACE, importances))
