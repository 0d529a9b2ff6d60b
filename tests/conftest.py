"""Shared fixtures: the real config composed by Hydra, shrunk to tiny settings and temp dirs.

Tests that need the real image sets in ../shared/data skip with a reason when it is absent (a
user's fresh clone); `.ci/run` sets SWEEPLAB_REQUIRE_SHARED_DATA=1 so that CI fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.quiet import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_DATA = Path(os.environ.get("SWEEPLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Small enough for 2 cores: 8x8 digits, 2 epochs, tiny networks, no Keras progress bars.
# search.workers=0 trains in the sweep process: a worker process costs ~3 s of start-up (its own
# TensorFlow import) per sweep, which would add minutes to the suite. The tests of the worker
# process path (test_worker_processes, the kill / resume and CLI tests) set WORKERS after it.
TINY = [
    "data.image_size=8",
    "train.epochs=2",
    "train.batch_size=64",
    "model.filters=8",
    "model.dense_units=16",
    "search.workers=0",
]
WORKERS = "search.workers=1"  # the default: trials in a worker process


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The real composed config, as `python -m search.run OVERRIDES` would see it."""
    from search.cli.overrides import normalize_overrides

    overrides = normalize_overrides([*TINY, f"output_dir={output_dir}", *overrides])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), tmp_path / "runs")

    return make


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip (fail in CI) when it is not there."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"{path} is not here (a fresh clone has no ../shared/data)"
        if os.environ.get("SWEEPLAB_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return path


def run_cli(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
