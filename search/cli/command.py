"""The command behind `python -m search.run`: compose the config with Hydra, run a sweep, map
errors to exit codes.

The sweep itself is `search.sweep.sweep`; this module is only the command line around it (the
environment is set in `search/__init__.py`, before anything imports TensorFlow). It is not
`search/run.py` itself because a worker process (spawned) imports the command's main module
again: that module is kept to a few lines, so the worker does not import Hydra for nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from search.cli.added_keys import check_added_keys
from search.cli.exit_codes import exit_codes
from search.execution.resume import resume_command, sigterm_as_interrupt  # light: no TensorFlow

# An absolute folder: Hydra reads a relative one as a package path when its main function is
# not in the __main__ module.
CONF = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> None:
    from search.sweep import sweep

    interrupted = f"interrupted; the next start cleans up. resume with: {resume_command()}"
    with exit_codes(on_interrupt=interrupted), sigterm_as_interrupt():
        check_added_keys(HydraConfig.get().overrides.task, cfg)  # +train.epoch=3: an error
        sweep(cfg)


# Hydra's own flags that print or launch instead of running one sweep in this process.
_NO_SWEEP_HERE = {"-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i",
                  "--info", "--resolve", "--version", "--shell-completion", "-sc"}  # fmt: skip


def trains_here(args: list[str]) -> bool:
    """Whether this command line runs a sweep with worker processes in this process: then slot
    0's worker starts before Hydra composes the config (`search.execution.pool.start_early`)."""
    workers = [a.split("=", 1)[1] for a in args if a.startswith("search.workers=")]
    return not any(a in _NO_SWEEP_HERE for a in args) and workers[-1:] != ["0"]  # the last wins


def run_command() -> None:
    """`python -m search.run ARGS`: the first worker starts, then Hydra composes and the sweep
    runs (sys.argv is the command line)."""
    from search.cli.overrides import normalize_overrides

    sys.argv[1:] = normalize_overrides(sys.argv[1:])  # +sweep=NAME, the documented form
    if trains_here(sys.argv[1:]):
        from search.execution.pool import start_early

        start_early()  # TensorFlow imports in the worker while Hydra composes and checks
    main()
