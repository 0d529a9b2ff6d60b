"""`python -m search.cluster.ray_workers`: N workers of one sweep as tasks on a Ray cluster.

python -m search.cluster.ray_workers --workers 8 --cpus-per-worker 4 -- +sweep=cnn \\
    search.storage=postgresql+psycopg://USER@DBHOST:5432/optuna \\
    tracking.tracking_uri=http://MLFLOWHOST:5000

Everything after `--` is the sweep's command line, as `python -m search.run` takes it. Ray places
the workers (`--cpus-per-worker`, `--gpus-per-worker` reserve a node's share for each); each task
runs `python -m search.run ... worker=I` (search/cluster/ray_task.py) and the study's
`search.n_trials` is the total they share. The driver waits for every worker, prints each exit
status, and exits with the status of the first worker that failed (2 bad input, 3 too many failed
trials, 130 interrupted; 1 a worker lost or killed). hydra-ray-launcher is not used (pyproject.toml
says why); this is Ray's own task API.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.errors import UserInputError

PROJECT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT / "conf"
LOST = 1  # the status reported for a worker whose task died (node lost, killed by a signal)
WAIT_S = 1.0  # how often the driver looks up from waiting for its workers
LOCAL_OBJECT_STORE_BYTES = 100 * 1024**2  # workers pass Ray no data: the minimum is plenty


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m search.cluster.ray_workers",
        description="Run N workers of one sweep (one shared study) as Ray tasks.",
        epilog="After --: the sweep's overrides, as python -m search.run takes them.",
    )
    parser.add_argument("--workers", type=int, required=True, help="how many workers to start")
    parser.add_argument(
        "--address",
        default="auto",
        help="the Ray cluster: auto (the one this machine joined, or RAY_ADDRESS), HOST:PORT, "
        "ray://HOST:10001, or local (a throwaway Ray on this machine); default: auto",
    )
    parser.add_argument(
        "--cpus-per-worker", type=float, default=1, help="CPUs Ray reserves for each (default 1)"
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0, help="GPUs Ray gives each (default 0)"
    )
    parser.add_argument("overrides", nargs="*", help="the sweep's overrides (after --)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse counts Ray cannot place and overrides that would split or disown the workers."""
    if args.workers < 1:
        raise UserInputError(f"--workers={args.workers} must be 1 or more.")
    if args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise UserInputError(
            f"--cpus-per-worker={args.cpus_per_worker} must be above 0 and "
            f"--gpus-per-worker={args.gpus_per_worker} 0 or more."
        )
    for override in args.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if override in ("-m", "--multirun") or key in ("worker", "hydra/launcher"):
            raise UserInputError(
                f"the sweep override {override!r} is the launcher's to set: each Ray task runs "
                "one worker (worker=I, I from 0 to --workers - 1) of one plain sweep."
            )


def compose_sweep(overrides: list[str]) -> DictConfig:
    """The config each worker will compose, so a bad one fails here once, before Ray starts."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from search.cli.overrides import normalize_overrides

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=normalize_overrides(overrides))
    except HydraException as err:
        raise UserInputError(f"the sweep overrides do not compose: {err}") from None


def connect(address: str) -> Any:
    """`ray` connected to the cluster at `address` (or a throwaway local one)."""
    # Before Ray is imported: no usage report leaves the machine (as MLflow's telemetry is off in
    # search/__init__.py), and every worker's lines reach the driver whole, not deduplicated.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address == "local":
        options |= {"include_dashboard": False, "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    try:
        ray.init(address=address, **options)
    except ConnectionError as err:
        raise UserInputError(
            f"--address={address}: no Ray cluster answers there ({err}). Start one with "
            "`ray start --head` (docs/clusters.md), give its HOST:PORT, or use --address local."
        ) from None
    return ray


def warn_unplaceable(ray: Any, cpus: float, gpus: float) -> None:
    """Say so when no node can hold a worker: Ray queues it until one joins (an autoscaler)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        largest = max((n.get("CPU", 0) for n in nodes), default=0)
        print(
            f"warning: no node of this Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs free to "
            f"give one worker (largest: {largest:g} CPUs); the workers wait until such a node "
            "joins.",
            file=sys.stderr,
            flush=True,
        )


