"""Trials in worker processes (issue 13): a worker that dies or runs past search.trial_timeout
fails only its own trial, with a reason, in Optuna and MLflow; the sweep goes on with a new
worker and finishes its total. search.workers=2 trains two trials at once on one study."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import WORKERS
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from experiments.errors import NoModel, UserInputError
from search.config.study import study_name
from search.execution import pool as workers
from search.sweep import prepare, sweep

# Epochs long enough that a kill lands inside one, trials short enough for 2 cores; trials in
# a worker process (the default; conftest's TINY trains in the sweep process).
SLOW_EPOCHS = ["data.image_size=16", "train.epochs=20", "search.pruner=none", WORKERS]
QUIET = ["tracking.log_models=false", "search.max_consecutive_failures=null"]


def study_of(cfg) -> optuna.Study:
    cfg = prepare(cfg)
    return optuna.load_study(study_name=study_name(cfg), storage=cfg.search.storage)


def trial_runs(cfg) -> dict[int, object]:
    cfg = prepare(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    return {
        int(r.data.tags["sweeplab.trial_number"]): r
        for r in runs
        if r.data.tags.get("sweeplab.kind") == "trial"
    }


def test_a_worker_killed_mid_epoch_fails_its_trial_and_the_sweep_finishes(
    make_config, monkeypatch
) -> None:
    cfg = make_config(*SLOW_EPOCHS, *QUIET, "search.n_trials=3", "search.sampler=random")
    train, trained = workers.Worker.train, []

    def train_then_kill_the_second(self, on_epoch, keep, after):
        trained.append(self.pid)
        if len(trained) == 2:  # SIGKILL this worker 0.3 s into the trial's second epoch

            def on_epoch_and_kill(epoch, logs):
                on_epoch(epoch, logs)
                if epoch == 0:
                    threading.Timer(0.3, os.kill, (self.pid, signal.SIGKILL)).start()

            return train(self, on_epoch_and_kill, keep, after)
        return train(self, on_epoch, keep, after)

    monkeypatch.setattr(workers.Worker, "train", train_then_kill_the_second)
    summary = sweep(cfg)

    assert summary.finished_trials == 3
    trials = study_of(cfg).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[1].user_attrs["failure_reason"]
    assert "worker process" in reason and "SIGKILL" in reason and "after epoch" in reason, reason
    run = trial_runs(cfg)[1]
    assert run.info.status == "FAILED"
    assert run.data.tags["sweeplab.failure_reason"] == reason
    assert trained[0] == trained[1] != trained[2]  # reused, then replaced after the kill


def test_a_trial_over_the_timeout_is_stopped_and_failed(make_config) -> None:
    cfg = make_config(
        *SLOW_EPOCHS, *QUIET, "train.epochs=200", "search.n_trials=1", "search.trial_timeout=3"
    )
    started = time.monotonic()
    with pytest.raises(NoModel):  # its only trial timed out: no model, exit status 3
        sweep(cfg)
    (trial,) = study_of(cfg).trials
    assert trial.state == TrialState.FAIL
    assert "search.trial_timeout=3" in trial.user_attrs["failure_reason"]
    run = trial_runs(cfg)[0]
    assert run.info.status == "FAILED"
    assert "search.trial_timeout=3" in run.data.tags["sweeplab.failure_reason"]
    assert time.monotonic() - started < 120  # 200 epochs would take far longer


def test_trials_whose_worker_cannot_start_are_recorded_failures_and_the_streak_stops(
    make_config, monkeypatch
) -> None:
    """A worker that dies before it is ready (a broken TensorFlow install, say) fails its trial
    like any dead worker: a FAILED MLflow run and Optuna trial with the reason, counted in the
    failure streak, so search.max_consecutive_failures stops the sweep (exit 3)."""
    from experiments.errors import TooManyFailures, TrialFailed

    cfg = make_config(
        WORKERS, "tracking.log_models=false", "search.n_trials=5",
        "search.max_consecutive_failures=2",
    )  # fmt: skip
    reason = "the worker process training this trial died: exited with code 1 before its first"

    def cannot_start(self, config_yaml, shared, costs):
        self.kill()
        raise TrialFailed(reason)

    monkeypatch.setattr(workers.Worker, "send_trial", cannot_start)
    with pytest.raises(TooManyFailures):
        sweep(cfg)
    runs = trial_runs(cfg)
    assert sorted(runs) == [0, 1]
    assert [r.info.status for r in runs.values()] == ["FAILED", "FAILED"]
    assert all(reason in r.data.tags["sweeplab.failure_reason"] for r in runs.values())
    trials = study_of(cfg).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(reason in t.user_attrs["failure_reason"] for t in trials)


@pytest.mark.parametrize(
    ("override", "mention"),
    [
        ("search.workers=-1", "search.workers=-1"),
        ("search.trial_timeout=-1", "search.trial_timeout=-1"),
        ("search.trial_timeout=60", "search.trial_timeout=60 needs worker processes"),
        ("search.worker.max_rss_mb=0", "search.worker.max_rss_mb=0"),
        ("search=keras_tuner search.workers=2", "search=optuna"),
    ],
)
def test_bad_worker_settings_fail_before_anything_starts(make_config, override, mention) -> None:
    cfg = make_config(*override.split())
    with pytest.raises(UserInputError, match=mention.replace(".", r"\.")):
        sweep(cfg)


@pytest.mark.slow
def test_two_workers_finish_exactly_n_trials_without_duplicates(make_config) -> None:
    cfg = make_config(
        *QUIET, "search.workers=2", "search.n_trials=5", "search.sampler=random", "train.epochs=3"
    )
    summary = sweep(cfg)
    assert summary.finished_trials == 5
    trials = study_of(cfg).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5  # none surplus, none failed
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 5
    runs = trial_runs(cfg)
    assert sorted(runs) == [t.number for t in trials]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    # Two at once: some trial started before another one ended.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_default_sweep_logs_the_models_worth_keeping_and_tests_the_best(make_config) -> None:
    """The default path end to end: trials in a worker process, which saves the model of each
    trial that improved on the best so far (tracking.log_models=best) for the sweep to log
    without loading it; the others keep no model. The final stage tests the best trial's
    logged model, which agrees with what the worker measured."""
    import mlflow

    cfg = make_config(WORKERS, "search.n_trials=4", "search.sampler=random")
    summary = sweep(cfg)
    assert summary.finished_trials == 4
    runs = trial_runs(cfg)
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    best_so_far = -1.0
    for number in sorted(runs):
        run = runs[number]
        value = run.data.metrics["final_val_accuracy"]
        assert ("sweeplab.model_uri" in run.data.tags) == (value > best_so_far), number
        best_so_far = max(best_so_far, value)
        assert run.data.metrics["rss_mb"] > 0 and run.data.metrics["sweep_rss_mb"] > 0
        assert run.data.metrics["model_params"] > 0  # measured in the worker
    best = trial_runs(cfg)[study_of(cfg).best_trial.number]
    model = mlflow.keras.load_model(best.data.tags["sweeplab.model_uri"])
    assert model.count_params() == best.data.metrics["model_params"]
    # The Models tab shows the model with the last epoch's metrics, as a model logged in-process.
    client = MlflowClient(prepare(cfg).tracking.tracking_uri)
    (output,) = client.get_run(best.info.run_id).outputs.model_outputs
    linked = {m.key: m for m in client.get_logged_model(output.model_id).metrics}
    assert output.step == 1 == linked["val_accuracy"].step  # train.epochs=2
    assert linked["val_accuracy"].value == pytest.approx(best.data.metrics["final_val_accuracy"])
    assert summary.final.source == "trial_model"
    # the data handed to the workers and the model files: removed when the sweep ends
    assert not (Path(prepare(cfg).output_dir) / ".workers").exists()


def sweep_command_reporting(prelude: str, report: str, output_dir: Path) -> str:
    """Run `python -m search.run` (2 tiny trials in a worker, no final stage) in a subprocess
    after `prelude`, and return the last line it prints at exit: `report`'s value."""
    import subprocess
    import sys

    from conftest import ROOT, TINY

    code = (
        "import atexit, runpy, sys\n"
        f"{prelude}"
        f"atexit.register(lambda: print({report}))\n"
        "sys.argv = ['search.run', *sys.argv[1:]]\n"
        "runpy.run_module('search.run', run_name='__main__', alter_sys=True)\n"
    )
    args = [*TINY, WORKERS, "search.n_trials=2", "final.enabled=false", f"output_dir={output_dir}"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 finished trials" in done.stdout
    return done.stdout.rstrip().splitlines()[-1]


def test_the_sweep_process_never_imports_tensorflow_while_workers_train(tmp_path) -> None:
    """TensorFlow's import (about 4 s) is paid in the worker, beside the sweep's own start-up,
    and not twice; the sweep process imports it only for the final stage (off here)."""
    last = sweep_command_reporting("", "'tensorflow' in sys.modules", tmp_path)
    assert last == "False"


def test_the_first_worker_starts_before_hydra_and_the_pool_adopts_it(tmp_path) -> None:
    """`python -m search.run` starts slot 0's worker at its first line (TensorFlow imports
    while Hydra composes and the sweep checks and sets up); the pool takes that worker instead
    of starting another, and it trains the trials."""
    prelude = (
        "import search.execution.pool as w\n"
        "started, adopted = [], []\n"
        "init, adopt = w.Worker.__init__, w._adopt_early\n"
        "def counting(self, *a, **k):\n"
        "    init(self, *a, **k); started.append(self.pid)\n"
        "def adopting(*a, **k):\n"
        "    worker = adopt(*a, **k); adopted.append(worker is not None); return worker\n"
        "w.Worker.__init__, w._adopt_early = counting, adopting\n"
    )
    last = sweep_command_reporting(prelude, "len(started), adopted", tmp_path)
    assert last == "1 [True]"  # one worker started in all, the early one, and it was adopted


def test_an_early_worker_is_adopted_only_where_it_matches_and_never_outlives_bad_input(
    tmp_path, monkeypatch
) -> None:
    """A worker started before the config was known inherited this process's KERAS_HOME: a
    sweep that sets another (keras_home=DIR) gets a fresh worker and the early one is killed.
    A command line that fails its checks exits 2 without leaving its early worker behind."""
    import subprocess
    import sys
    import uuid

    from conftest import ROOT

    monkeypatch.delenv("KERAS_HOME", raising=False)
    settings = workers.WorkerSettings()
    workers.start_early()
    early = workers._early
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # what keras_home=DIR does
    pool = workers.WorkerPool(settings)
    try:
        pool.start()
        assert pool._workers[0] is not early and not early.process.is_alive()
        assert pool._workers[0].keras_home == str(tmp_path / "keras")
    finally:
        pool.close()
    monkeypatch.delenv("KERAS_HOME")
    workers.start_early()
    early = workers._early
    pool = workers.WorkerPool(settings)
    try:
        pool.start()
        assert pool._workers[0] is early  # it matches: adopted, and it answers
        message = early._receive(time.monotonic() + 120, [None], "start")
        assert message == ("ready", early.pid)
    finally:
        pool.close()

    marker = uuid.uuid4().hex  # in the environment of every process the command starts
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "search.workers=-1", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "SWEEPLAB_TEST_MARKER": marker},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "search.workers=-1" in done.stderr + done.stdout
    time.sleep(0.5)
    left = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SWEEPLAB_TEST_MARKER={marker}".encode() in environ.read_bytes():
                left.append(environ.parent.name)
        except OSError:
            continue
    assert left == [], f"processes left by the failed command: {left}"


