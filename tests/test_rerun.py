"""`python -m search.rerun RUN_ID` trains a logged trial again and reproduces its result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.data.load import load_data
from experiments.errors import UserInputError
from search.rerun import rerun
from search.sweep import prepare, sweep
from tests.conftest import run_cli


def test_rerun_reproduces_a_trials_validation_accuracy(make_config) -> None:
    cfg = prepare(
        make_config("search.n_trials=1", "search.pruner=none", "tracking.log_models=false")
    )
    summary = sweep(cfg)
    source_id = summary.best_run_id

    done = run_cli("search.rerun", source_id, "--output-dir", cfg.output_dir, "--no-model")
    assert done.returncode == 0, done.stderr
    assert f"source run {source_id}: val_accuracy = " in done.stdout
    assert "same data split: yes" in done.stdout
    new_id = re.search(r"rerun  run (\w+): val_accuracy = ", done.stdout).group(1)

    client = MlflowClient(cfg.tracking.tracking_uri)
    source, new = client.get_run(source_id), client.get_run(new_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags["sweeplab.rerun_of"] == source_id
    assert "mlflow.parentRunId" not in new.data.tags  # a top-level run, not part of the sweep
    assert new.data.params == source.data.params
    # Same seed, split and ops: CPU Keras reproduces bit for bit on one machine (measured; see
    # README). The tolerance allows one validation image to flip, the least step accuracy has,
    # should oneDNN pick other kernels on another CPU or thread count.
    one_image = 1 / len(load_data(cfg.data, int(cfg.seed)).val)
    assert new.data.metrics["final_val_accuracy"] == pytest.approx(
        source.data.metrics["final_val_accuracy"], abs=one_image
    )
    assert new.data.metrics["final_val_loss"] == pytest.approx(
        source.data.metrics["final_val_loss"], rel=1e-3
    )


def test_rerun_without_a_store_says_so_and_creates_none(make_config) -> None:
    """An unknown run in an existing store: tests/test_bad_input.py (rerun_unknown_run)."""
    cfg = prepare(make_config("search.n_trials=1", "tracking.log_models=false"))
    with pytest.raises(UserInputError, match="there is no store at .*/mlflow.db"):
        rerun("0123456789abcdef", output_dir=cfg.output_dir, log_model=False)
    assert not Path(cfg.output_dir).exists()  # no empty store, no folder
