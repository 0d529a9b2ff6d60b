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
from tracking.filters import quoted
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
        filter_string=f"tags.`{TAG}study` = {quoted(study)} and attributes.status = 'RUNNING'",
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


FINAL_COMPLETED = TAG + "final.completed"  # set on the parent run once its final stage ended
# Set on every parent run when it starts: its final stage records FINAL_COMPLETED. A run without
# it predates that record and is never taken for an interrupted final stage.
FINAL_TRACKED = TAG + "final.tracked"


def interrupted_final(tracker: SweepTracker, study: str) -> str | None:
    """The parent run of `study` whose final stage a kill or Ctrl-C cut short, or None.

    Only the latest parent run counts (a re-run that found nothing to do creates none). It was
    cut short when it records its final stage (FINAL_TRACKED) but not its end (FINAL_COMPLETED),
    and is not RUNNING in a live process (close_orphaned_runs has ended the dead ones KILLED;
    a live worker sharing the study finishes its own).
    """
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{TAG}study` = {quoted(study)} and tags.`{TAG}kind` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run, tags = runs[0], runs[0].data.tags
    if not tags.get(FINAL_TRACKED) or tags.get(FINAL_COMPLETED):
        return None
    if run.info.status == "RUNNING" and is_alive(_worker(run)) is not False:
        return None
    return str(run.info.run_id)


def mark_final_completed(tracker: SweepTracker) -> None:
    """Tag the open parent run: its final stage (test, exports, registration, report) ended."""
    assert tracker.parent_id is not None
    tracker.client.set_tag(tracker.parent_id, FINAL_COMPLETED, "true")