@pytest.mark.parametrize(
    ("args", "early"),
    [
        ([], True),
        (["+sweep=transfer", "search.workers=2"], True),
        (["search.workers=0"], False),
        (["search.workers=0", "search.workers=1"], True),  # the last override wins
        (["-m", "hydra/launcher=submitit_local"], False),  # the launcher's jobs train
        (["--cfg", "job"], False),
        (["--help"], False),
    ],
)
def test_which_command_lines_start_a_worker_before_hydra(args, early) -> None:
    from search.cli.command import trains_here

    assert trains_here(args) is early


def test_workers_are_capped_at_trials_cores_and_memory(monkeypatch, capsys) -> None:
    """search.workers=64 for 2 trials used to start 64 TensorFlow processes: capped, said."""
    monkeypatch.setattr(workers, "available_mb", lambda: 64_000.0)
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(16)))
    settings = workers.WorkerSettings(workers=64)
    assert workers.capped(settings, 2).workers == 2
    assert "search.workers=64 capped at 2: 2 trial(s) left to run" in capsys.readouterr().out
    assert workers.capped(settings, 100).workers == 16  # the cores
    assert "16 core(s)" in capsys.readouterr().out
    monkeypatch.setattr(workers, "available_mb", lambda: 1_000.0)
    assert workers.capped(settings, 100).workers == 2  # 1000 MB at ~400 MB a worker
    assert "1000 MB available" in capsys.readouterr().out
    assert workers.capped(workers.WorkerSettings(workers=2), 100).workers == 2
    assert capsys.readouterr().out == ""  # within every limit: nothing said


