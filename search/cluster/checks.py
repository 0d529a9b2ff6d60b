"""What a cluster launch needs before any worker starts, checked where the launch is made;
and, in each submitit job, a stop signal that takes the Ctrl-C path.

Workers on many machines share only what lives on a server: the Optuna study in a database
server and the runs (with their artifacts) in an MLflow tracking server. A SQLite file or a local
MLflow store would give every machine its own copy, so each worker would train the whole total
alone; refusing that up front costs a second, finding out costs the cluster's hours.
`ClusterLaunchCheck` runs these checks as a Hydra callback in the process that submits the jobs
(`+cluster=slurm|local`); the Ray driver calls `check_cluster_config` itself.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.errors import UserInputError

SHARED_ENGINES = ("optuna",)
SERVER_TRACKING = ("http://", "https://")


def check_cluster_config(cfg: DictConfig) -> None:
    """Everything a worker would refuse, plus what workers cannot share, before any job exists."""
    check_shared_stores(cfg)
    # The sweep's own checks, the same function `search.sweep.sweep` runs first: a bad value
    # fails here once, not in every job after it waited in the cluster's queue.
    from search.checks import check_config

    check_config(cfg)


def check_launcher(launcher: str) -> None:
    """Slurm's commands must be here to submit to Slurm: without them submitit raised a
    RuntimeError after Hydra had made the multirun/ folder."""
    import shutil

    if launcher.startswith("submitit_slurm") and shutil.which("sbatch") is None:
        raise UserInputError(
            "+cluster=slurm submits each worker with Slurm's sbatch, which is not on this "
            "machine's PATH: run the launch on a Slurm login node, or start the workers here "
            "with +cluster=local (or on Ray: python -m search.cluster.ray_workers)."
        )


def check_servers(cfg: DictConfig) -> None:
    """The shared study storage and tracking server answer now, before any job waits in a queue
    to fail on them (the same probe a sweep makes, search/config/stores.py)."""
    from search.config.stores import check_server

    check_server("search.storage", str(cfg.search.storage))
    check_server("tracking.tracking_uri", str(cfg.tracking.tracking_uri))


def check_shared_stores(cfg: DictConfig) -> None:
    """Refuse an engine, a study storage or a tracking store that workers cannot share."""
    engine = str(cfg.search.engine)
    if engine not in SHARED_ENGINES:
        raise UserInputError(
            f"search={engine} cannot run as cluster workers: its tuner state lives in a local "
            f"folder ({cfg.search.get('directory')}), so workers on other machines would not "
            "share it. Accepted: search=optuna with its study in a database server."
        )
    storage = str(cfg.search.storage)
    if not storage.startswith(("postgresql", "mysql")):
        raise UserInputError(
            f"search.storage={storage!r} is not a database server that every worker can reach: "
            "each machine would get its own study and train the whole total alone. Accepted: "
            "postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DATABASE (or mysql+pymysql://...)."
        )
    tracking = str(cfg.tracking.tracking_uri)
    if not tracking.startswith(SERVER_TRACKING):
        raise UserInputError(
            f"tracking.tracking_uri={tracking!r} is not an MLflow tracking server: runs and "
            "model artifacts written there stay on the machine that wrote them. Accepted: "
            "http://HOST:PORT of `mlflow server --artifacts-destination ...` (docs/clusters.md)."
        )


def check_worker_sweep(overrides: Sequence[str]) -> None:
    """A launch must name its workers: `worker='range(N)'`, a list, or one index to add one."""
    if not any(o.split("=", 1)[0].lstrip("+~") == "worker" for o in overrides if "=" in o):
        raise UserInputError(
            "a cluster launch starts one job per worker index, and the command names none. "
            "Accepted: worker='range(N)' for N workers, a list (worker=0,1,2), or one index "
            "(worker=8) to add a worker to a study that others are running."
        )


class ClusterLaunchCheck(Callback):
    """Hydra callback of `conf/cluster/*.yaml`: check the launch, and stop a job cleanly.

    In the submitting process it refuses a bad launch before any job exists (one
    `sweeplab: error:` paragraph, exit status 2). In each job it makes the submitit signal
    (SIGUSR2: Slurm's time limit is near, or the job is preempted) stop the worker like Ctrl-C:
    its trial is marked interrupted and redone on resume, and its MLflow run ends KILLED. Left to
    submitit, the signal would raise inside the trial and count as a failed trial of the study.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from search.cli.exit_codes import fail

        fail(
            "+cluster=... launches workers through Hydra's multirun: add -m and name the "
            "workers, e.g. python -m search.run -m +cluster=slurm worker='range(8)' ..."
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from search.cli.exit_codes import fail

        try:
            check_worker_sweep(list(config.hydra.overrides.task))
            check_cluster_config(config)
            launcher = str(config.hydra.runtime.choices.get("hydra/launcher"))
            check_launcher(launcher)
            check_servers(config)
        except UserInputError as err:
            fail(str(err))
        print(
            f"launching workers with hydra/launcher={config.hydra.runtime.choices.get('hydra/launcher')}"
            f"; their logs: {config.hydra.sweep.dir}/.submitit/",
            flush=True,
        )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from search.execution.stop import stop_like_ctrl_c

        signal.signal(signal.SIGUSR2, stop_like_ctrl_c)
        # The "resume with:" hint is built from the command line, which in a job is submitit's
        # own; this job's overrides without the overlay are the one-worker command it ran.
        task = config.hydra.overrides.task
        sys.argv[1:] = [o for o in task if o.lstrip("+~").split("=", 1)[0] != "cluster"]
