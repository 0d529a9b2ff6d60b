"""Close the MLflow runs that a dead sweep process left RUNNING.

A process killed with SIGKILL (or by the OOM killer, or a power cut) cannot end its runs, so the
next start of the same study closes them: status KILLED, tag sweeplab.state=interrupted and a
reason. A run belongs to a dead process when its worker tags (host, pid, pid start) name a
process of this host that no longer exists. Runs of another host are judged by the engine (its
heartbeat): a trial run whose engine trial is no longer running is dead, and so is a sweep run
that had such a trial. Runs of live workers sharing the study are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import mlflow
from mlflow.entities import Run, RunStatus

from experiments.outcome import TrialOutcome
from tracking.liveness import is_alive
from tracking.mlflow_tracker import TAG, SweepTracker

# Given a RUNNING trial run, is its engine trial still running? None: the engine cannot tell.
TrialAlive = Callable[[Mapping[str, str]], bool | None]  # a trial run's tags -> alive?


def _worker(run: Run) -> dict[str, str]:
    tags = run.data.tags
    return {k: tags.get(TAG + k, "") for k in ("host", "pid", "pid_start")}


def close_orphaned_runs(
    tracker: SweepTracker, study: str, trial_alive: TrialAlive = lambda tags: None
) -> list[Run]:
    """End as KILLED every RUNNING run of `study` whose process is gone; returns those runs."""
    client = tracker.client
    running = client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{TAG}study` = '{study}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    trials = [r for r in running if r.data.tags.get(TAG + "kind") != "sweep"]
    sweeps = [r for r in running if r.data.tags.get(TAG + "kind") == "sweep"]
    closed: list[Run] = []
    for run in trials:
        alive = is_alive(_worker(run))
        if alive is None:
            alive = trial_alive(run.data.tags)
        if alive is False:
            _close(client, run, "its process is gone (killed); closed by the next start")
            closed.append(run)
    orphan_parents = {r.data.tags.get("mlflow.parentRunId") for r in closed}
    for run in sweeps:
        alive = is_alive(_worker(run))
        if alive is False or (alive is None and run.info.run_id in orphan_parents):
            _close(client, run, "its process is gone (killed); closed by the next start")
            closed.append(run)
    return closed


def _close(client: mlflow.MlflowClient, run: Run, reason: str) -> None:
    client.log_batch(
        run.info.run_id,
        tags=[
            mlflow.entities.RunTag(TAG + "state", TrialOutcome.INTERRUPTED.value),
            mlflow.entities.RunTag(TAG + "failure_reason", reason),
        ],
    )
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
