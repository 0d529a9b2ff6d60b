"""Clusters on a real job system: submitit's local executor and a Ray head on 127.0.0.1.

Each launch runs 2 workers of one sweep on one PostgreSQL study and one MLflow tracking server
(tests/servers.py), through the documented commands: `python -m search.run -m +cluster=local
worker='range(2)' ...` (the same overlay form as +cluster=slurm) and `python -m
search.cluster.ray_workers --workers 2 ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY
from mlflow.tracking import MlflowClient
from servers import RAY_LOCAL_ENV, mlflow_server, postgres_server, ray_head

N_TRIALS = 4


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 400):
    """`python ARGS` from `cwd` with this checkout importable, as a user's shell would run it."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def _sweep_args(storage: str, tracking_uri: str, output_dir: Path) -> list[str]:
    return [
        *TINY,
        f"search.n_trials={N_TRIALS}",
        "search.study_name=clustered",
        "tracking.log_models=false",
        f"search.storage={storage}",
        f"tracking.tracking_uri={tracking_uri}",
        f"output_dir={output_dir}",
    ]


def _assert_two_workers_shared_one_study(storage: str, tracking_uri: str, output: str) -> None:
    """Exactly the total, all COMPLETE, distinct parameters; one parent run per worker (tagged
    with its index), each with a child; every run FINISHED."""
    study = optuna.load_study(study_name="clustered", storage=storage)
    why = [(t.number, t.state.name, t.params, t.user_attrs) for t in study.trials]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * N_TRIALS, (
        why,
        output,
    )
    params = [json.dumps(t.params, sort_keys=True) for t in study.trials]
    assert len(set(params)) == N_TRIALS, ("a parameter set was trained twice", why)

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id])
    statuses = [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs), (statuses, output)
    parents = {r.info.run_id: r for r in runs if r.data.tags["sweeplab.kind"] == "sweep"}
    children = [r for r in runs if r.data.tags["sweeplab.kind"] == "trial"]
    assert sorted(p.data.tags.get("sweeplab.worker") for p in parents.values()) == ["0", "1"]
    assert len(children) == N_TRIALS
    # Both workers trained: every parent run (one per worker) has at least one child.
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == set(parents), statuses


@pytest.mark.slow
def test_submitit_local_runs_two_workers_on_one_study(tmp_path) -> None:
    out, cwd = tmp_path / "runs", tmp_path / "cwd"
    with (
        postgres_server() as storage,
        mlflow_server(
            tmp_path / "mlflow", backend_store_uri=storage.replace("/optuna", "/mlflow")
        ) as tracking_uri,
    ):
        launch = [
            "-m",
            "search.run",
            "-m",
            "+cluster=local",
            "worker=range(2)",
            *_sweep_args(storage, tracking_uri, out),
        ]
        result = _run(launch, cwd)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        _assert_two_workers_shared_one_study(storage, tracking_uri, output)
    # Hydra's record of the launch, with one log per worker job, lies under output_dir; nothing
    # is written where the command was started (Hydra's default: ./multirun/).
    logs = sorted(out.glob("multirun/*/.submitit/*/*_log.out"))
    assert len(logs) == 2, output
    assert all("finished trials" in log.read_text() for log in logs)
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_ray_runs_two_workers_on_one_study(tmp_path) -> None:
    with (
        postgres_server() as storage,
        mlflow_server(
            tmp_path / "mlflow", backend_store_uri=storage.replace("/optuna", "/mlflow")
        ) as tracking_uri,
        ray_head(tmp_path / "ray", num_cpus=2) as address,
    ):
        launch = [
            "-m",
            "search.cluster.ray_workers",
            "--workers=2",
            f"--address={address}",
            "--cpus-per-worker=1",
            "--",
            *_sweep_args(storage, tracking_uri, tmp_path / "runs"),
        ]
        result = _run(launch, tmp_path / "cwd", env=RAY_LOCAL_ENV)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "ray: all 2 worker(s) finished" in output
        # Both workers' own output reached the driver.
        assert "(sweeplab-worker-0 " in output and "(sweeplab-worker-1 " in output
        _assert_two_workers_shared_one_study(storage, tracking_uri, output)


# Stores every worker could share (never contacted by the launch check).
SERVERS = [
    "worker=range(2)",
    "search.storage=postgresql+psycopg://u@127.0.0.1:9/optuna",
    "tracking.tracking_uri=http://127.0.0.1:9",
]