def launch(args: argparse.Namespace) -> int:
    """Start the workers, wait for all of them, report; the driver's exit status."""
    from search.cluster import ray_task
    from search.cluster.checks import check_cluster_config
    from search.config.study import study_name

    check_args(args)
    cfg = compose_sweep(args.overrides)
    check_cluster_config(cfg)
    ray = connect(args.address)
    warn_unplaceable(ray, args.cpus_per_worker, args.gpus_per_worker)
    ray.cloudpickle.register_pickle_by_value(ray_task)
    task = ray.remote(ray_task.run_worker)
    flag = ray.remote(ray_task.StopFlag).options(num_cpus=0).remote()
    threads = max(1, int(args.cpus_per_worker))
    print(
        f"ray: {args.workers} worker(s) of study {study_name(cfg)!r} "
        f"({cfg.search.n_trials} trials in all) on {ray.get_runtime_context().gcs_address}",
        flush=True,
    )
    pending = {
        task.options(
            name=f"sweeplab-worker-{i}",
            num_cpus=args.cpus_per_worker,
            num_gpus=args.gpus_per_worker,
            max_retries=0,
        ).remote(i, list(args.overrides), str(PROJECT), threads, flag): i
        for i in range(args.workers)
    }
    statuses = wait_for(ray, pending, flag)
    return report(statuses)


def wait_for(ray: Any, pending: dict[Any, int], flag: Any) -> dict[int, tuple[int | None, str]]:
    """Each worker's (exit status, last lines) as it ends; Ctrl-C stops them all cleanly."""
    from search.cluster import ray_task
    from search.execution.resume import sigterm_as_interrupt

    statuses: dict[int, tuple[int | None, str]] = {}
    with sigterm_as_interrupt():
        try:
            while pending:
                # A bounded wait: Python runs signal handlers (Ctrl-C, SIGTERM) only between calls.
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    index = pending.pop(ref)
                    statuses[index] = _outcome(ray, ref)
                    print(f"ray: worker {index} {describe(statuses[index][0])}", flush=True)
        except KeyboardInterrupt:
            print("ray: interrupted; stopping the workers like Ctrl-C", file=sys.stderr, flush=True)
            ray.get(flag.stop.remote())
            ray.wait(list(pending), num_returns=len(pending), timeout=ray_task.STOP_GRACE_S + 30)
            print(
                "ray: resume with: python -m search.cluster.ray_workers "
                + shlex.join(sys.argv[1:]),
                file=sys.stderr,
                flush=True,
            )
            raise
    return statuses


def _outcome(ray: Any, ref: Any) -> tuple[int | None, str]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # the task itself died: node lost, worker killed
        return None, f"{type(err).__name__}: {err}"


def describe(status: int | None) -> str:
    """An exit status as words: `exited with status 3`, `was killed by SIGKILL`; None: lost."""
    if status is None:
        return "was lost (its Ray task died with its node or Ray worker)"
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def report(statuses: dict[int, tuple[int | None, str]]) -> int:
    """0 when every worker succeeded; else the failed ones' last lines and the first's status."""
    failed = {i: s for i, s in sorted(statuses.items()) if s[0] != 0}
    if not failed:
        print(f"ray: all {len(statuses)} worker(s) finished", flush=True)
        return 0
    for index, (status, tail) in failed.items():
        print(f"\nray: worker {index} {describe(status)}; its last lines:", file=sys.stderr)
        print(tail.rstrip(), file=sys.stderr, flush=True)
    first = next(iter(failed.values()))[0]
    return first if first is not None and first > 0 else LOST


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from search.cli.exit_codes import exit_codes

    status = LOST
    with exit_codes():
        status = launch(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
