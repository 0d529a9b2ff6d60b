"""Kill a real sweep process mid-trial (SIGINT, SIGTERM, SIGKILL), run the same command again,
and check the Optuna study and the MLflow store: every completed trial kept, the interrupted one
failed in both and redone with the same parameters, exactly n_trials finished, nothing RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.config.study import study_name
from search.engines.optuna.engine import OptunaEngine, counts_as_finished
from search.execution.output_lock import LOCK_NAME
from search.space.spec import flatten_space, parse_space
from search.sweep import prepare
from tests.conftest import ROOT, TINY, WORKERS, compose_config, run_cli
from tracking.mlflow_tracker import SweepTracker
from tracking.recovery import close_orphaned_runs

# Trials of a few seconds each, so that a kill lands inside one.
SWEEP = [
    "search.n_trials=3",
    "data.image_size=16",
    "train.epochs=20",  # long enough that the kill lands mid-trial even on an idle CPU
    "search.pruner=none",
    "tracking.log_models=false",
    WORKERS,  # the default path: the trial trains in a worker process the kill must not orphan
]
ELSEWHERE = ["search.heartbeat_interval=1", "search.grace_period=5"]


def wait_for_running_trial(cfg, number: int, proc: subprocess.Popen, timeout: float = 240):
    """Block until trial `number` is training (RUNNING with its parameters sampled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]  # the tail: the error
        # The MLflow store is created after the study: reading earlier could race its schema.
        if (Path(cfg.output_dir) / "mlflow.db").exists():
            study = optuna.load_study(study_name=study_name(cfg), storage=cfg.search.storage)
            trials = study.get_trials(deepcopy=False)
            if (
                len(trials) > number
                and trials[number].state == TrialState.RUNNING
                # every parameter sampled (Optuna stores them one suggest call at a time)
                and set(trials[number].params) == set(flatten_space(cfg.space))
            ):
                return trials[number]
        time.sleep(0.2)
    raise AssertionError(f"trial {number} never started")


def pretend_other_host(cfg, trial, tracker: SweepTracker) -> None:
    """Rewrite the killed worker's host, so only the heartbeat can tell that it is dead."""
    study = optuna.load_study(study_name=study_name(cfg), storage=cfg.search.storage)
    study._storage.set_trial_user_attr(
        trial._trial_id, "worker", {**trial.user_attrs["worker"], "host": "elsewhere"}
    )
    experiment = tracker.client.get_experiment_by_name(cfg.tracking.experiment_name)
    for run in tracker.client.search_runs([experiment.experiment_id]):
        tracker.client.set_tag(run.info.run_id, "sweeplab.host", "elsewhere")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL", "SIGKILL-elsewhere"])
