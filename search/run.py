"""`python -m search.run`: compose the config with Hydra, run a sweep, map errors to exit codes.

python -m search.run                                   # default sweep (digits, CNN, Optuna)
python -m search.run +sweep=cnn search.n_trials=5 optimizer=sgd

The sweep itself is `search.sweep.sweep`; this module is only the command line around it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no background threads in sweeps

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from search.cli import exit_codes  # noqa: E402
from search.resume import resume_command, sigterm_as_interrupt  # noqa: E402  (light)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from search.sweep import sweep

    interrupted = f"interrupted; the next start cleans up. resume with: {resume_command()}"
    with exit_codes(on_interrupt=interrupted), sigterm_as_interrupt():
        sweep(cfg)


if __name__ == "__main__":
    main()
