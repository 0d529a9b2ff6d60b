"""`python -m search.rerun RUN_ID` trains a logged trial again and reproduces its result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

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
    # Same seed, split and ops on the same machine: CPU Keras reproduces bit for bit, as
    # docs/operations.md promises. Measured: 2 trials of a sweep (the second trained in-process
    # after the first), each re-run twice in a fresh process: val_accuracy and val_loss equal to
    # the last bit all 4 times. Both runs here train on one machine, so nothing less is asked.
    for metric in ("final_val_accuracy", "final_val_loss"):
        assert new.data.metrics[metric] == source.data.metrics[metric], metric


def test_rerun_without_a_store_says_so_and_creates_none(make_config) -> None:
    """An unknown run in an existing store: tests/test_bad_input.py (rerun_unknown_run)."""
    cfg = prepare(make_config("search.n_trials=1", "tracking.log_models=false"))
    with pytest.raises(UserInputError, match="there is no store at .*/mlflow.db"):
        rerun("0123456789abcdef", output_dir=cfg.output_dir, log_model=False)
    assert not Path(cfg.output_dir).exists()  # no empty store, no folder


def test_rerun_logs_exactly_the_active_sampled_params(make_config) -> None:
    """Entries added on the command line and an inactive conditional entry: the rerun logs the
    params the trial sampled, by dotted path, not the top-level keys of the space."""
    cfg = prepare(
        make_config(
            "search.n_trials=1",
            "tracking.log_models=false",
            "final.enabled=false",
            "+space.model.batch_norm={type:categorical,choices:[false,true]}",  # trial 0: the base, false
            "+space.model.kernel_size={type:int,low:3,high:5,when:{model.batch_norm:[true]}}",
        )
    )
    source_id = sweep(cfg).best_run_id
    result = rerun(source_id, output_dir=cfg.output_dir, log_model=False)

    client = MlflowClient(cfg.tracking.tracking_uri)
    source, new = client.get_run(source_id), client.get_run(result.run_id)
    assert set(source.data.params) == {
        "optimizer.learning_rate",
        "model.conv_blocks",
        "model.filters",
        "model.dropout",
        "model.dense_units",
        "model.batch_norm",
    }
    assert new.data.params == source.data.params  # names and values; kernel_size is inactive


def test_runs_logged_with_a_dotted_space_still_rerun(make_config) -> None:
    """Configs logged before the space was nested hold dotted keys; their params read back."""
    from omegaconf import OmegaConf

    from search.rerun import sampled_params
    from search.space.apply import apply_params

    trial = apply_params(make_config(), {"optimizer.learning_rate": 0.004, "model.filters": 16})
    trial.space = OmegaConf.create(
        {
            "optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2},
            "model": {"filters": {"type": "categorical", "choices": [8, 16]}},
        }
    )
    assert sampled_params(trial) == {"optimizer.learning_rate": 0.004, "model.filters": 16}
