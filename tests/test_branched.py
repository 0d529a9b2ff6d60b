"""The multi-branch model: its structure, a real sweep, and its bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.errors import UserInputError
from experiments.models.branched import build_branched
from search.sweep import sweep


def test_branches_run_in_parallel_with_their_kernel_sizes(make_config) -> None:
    cfg = make_config("+sweep=branched", "model.branches=3", "model.kernel_sizes=[1,3,5]")
    model = build_branched(cfg.model, (8, 8, 1), 10)
    convs = [layer for layer in model.layers if layer.name.endswith("_conv0")]
    assert sorted(layer.kernel_size for layer in convs) == [(1, 1), (3, 3), (5, 5)]
    merged = model.get_layer("branches")
    assert len(merged.input) == 3  # concatenated along channels
    assert merged.output.shape[-1] == 3 * int(cfg.model.filters) * int(cfg.model.filter_growth)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    assert model.predict(images, verbose=0).shape == (2, 10)

    single = build_branched(make_config("+sweep=branched", "model.branches=1").model, (8, 8, 1), 10)
    assert not [layer for layer in single.layers if layer.name == "branches"]


def test_two_trial_branched_sweep_learns_digits(make_config) -> None:
    summary = sweep(
        make_config("+sweep=branched", "search.n_trials=2", "tracking.log_models=false")
    )
    assert summary.finished_trials == 2
    assert summary.best_value > 0.3  # chance is 0.1
    assert set(summary.best_params) >= {"model.branches", "model.filters"}


def test_more_branches_than_kernel_sizes_is_a_clear_error(make_config) -> None:
    cfg = make_config("+sweep=branched", "model.branches=4")
    with pytest.raises(UserInputError, match=r"model.branches=4 needs 1 to 3 branches"):
        build_branched(cfg.model, (8, 8, 1), 10)
