"""The final stage's shipped model: each export measured from its own file and shown on the
parent run and in the report (issue 26), and the ensemble distilled into one student, shipped by
`final.ship`, inside search.timeout. Real sweeps on the embedded digits (tiny CNNs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_sweep import runs_of

from search.sweep import sweep
from search.trials.budget import Budget
from search.trials.types import Best

FORMATS = "final.export=[keras,saved_model,tflite,tflite_float16,tflite_int8]"


def test_a_sweeps_exports_are_measured_from_their_files(make_config, capsys) -> None:
    from experiments.data.load import load_data
    from experiments.serving.predictors import load_predictor

    cfg = make_config("search.n_trials=1", FORMATS, "final.register=false")
    summary = sweep(cfg)
    table = summary.final.export_measures
    assert [row["format"] for row in table] == [
        "keras", "saved_model", "tflite", "tflite_float16", "tflite_int8",
    ]  # fmt: skip
    # Each accuracy is the file's own: recomputed here through the predictor search.predict uses.
    data = load_data(cfg.data, int(cfg.seed))
    for row in table:
        predictor = load_predictor(summary.final.exports[row["format"]])
        predicted = np.argmax(predictor.predict(data.test.x.astype(np.float32)), axis=1)
        assert row["accuracy"] == pytest.approx(float(np.mean(predicted == data.test.y)), abs=1e-4)
    sizes = {row["format"]: row["size_bytes"] for row in table}
    assert sizes["tflite_int8"] < sizes["tflite"]
    (parent,) = runs_of(cfg, "sweep")
    assert json.loads(parent.data.tags["sweeplab.final.exports"]) == table
    out = capsys.readouterr().out
    assert "export tflite_int8: test accuracy" in out and "ms per image at batch 1" in out
    (report,) = (Path(cfg.output_dir) / "reports").glob("*.html")
    assert "Exports, measured from each file on the test split" in report.read_text()


@pytest.mark.parametrize("rule", ["accurate", "fastest"])
def test_the_ensemble_is_distilled_and_shipped_by_the_rule(make_config, capsys, rule) -> None:
    cfg = make_config(
        "search.n_trials=1", "final.retrain=true", "final.retrain_seeds=3", "final.ensemble=3",
        "final.distil=true", f"final.ship={rule}", "final.ship_within=0.05",
        "final.register=false", "train.epochs=3",
    )  # fmt: skip
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "final: distilling the ensemble into one model of the crowned config" in out
    line = next(x for x in out.splitlines() if x.startswith(f"final: final.ship={rule}"))
    figures = re.search(r"test accuracy: ensemble ([0-9.]+), student ([0-9.]+)$", line)
    assert figures is not None, line
    ensemble, student = float(figures[1]), float(figures[2])
    shipped = summary.final.source
    if rule == "accurate":
        assert shipped == ("distilled_student" if student >= ensemble else "ensemble")
    else:
        assert shipped == ("distilled_student" if student >= ensemble - 0.05 else "ensemble")
    assert summary.final.metrics["test_accuracy"] == pytest.approx(
        student if shipped == "distilled_student" else ensemble, abs=1e-4
    )
    (parent,) = runs_of(cfg, "sweep")
    assert parent.data.tags["sweeplab.final.shipped_why"] in line


def test_distillation_is_reserved_and_skipped_when_it_does_not_fit(capsys) -> None:
    from search.final.stage import _student_or_ensemble

    now = [0.0]
    budget = Budget(100.0, retrain=True, retrain_scale=1.5, distil=True, clock=lambda: now[0])
    best = Best(0.9, 0, {}, "run")
    budget.record(best, seconds=20.0)
    assert budget.reserve() == pytest.approx(2 * 30.0 + 5.0)  # the retraining and the student
    now[0] = 80.0  # 20 s left: a 30-s student does not fit
    ensemble, report = object(), object()
    shipped = _student_or_ensemble(None, None, None, False, None, ensemble, report, budget, best)
    assert shipped[:3] == (ensemble, "ensemble", report)
    assert "does not fit in the 20s left of search.timeout; the ensemble ships" in shipped[3]
    assert "no student" in capsys.readouterr().out


def test_the_student_learns_with_the_configured_temperature_and_alpha(
    make_config, monkeypatch
) -> None:
    """final.distil_temperature / final.distil_alpha reach the student's loss; their defaults
    in conf/ are the measured ones of experiments/training/distil.py (docs/distil.md)."""
    import experiments.training.distil as distil_module

    defaults = make_config().final
    assert (defaults.distil_temperature, defaults.distil_alpha) == (
        distil_module.DEFAULT_TEMPERATURE,
        distil_module.DEFAULT_ALPHA,
    )
    seen: list[dict] = []
    original = distil_module.run_trial

    def recording(cfg, data, callbacks=None):
        seen.append(dict(cfg.train.distil))
        return original(cfg, data, callbacks)

    monkeypatch.setattr(distil_module, "run_trial", recording)
    cfg = make_config(
        "search.n_trials=1", "final.retrain=true", "final.retrain_seeds=2", "final.ensemble=2",
        "final.distil=true", "final.distil_temperature=2.5", "final.distil_alpha=0.2",
        "final.register=false",
    )  # fmt: skip
    sweep(cfg)
    assert seen == [{"temperature": 2.5, "alpha": 0.2}]
