"""The MLflow tags and links that make runs readable by a person in the MLflow UI.

- who and what started a run: `mlflow.user` and the `mlflow.source.*` tags MLflow's own fluent
  API sets (the client API used here sets none, so the UI said user "unknown" and no source);
- a trial's description (`mlflow.note.content`) and, when pruned, its run name, so "pruned"
  shows in the run list where a green "Finished" otherwise looks like a complete trial;
- the link that opens a sweep in MLflow's machine-learning view (a new browser otherwise lands
  in the GenAI view, whose sidebar has no model registry).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

from experiments.outcome import BUDGET_STOPPED, stopped_words

PROJECT = Path(__file__).resolve().parents[1]


def who_and_where(git_commit: str) -> dict[str, str]:
    """`mlflow.user` and `mlflow.source.*` for a run started by this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = os.environ.get("USER", "unknown")
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if entry is not None and entry.is_relative_to(PROJECT):
        module = ".".join(entry.relative_to(PROJECT).with_suffix("").parts)
        source = f"python -m {module}"
    else:
        source = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    tags = {
        "mlflow.user": user,
        "mlflow.source.name": source,
        "mlflow.source.type": "LOCAL",
    }
    if git_commit != "unknown":
        tags["mlflow.source.git.commit"] = git_commit
    return tags


def pruned_tags(
    run_name: str, epochs_trained: int, stopped_by: str | None = None, planned: Any = None
) -> dict[str, str]:
    """Run name and description of a trial stopped early, as the run list and run page show
    them: pruned (by the engine's pruner) or stopped by the budget (search.timeout); epochs
    counted from 1, as the terminal line says them."""
    words = stopped_words(stopped_by, int(epochs_trained), int(planned) if planned else None)
    if stopped_by == "budget":
        name, why = (
            BUDGET_STOPPED,
            ("the time left in search.timeout was the final stage's, so the sweep stopped it"),
        )
    else:
        name, why = (
            "pruned",
            ("the pruner stopped it because its validation curve was below the other trials'"),
        )
    return {
        "mlflow.runName": f"{run_name} ({name})",
        "mlflow.note.content": (
            f"{words[0].upper()}{words[1:]}: {why}. Its metrics are those of a short run, not a "
            "complete trial (MLflow status KILLED: stopped before its last epoch)."
        ),
    }


def failed_tags(reason: str) -> dict[str, str]:
    """The description of a failed trial: why it failed, on the run page."""
    return {"mlflow.note.content": f"Failed: {reason[:4000]}"}


def ml_view_url(ui: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI link to an experiment (or one run) in the machine-learning view."""
    base = f"{ui.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        base += f"/runs/{run_id}"
    return f"{base}?workflowType=machine_learning"


def ml_compare_url(ui: str, experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow UI's compare page for `run_ids`, in the machine-learning view (without
    workflowType it opens in the GenAI view)."""
    import json
    from urllib.parse import quote

    runs = quote(json.dumps(list(run_ids)), safe="")
    experiments = quote(json.dumps([str(experiment_id)]), safe="")
    return (
        f"{ui.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}"
        "&workflowType=machine_learning"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m tracking.run_tags OUTPUT_DIR PORT`: print the UI links of the latest sweep.

    `make ui` prints them before it starts the server.
    """
    args = sys.argv[1:] if argv is None else argv
    output_dir, port = (args + ["runs", "5000"])[:2]
    store = Path(output_dir).resolve() / "mlflow.db"
    ui = f"http://127.0.0.1:{port}"
    if not store.is_file():
        print(f"MLflow UI: {ui}  (no sweep in {output_dir} yet)")
        return 0
    from tracking.sweep_records import client_for

    client = client_for(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("sweeplab")
    if experiment is None:
        print(f"MLflow UI: {ui}")
        return 0
    print(f"MLflow UI, machine-learning view: {ml_view_url(ui, experiment.experiment_id)}")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`sweeplab.kind` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        link = ml_view_url(ui, experiment.experiment_id, runs[0].info.run_id)
        print(f"latest sweep ({runs[0].info.run_name}): {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
