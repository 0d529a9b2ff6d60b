"""What a person sees in MLflow after a sweep: model metrics of the final epoch, readable names,
pruned trials that say so, user and source, the best params on the parent run, the UI link."""

from __future__ import annotations

import getpass
import json
import os
import time

import pytest
from mlflow.tracking import MlflowClient

from search.sweep import prepare, sweep
from tests.conftest import ROOT, run_cli
from tests.test_pruning_failures import GOOD, queue, trial_runs


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory):
    """3 trials that learn, then one pruned after its first epoch; models logged, final on."""
    from tests.conftest import compose_config

    out = tmp_path_factory.mktemp("records") / "runs"
    cfg = compose_config(
        [
            "search.n_trials=4",
            "train.epochs=3",
            "search.pruners.median.n_startup_trials=3",
            "search.pruners.median.n_warmup_steps=0",
            "+space.optimizer.learning_rate={type:float,low:1e-8,high:0.01,log:true}",
            "tracking.log_models=all",  # three equal trials: "best" would keep the first only
        ],
        out,
    )
    queue(cfg, GOOD, GOOD, GOOD, {**GOOD, "optimizer.learning_rate": 1e-8})
    return prepare(cfg), sweep(cfg)


def test_logged_model_shows_the_final_epoch_metrics(pruned_sweep) -> None:
    cfg, summary = pruned_sweep
    client = MlflowClient(cfg.tracking.tracking_uri)
    runs = trial_runs(cfg)
    for number in range(3):
        run = client.get_run(runs[number].info.run_id)
        (output,) = run.outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.name == f"{summary.study_name}-trial-{number}"  # not "model"
        linked = {m.key: m for m in model.metrics}
        curve = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == [0, 1, 2]
        # The Models tab shows the end of training (step 2), not epoch 0.
        assert linked["val_accuracy"].step == 2 == output.step
        assert linked["val_accuracy"].value == pytest.approx(curve[-1].value)
        assert linked["val_accuracy"].value == pytest.approx(run.data.metrics["final_val_accuracy"])
    parent = client.get_run(summary.parent_run_id)
    final_model = parent.outputs.model_outputs[0].model_id
    assert client.get_logged_model(final_model).name == f"{summary.study_name}-final"


def test_pruned_trials_say_so_and_runs_have_user_and_source(pruned_sweep) -> None:
    cfg, summary = pruned_sweep
    client = MlflowClient(cfg.tracking.tracking_uri)
    runs = trial_runs(cfg)
    pruned = client.get_run(runs[3].info.run_id)
    assert pruned.info.run_name == "trial-3 (pruned)"
    assert pruned.data.tags["mlflow.note.content"].startswith("Pruned after epoch ")
    assert "the pruner stopped it" in pruned.data.tags["mlflow.note.content"]
    assert runs[0].info.run_name == "trial-0"
    parent = client.get_run(summary.parent_run_id)
    for run in [parent, *runs.values()]:
        assert run.data.tags["mlflow.user"] == getpass.getuser()
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.source.name"]
        assert run.data.tags["mlflow.source.git.commit"] == parent.data.tags["sweeplab.git_commit"]
    # The best params are the parent run's params (not only tags cut off in the run list).
    assert parent.data.params == {k: str(v) for k, v in summary.best_params.items()}


def test_leaderboard_and_report_show_the_pruned_trial(pruned_sweep) -> None:
    cfg, summary = pruned_sweep
    done = run_cli("search.report", "--output-dir", cfg.output_dir, "--format", "json")
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    assert [r["state"] for r in board] == ["complete"] * 3 + ["pruned"]
    assert board[-1]["trial"] == 3 and board[-1]["epochs"] == 1
    report = cfg.output_dir + f"/reports/{summary.study_name}.html"
    with open(report) as f:
        text = f.read()
    assert "pruned after epoch 1 of 3 by the median pruner" in text
    assert "Intermediate values (what the pruner saw)" in text