@pytest.mark.parametrize(
    ("launch", "says"),
    [
        # No -m: the overlay launches nothing by itself.
        (["-m", "search.run", "+cluster=local", "worker=0"], "add -m"),
        # Workers not named.
        (["-m", "search.run", "-m", "+cluster=slurm"], "names none"),
        # The default SQLite study: every machine would train the whole total alone.
        (["-m", "search.run", "-m", "+cluster=slurm", "worker=range(2)"], "search.storage="),
        (
            [
                "-m",
                "search.cluster.ray_workers",
                "--workers=2",
                "--",
                "search.storage=postgresql+psycopg://u@127.0.0.1:9/optuna",
            ],
            "tracking.tracking_uri=",
        ),
        (["-m", "search.cluster.ray_workers", "--workers=0"], "--workers=0"),
        (["-m", "search.cluster.ray_workers", "--workers=2", "--", "worker=3"], "'worker=3'"),
        (
            [
                "-m",
                "search.cluster.ray_workers",
                "--workers=2",
                "--",
                "search.storage=postgresql+psycopg://u@127.0.0.1:9/optuna",
                "tracking.tracking_uri=http://127.0.0.1:9",
                "train.objective=bogus",
            ],
            "train.objective='bogus'",
        ),
        # The whole set of the sweep's checks runs at launch, not only some of them.
        (
            ["-m", "search.run", "-m", "+cluster=slurm", *SERVERS, "train.batch_size=0"],
            "batch_size=0",
        ),
        (["-m", "search.run", "-m", "+cluster=slurm", *SERVERS, "search.sampler=tpee"], "tpee"),
        # Issue 28 (17): no Slurm here (sbatch), then servers that do not answer: refused now.
        (["-m", "search.run", "-m", "+cluster=slurm", *SERVERS], "sbatch"),
        (["-m", "search.run", "-m", "+cluster=local", *SERVERS], "cannot be reached"),
    ],
)
def test_a_bad_cluster_launch_fails_before_any_worker_starts(tmp_path, launch, says) -> None:
    result = _run([*launch, f"output_dir={tmp_path / 'runs'}"], tmp_path / "cwd", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("sweeplab: error: ") and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # no job, no study, no record
    assert not (tmp_path / "cwd" / "multirun").exists()  # nor Hydra's multirun folder


@pytest.mark.slow
def test_slurms_stop_signal_stops_a_worker_like_ctrl_c(tmp_path) -> None:
    """SIGUSR2 (submitit's signal: Slurm's time limit is near, or preemption) mid-trial.

    Left to submitit, it raised inside the trial, which then counted as a failed trial of the
    study; the overlay's callback makes it the Ctrl-C path instead."""
    import signal
    import time

    out = tmp_path / "runs"
    with (
        postgres_server() as storage,
        mlflow_server(
            tmp_path / "mlflow", backend_store_uri=storage.replace("/optuna", "/mlflow")
        ) as tracking_uri,
    ):
        args = [*_sweep_args(storage, tracking_uri, out), "train.epochs=40", "search.pruner=none"]
        launch = subprocess.Popen(
            [sys.executable, "-m", "search.run", "-m", "+cluster=local", "worker=0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        client = MlflowClient(tracking_uri)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and launch.poll() is None:
            experiment = client.get_experiment_by_name("sweeplab")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any(r.data.tags.get("sweeplab.kind") == "trial" for r in runs):
                break
            time.sleep(1)
        parent = next(r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep")
        os.kill(int(parent.data.tags["sweeplab.pid"]), signal.SIGUSR2)  # the worker's process
        output = launch.communicate(timeout=240)[0]
        assert launch.returncode != 0, output  # the job did not finish its sweep

        study = optuna.load_study(study_name="clustered", storage=storage)
        why = [(t.number, t.state.name, t.user_attrs) for t in study.trials]
        # The trial cut short is marked interrupted (it does not count) and queued again; no
        # trial failed with a reason.
        assert study.trials[0].state == optuna.trial.TrialState.FAIL, why
        assert "interrupted" in study.trials[0].user_attrs, why
        assert not any("failure_reason" in t.user_attrs for t in study.trials), why
        assert optuna.trial.TrialState.WAITING in [t.state for t in study.trials], why
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"], output
    log = next(out.glob("multirun/*/.submitit/*/*_log.out")).read_text()
    assert "resume with: python -m search.run " in log and "worker=0" in log, log
    assert "+cluster=" not in log.split("resume with:")[1], log


def test_a_study_database_half_set_up_by_something_else_is_bad_input_not_a_race(
    monkeypatch,
) -> None:
    """Workers starting together race to create Optuna's tables, and the loser retries
    (`optuna_engine._lost_schema_race`). A database whose tables are in the way for good (here
    a `studies` table of another shape) is not such a race: one paragraph naming the URL, at
    once, without retries."""
    import sqlalchemy

    from experiments.errors import UserInputError
    from search.engines.optuna import engine as optuna_engine

    waits: list[float] = []
    monkeypatch.setattr(optuna_engine.time, "sleep", waits.append)
    with postgres_server() as storage:
        engine = sqlalchemy.create_engine(storage)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE studies (study_id INTEGER)"))
        engine.dispose()
        with pytest.raises(UserInputError) as caught:
            optuna_engine.make_storage(storage)
    assert waits == [], caught.value
    assert f"search.storage={storage!r} cannot be opened" in str(caught.value)