@pytest.mark.slow
def test_a_sweep_with_more_workers_than_trials_starts_only_what_it_uses(make_config, capsys):
    """The sweep builds its pool from the capped settings: 2 worker slots, not 64."""
    cfg = make_config("search.workers=64", "search.n_trials=2", "final.enabled=false")
    started: list[int] = []
    real = workers.WorkerPool.__init__

    def counting(self, settings):  # the pool the sweep really builds
        started.append(settings.workers)
        real(self, settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workers.WorkerPool, "__init__", counting)
        summary = sweep(cfg)
    assert summary.finished_trials == 2
    assert started and started[0] <= 2
    assert "search.workers=64 capped at" in capsys.readouterr().out


def test_the_next_start_removes_scratch_folders_of_killed_sweeps(make_config) -> None:
    """A kill -9 left OUTPUT_DIR/.workers/<pid>/ (decoded data) forever: the next start removes
    the folders of dead pids and keeps those of live ones (another sweep in the folder)."""
    import subprocess
    import sys

    cfg = prepare(make_config("search.n_trials=1", "final.enabled=false"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = Path(cfg.output_dir) / ".workers" / gone.stdout.strip()
    live = Path(cfg.output_dir) / ".workers" / str(os.getppid())
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "train_x.npy").write_bytes(b"decoded")
    sweep(cfg)
    assert not dead.exists()
    assert (live / "train_x.npy").exists()


def test_tensorflow_temp_files_are_removed_with_the_sweep(tmp_path: Path) -> None:
    """TensorFlow's __autograph_generated_file*.py piled up in the system's temp folder, one set
    per worker and sweep: they now live in the sweep's scratch folder, removed at its end."""
    import subprocess
    import sys

    from conftest import ROOT, TINY

    system_tmp = tmp_path / "system_tmp"  # TMPDIR: this sweep's, apart from other programs'
    system_tmp.mkdir()
    out = tmp_path / "runs"
    args = [*TINY, WORKERS, f"output_dir={out}", "search.n_trials=1", "final.enabled=false"]
    env = {**os.environ, "TMPDIR": str(system_tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "search.run", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in system_tmp.rglob("__autograph_generated_file*")) == []
    assert not (out / ".workers").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["optuna", "keras_tuner"])
def test_trials_that_all_time_out_leave_no_model_and_do_not_block_the_next_run(
    make_config, engine
) -> None:
    """Every trial past search.trial_timeout used to end a "complete" study with no model and
    exit 0, and the next run said "nothing to train": now NoModel (exit 3), and the timed-out
    trials do not count while none completed, so a sane timeout trains them."""
    base = [f"search={engine}", WORKERS, "search.n_trials=2", "final.enabled=false", *QUIET]
    base += ["search.pruner=none"] if engine == "optuna" else []
    # The same study (trial_timeout defines no trial); 0.01 s stops each in its first epoch.
    with pytest.raises(NoModel, match="has no model") as err:
        sweep(make_config(*base, "search.trial_timeout=0.01"))
    assert "larger search.trial_timeout" in str(err.value)
    summary = sweep(make_config(*base))  # the same study: its two trials are trained now
    assert summary.best_value is not None
    # With a completed trial the two timed-out ones count again: 2 failed + 2 completed.
    assert summary.finished_trials == 4