def test_sweep_prints_the_machine_learning_view_link(tmp_path) -> None:
    done = run_cli(
        "search.run", f"output_dir={tmp_path}", "data.image_size=8", "train.epochs=1",
        "model.filters=8", "model.dense_units=16", "search.n_trials=1", "final.enabled=false",
        "tracking.log_models=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("sweeplab").experiment_id], "tags.`sweeplab.kind`='sweep'"
    )
    link = (
        f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/"
        f"{parent.info.run_id}?workflowType=machine_learning"
    )
    assert link in done.stdout
    ui = run_cli("tracking.run_tags", str(tmp_path), "5000")
    assert link in ui.stdout


def test_a_new_sqlite_store_appears_whole_even_when_processes_race(tmp_path) -> None:
    """Built aside and linked into place: a reader never sees (nor migrates) a half-made store,
    and of two processes creating it at once, one store wins and both can use it."""
    import subprocess
    import sys

    from tracking.mlflow_tracker import create_sqlite_store

    db = tmp_path / "store" / "mlflow.db"
    code = (
        "import sys; from tracking.mlflow_tracker import create_sqlite_store; "
        "create_sqlite_store(sys.argv[1])"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no template: both build
    racers = [
        subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"], cwd=ROOT, env=env)
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in racers] == [0, 0]
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]  # no leftovers
    client = MlflowClient(f"sqlite:///{db}")
    assert client.create_experiment("both-use-it")
    before = db.stat().st_mtime_ns
    create_sqlite_store(f"sqlite:///{db}")  # an existing store is left alone
    assert db.stat().st_mtime_ns == before
    assert client.get_experiment_by_name("both-use-it") is not None


def test_new_stores_are_copied_from_a_template_and_a_damaged_one_is_rebuilt(
    tmp_path, monkeypatch
) -> None:
    """The first store builds MLflow's schema and keeps it as the template; the next is a copy
    (an empty, working store whose Default experiment is stamped now); a damaged template is
    never used: the store is built again and the template replaced."""
    from tracking.mlflow_tracker import create_sqlite_store, store_template

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    template = store_template()
    assert template.parent.parent.parent == tmp_path / "cache" and not template.exists()
    create_sqlite_store(f"sqlite:///{tmp_path / 'first.db'}")
    assert template.is_file()
    MlflowClient(f"sqlite:///{tmp_path / 'first.db'}").create_experiment("only-in-first")

    started = int(time.time() * 1000)
    create_sqlite_store(f"sqlite:///{tmp_path / 'copy.db'}")
    copy = MlflowClient(f"sqlite:///{tmp_path / 'copy.db'}")
    experiments = copy.search_experiments()
    assert [e.name for e in experiments] == ["Default"]  # nothing of another store in it
    assert experiments[0].artifact_location == str(tmp_path / "mlruns" / "0")
    assert experiments[0].creation_time >= started
    assert copy.create_experiment("works") and copy.get_experiment_by_name("works")

    template.write_bytes(b"not a database")
    create_sqlite_store(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    rebuilt = MlflowClient(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    assert [e.name for e in rebuilt.search_experiments()] == ["Default"]
    assert template.read_bytes()[:16] == b"SQLite format 3\x00"  # replaced by a good one
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_curves_over_mlflows_batch_limit_are_all_written_with_the_closing_figures(
    tmp_path,
) -> None:
    """Epochs held back between writes (at most every CURVES_EVERY_S) reach the store at the
    trial's close, split into calls MLflow accepts (1,000 metrics each) when they are many."""
    from tracking.mlflow_tracker import TrialRun, create_sqlite_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create_sqlite_store(uri)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("curves")).info.run_id
    record = TrialRun(client, run_id)
    logger = record.callback()
    for epoch in range(600):  # 1,200 metrics, all within one write interval
        logger.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_accuracy": epoch / 600})
    assert logger.pending == 1200
    record.log_batch({"train_seconds": 3.0}, {"sweeplab.note": "closing"})
    assert logger.pending == 0
    assert len(client.get_metric_history(run_id, "loss")) == 600
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 600
    run = client.get_run(run_id)
    assert run.data.metrics["train_seconds"] == 3.0
    assert run.data.tags["sweeplab.note"] == "closing"