def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path: Path, how: str) -> None:
    out = tmp_path / "runs"
    overrides = [*SWEEP, *(ELSEWHERE if how.endswith("elsewhere") else [])]
    args = [*TINY, f"output_dir={out}", *overrides]
    cfg = prepare(compose_config(overrides, out))
    name = study_name(cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        killed = wait_for_running_trial(cfg, 1, proc)
        # A live worker's trial and runs are not touched by another start's recovery (its pid
        # lives; the "elsewhere" case's 5 s grace period is too short to judge it on a busy CPU).
        engine = OptunaEngine(cfg, parse_space(cfg.space, cfg), name)
        tracker = SweepTracker(cfg.tracking)
        if not how.endswith("elsewhere"):
            assert engine.recover() == []
            assert close_orphaned_runs(tracker, name, engine.trial_alive) == []
        time.sleep(0.5)  # inside the trial's training (20 epochs)
        proc.send_signal(getattr(signal, how.split("-")[0]))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how in ("SIGINT", "SIGTERM"):
        assert proc.returncode == 130, stderr
        assert "interrupted: study" in stderr and "keeps 1 of 3 finished trials" in stderr
        assert "trial(s) #1 cut short" in stderr
        assert f"resume with: python -m search.run {' '.join(args[:2])}" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
        # The lock file still names the killed sweep: only the kernel's lock counts, and it
        # ended with the process, so the resume below needs no manual step.
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
        if how.endswith("elsewhere"):
            pretend_other_host(cfg, killed, tracker)
            time.sleep(6)  # past search.grace_period since the last heartbeat

    resumed = run_cli("search.run", *args)
    assert resumed.returncode == 0, resumed.stderr
    if how.startswith("SIGKILL"):
        assert "recovered from a killed run: trial(s) #1 marked failed" in resumed.stdout

    study = optuna.load_study(study_name=name, storage=cfg.search.storage)
    trials = study.get_trials()
    assert sum(counts_as_finished(t) for t in trials) == 3
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    interrupted = trials[1]
    assert "failure_reason" not in interrupted.user_attrs
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == interrupted.params == killed.params

    runs, sweeps = killed_then_finished(cfg)
    by_trial = {
        int(r.data.tags["sweeplab.optuna_trial"]): r
        for r in runs
        if r.data.tags["sweeplab.kind"] == "trial"
    }
    assert sorted(by_trial) == [0, 1, 2, 3]
    assert by_trial[1].info.status == "KILLED"
    assert by_trial[1].data.tags["sweeplab.state"] == "interrupted"
    for number in (0, 2, 3):
        assert by_trial[number].info.status == "FINISHED"
        assert by_trial[number].data.tags["sweeplab.state"] == "complete"
        assert trials[number].user_attrs["mlflow_run_id"] == by_trial[number].info.run_id
    # The completed trial of the killed run is kept, under the killed sweep's parent run.
    assert by_trial[0].data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id


def wait_for_running_kt_trial(cfg, number: int, proc: subprocess.Popen, timeout: float = 240):
    """Block until the MLflow run of Keras Tuner trial `number` is RUNNING; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]  # the tail: the error
        if (Path(cfg.output_dir) / "mlflow.db").exists():
            try:
                client = MlflowClient(cfg.tracking.tracking_uri)
                experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
                runs = client.search_runs([experiment.experiment_id]) if experiment else []
            except Exception:  # the other process may still be creating the schema
                runs = []
            for run in runs:
                tags = run.data.tags
                if (
                    tags.get("sweeplab.kind") == "trial"
                    and tags.get("sweeplab.trial_number") == str(number)
                    and run.info.status == "RUNNING"
                ):
                    return run
        time.sleep(0.2)
    raise AssertionError(f"trial {number} never started")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_interrupted_keras_tuner_sweep_ends_killed_and_resumes(tmp_path: Path, how: str) -> None:
    """Ctrl-C / SIGTERM during `search=keras_tuner`: exit 130, the parent and the cut trial
    KILLED, the resume command printed; resuming redoes the trial with the same values."""
    out = tmp_path / "runs"
    overrides = ["search=keras_tuner", "search.tuner=random", *SWEEP]
    overrides.remove("search.pruner=none")  # Keras Tuner has no pruner setting
    args = [*TINY, f"output_dir={out}", *overrides]
    cfg = prepare(compose_config(overrides, out))
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        killed = wait_for_running_kt_trial(cfg, 1, proc)
        time.sleep(0.5)  # inside the trial's training (20 epochs)
        proc.send_signal(getattr(signal, how))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: study" in stderr and "keeps 1 of 3 finished trials" in stderr
    assert "Keras Tuner project" in stderr and "Traceback" not in stderr
    assert "trial(s) #1 cut short" in stderr
    assert f"resume with: python -m search.run {' '.join(args[:2])}" in stderr

    resumed = run_cli("search.run", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 finished trials" in resumed.stdout

    runs, sweeps = killed_then_finished(cfg)
    trials = sorted(
        (r for r in runs if r.data.tags["sweeplab.kind"] == "trial"),
        key=lambda r: r.info.start_time,
    )
    assert [
        (r.data.tags["sweeplab.trial_number"], r.info.status, r.data.tags["sweeplab.state"])
        for r in trials
    ] == [
        ("0", "FINISHED", "complete"),
        ("1", "KILLED", "interrupted"),
        ("1", "FINISHED", "complete"),  # the same trial, redone on resume
        ("2", "FINISHED", "complete"),
    ]
    assert trials[1].info.run_id == killed.info.run_id
    # read back now: the snapshot taken when the run turned RUNNING may predate its params
    assert trials[1].data.params and trials[2].data.params == trials[1].data.params
    assert trials[0].data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id


# A final stage in which every step happens after a two-trial search: both trials re-evaluated
# (one seed each; contender_se=null keeps the weaker one a contender), the crowned config
# retrained on train + validation, averaged with its re-evaluation seed (an ensemble of 2),
# tested, exported, registered, then the HTML report.
FINAL = [
    "search.n_trials=2",
    "search.pruner=none",
    "final.top_k=2",
    "final.seeds=1",
    "final.contender_se=null",
    "final.retrain=true",
    "final.ensemble=2",
    "final.export=[keras]",
    "final.register=true",
]
# The steps recorded on the parent run (sweeplab.final.done_steps), in order, and those each
# fault point comes after: a kill at `ensemble` lands after the retraining, before the test.
DONE_STEPS = ["retrained", "tested", "exported", "registered"]
DONE_BEFORE = {
    "reevaluation": 0,
    "retraining": 0,
    "ensemble": 1,
    "tested": 2,
    "exported": 3,
    "registered": 4,
    "report": 4,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "where"),
    [("reevaluation", []), ("retraining", []), ("ensemble", []), ("tested", []),
     ("exported", []), ("registered", []), ("report", []), ("retraining:SIGINT", []),
     ("retraining", [WORKERS]), ("retraining:SIGINT", [WORKERS])],
    ids=["kill-9-reevaluation", "kill-9-retraining", "kill-9-ensemble", "kill-9-after-test",
         "kill-9-after-export", "kill-9-after-registration", "kill-9-before-report",
         "ctrl-c-retraining", "kill-9-retraining-in-a-worker", "ctrl-c-retraining-in-a-worker"],
)  # fmt: skip
def test_final_stage_cut_short_runs_again_on_resume(
    tmp_path: Path, fault: str, where: list[str]
) -> None:
    """A kill -9 or Ctrl-C inside the final stage used to lose it for good (the re-run said
    "nothing to train"): the re-run now finishes it exactly once, whichever step the kill landed
    in: one registered version, one report, no RUNNING run. `where`: the final stage's
    trainings in the sweep process (TINY) or in a worker."""
    out = tmp_path / "runs"
    args = [*TINY, f"output_dir={out}", *FINAL, *where]
    cfg = prepare(compose_config([*FINAL, *where], out))
    name = study_name(cfg)
    step, _, how = fault.partition(":")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SWEEPLAB_FAULT_AT": fault}
    killed = subprocess.run(
        [sys.executable, "-m", "search.run", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
        preexec_fn=ctrl_c_as_a_terminal_sends_it,
    )  # fmt: skip
    assert f"fault injected: killed at {step}" in killed.stdout, killed.stderr[-3000:]
    if how == "SIGINT":
        assert killed.returncode == 130, killed.stderr[-3000:]
        assert "interrupted in the final stage" in killed.stderr
        assert f"resume with: python -m search.run {' '.join(args[:2])}" in killed.stderr
    else:
        assert killed.returncode == -signal.SIGKILL
    reports = out / "reports"
    assert not reports.exists() or list(reports.iterdir()) == []
    registered_before = DONE_BEFORE[step] == len(DONE_STEPS)  # by the killed run
    client = MlflowClient(cfg.tracking.tracking_uri)
    assert len(client.search_model_versions()) == int(registered_before)
    exports = out / "exports" / name
    if step == "exported":  # as if cut short while writing: the re-run replaces the folder
        (exports / "model.keras").write_bytes(b"")
        (exports / "half-written.tmp").write_bytes(b"x")

    resumed = run_cli("search.run", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the final stage of its parent run" in resumed.stdout
    assert "nothing to train" not in resumed.stdout
    if registered_before:  # the killed run's registration stands: not repeated
        assert "already registered as version 1" in resumed.stdout
    else:
        assert "final: registered: the first champion" in resumed.stdout

    versions = client.search_model_versions()
    assert len(versions) == 1, [(v.name, v.version) for v in versions]
    assert [p.name for p in reports.iterdir()] == [f"{name}.html"]
    assert sorted(p.name for p in exports.iterdir()) == ["class_names.json", "model.keras"]
    assert (exports / "model.keras").stat().st_size > 0
    _, sweeps = killed_then_finished(cfg)
    cut = sweeps[0].data.tags.get("sweeplab.final.done_steps", "")
    assert (cut.split(",") if cut else []) == DONE_STEPS[: DONE_BEFORE[step]]
    final = sweeps[1].data.tags
    assert final["sweeplab.final.completed"] == "true"
    assert final["sweeplab.final.source"] == "ensemble"  # tested the shipped average
    assert final["sweeplab.final.done_steps"] == ",".join(DONE_STEPS)  # each step once
    assert final["sweeplab.final.reevaluated_trials"] == "2"
    assert (
        versions[0].tags["sweeplab.sweep_run_id"]
        == sweeps[0 if registered_before else 1].info.run_id
    )

    again = run_cli("search.run", *args)  # complete now, its final stage too
    assert again.returncode == 0 and "nothing to train" in again.stdout, again.stderr[-3000:]


def ctrl_c_as_a_terminal_sends_it() -> None:
    """The sweep's SIGINT disposition as a terminal leaves it (default), whatever the test
    runner's: a suite started in the background by a non-interactive shell (`make test-slow &`)
    ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt
    handler: the Ctrl-C case ran on and exited 0 there (twice, never in the foreground)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def killed_then_finished(cfg) -> tuple[list, list]:
    """The sweep's MLflow runs after a kill and a resume: none RUNNING, its two parent runs
    KILLED (the killed one) then FINISHED. Returns (every run, the parent runs in start order)."""
    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    sweeps = sorted(
        (r for r in runs if r.data.tags["sweeplab.kind"] == "sweep"),
        key=lambda r: r.info.start_time,
    )
    assert [r.info.status for r in sweeps] == ["KILLED", "FINISHED"]
    return runs, sweeps


def wait_for_lock(out: Path, proc: subprocess.Popen, timeout: float = 240) -> dict:
    """Block until the sweep `proc` holds the output folder's lock; what it wrote there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        try:
            details = json.loads((out / LOCK_NAME).read_text())
        except (OSError, ValueError):
            details = {}
        if details.get("pid") == proc.pid:
            return details
        time.sleep(0.1)
    raise AssertionError("the sweep never took its output folder's lock")


@pytest.mark.slow
def test_a_second_sweep_on_a_busy_output_folder_is_refused(tmp_path: Path) -> None:
    """Two sweeps at once on one output folder both trained the base config, then one crashed
    (`Cannot tell a COMPLETE trial`). The second is now refused, naming the first, which
    finishes its study alone (here with search.workers=2: its workers take no lock)."""
    out = tmp_path / "runs"
    overrides = [o for o in SWEEP if o not in (WORKERS, "train.epochs=20")]
    overrides += ["train.epochs=6", "search.workers=2", "final.enabled=false"]
    args = [*TINY, f"output_dir={out}", *overrides]
    cfg = prepare(compose_config(overrides, out))
    name = study_name(cfg)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        details = wait_for_lock(out, first)
        second = run_cli("search.run", *args)
        scratch = {p.name for p in (out / ".workers").glob("*")}
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    output = second.stdout + second.stderr
    assert second.returncode == 2, output
    assert "Traceback" not in output and second.stderr.count("sweeplab: error: ") == 1, output
    for text in (
        f"output_dir='{out}' is in use by another sweep: pid {first.pid} on host "
        f"{details['host']}, started {details['started']}, study '{name}'",
        f"command: python -m search.run {' '.join(args)}",
        "starts nothing",
    ):
        assert text in second.stderr, output
    assert scratch <= {str(first.pid)}  # the second handed nothing to workers of its own

    assert first.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=cfg.search.storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # none trained twice
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    kinds = sorted(r.data.tags["sweeplab.kind"] for r in runs)
    assert kinds == ["sweep", "trial", "trial", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
