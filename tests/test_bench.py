"""The overhead benchmark runs end to end (timings are never asserted: bench/ measures them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_overhead_benchmark_runs_every_arm_on_the_same_models(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SWEEPLAB_BENCH_RESULTS": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Where sweeplab's extra time goes" in proc.stdout
    result = json.loads((tmp_path / "overhead.json").read_text())
    arms = result["arms"]["wall"]
    assert set(arms) == {"sweeplab", "bare", "keras_tuner", "optuna_mlflow"}
    for run in result["runs"]:
        assert len(run["val_accuracy"]) == 2 and all(0.0 <= v <= 1.0 for v in run["val_accuracy"])
        assert run["cpu"]["total_s"] > 0 and run["wall"]["train_s"] > 0
    # sweeplab trains exactly the models the bare loop trains (same split, seed, pipeline).
    assert result["max_val_accuracy_diff_sweeplab_vs_bare"] < 1e-6
    assert result["arms"]["wall"]["bare"]["ratio_vs_bare"] == pytest.approx(1.0)
