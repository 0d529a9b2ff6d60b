"""One sweep: validate the config, open the engine's study, run trials under a parent MLflow run,
then the final stage. The command line around it is `search.run`; tests call `sweep(cfg)`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import shutil
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.data.folders import scan_folder
from experiments.errors import NoModel, UserInputError
from search.checks import check_config
from search.config.models import check_models
from search.config.stores import check_stores, create_output_dir, ui_command
from search.config.study import study_name
from search.engines import Engine, make_engine, stored_model
from search.engines.staging import staged_note, staged_on, staged_runs
from search.execution.data_fit import load_fitted
from search.execution.leftovers import (
    Before,
    remove_dead_scratch,
    removed_on_error,
    scratch_folder,
)
from search.execution.output_lock import hold_output_dir
from search.execution.pool import (
    WorkerPool,
    WorkerSettings,
    capped,
    discard_early,
    interrupts_stop,
    worker_settings,
)
from search.execution.store_wal import finish, write_ahead
from search.final.champion import champion, front_summary
from search.final.faults import fault_point
from search.final.reevaluate import Contenders
from search.final.stage import FinalResult, finalize, retrained_models
from search.space.spec import Param
from search.trials import preflight
from search.trials.budget import Budget
from search.trials.objectives import cost_plan, objectives_of, pruning_note
from search.trials.outcomes import no_model
from search.trials.types import Best

if TYPE_CHECKING:
    from search.trials.runner import TrialRunner


@dataclass
class SweepSummary:
    """What a finished sweep invocation reports back."""

    study_name: str
    engine: str
    parent_run_id: str | None  # None when the study was already complete
    best_value: float | None
    best_params: dict[str, Any]
    best_run_id: str | None
    finished_trials: int
    final: FinalResult | None = None  # what the test / registry / export stage produced
    front: list[str] = field(default_factory=list)  # several objectives: the front, the choice


def prepare(cfg: DictConfig) -> DictConfig:
    """Make paths absolute (so stores do not depend on the cwd) and point Keras at its cache."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.output_dir = str(Path(cfg.output_dir).expanduser().resolve())
        if cfg.data.get("path"):  # data=directory: a folder relative to where the user ran it
            cfg.data.path = str(Path(str(cfg.data.path)).expanduser().resolve())
        if cfg.get("keras_home"):
            cfg.keras_home = str(Path(cfg.keras_home).expanduser().resolve())
            os.environ["KERAS_HOME"] = cfg.keras_home
    return cfg


def sweep(cfg: DictConfig) -> SweepSummary:
    """Validate the config, then run the configured engine under one MLflow parent run."""
    started = time.monotonic()  # search.timeout counts from here (search/trials/budget.py)
    cfg = prepare(cfg)
    # Bad input: every value and setting, and every value the space can produce (the models
    # only once the output folder exists: their check may download a weights file).
    space = check_config(cfg, models=False)
    note = pruning_note(cfg)  # several objectives: Optuna cannot prune them
    if note:
        print(note, flush=True)
    # search.workers, trial_timeout, worker.*; no more workers than the trials, cores and memory
    # can use (the study is not open yet: a resumed one may need fewer still, never more).
    settings = capped(worker_settings(cfg), int(cfg.search.n_trials))
    check_stores(cfg)  # bad input: every store and folder, read-only, before anything is created
    name = study_name(cfg)
    if cfg.data.get("source") == "directory":  # its layout (and links), read-only; load_data
        scan_folder(cfg.data.get("path"), warn=False)  # scans again, and warns
    before = Before.now(cfg)  # a start refused for bad input removes what it created from here
    # One sweep at a time in an output folder, before any store is opened or created: a second
    # is refused, naming the first (search/execution/output_lock.py). Not inside
    # removed_on_error: a folder that the first created since `before` is the first's.
    lock = hold_output_dir(cfg, name)
    try:
        return _start(cfg, space, settings, name, started, before)
    except UserInputError:
        lock.restore()  # the lock file as this start found it (removed above if it made it)
        raise
    finally:
        lock.release()  # last: after the stores are finished and the workers are gone


def _start(
    cfg: DictConfig,
    space: list[Param],
    settings: WorkerSettings,
    name: str,
    started: float,
    before: Before,
) -> SweepSummary:
    """The sweep with its output folder held: its stores, scratch folder and worker pool."""
    engine = str(cfg.search.engine)
    stores = [str(cfg.tracking.tracking_uri), str(cfg.search.get("storage") or "")]
    # SQLite stores: commits without a sync each (search/execution/store_wal.py)
    write_ahead(*stores)
    remove_dead_scratch(cfg.output_dir)  # what a killed sweep handed its workers
    scratch = scratch_folder(cfg)
    # TensorFlow writes __autograph_generated_file*.py to the temp folder and never removes them:
    # this sweep's and its workers' go under its scratch folder, removed at its end.
    settings = dataclasses.replace(settings, tmp=str(scratch / "tmp"))
    system_tmp = tempfile.tempdir
    pool = WorkerPool(settings) if settings.workers else None
    if pool is None:
        discard_early()  # started by `python -m search.run` for a sweep that trains here
    try:
        if pool is not None:  # TensorFlow's import (~4 s) runs in the workers from now on, beside
            pool.start()  # this process's set-up; one that fails kills them (never trained)
        with interrupts_stop(pool):
            return _sweep(cfg, space, name, engine, pool, started, before)
    finally:
        finish(*stores)  # a finished store is one file again
        if pool is not None:
            pool.close()
        tempfile.tempdir = system_tmp
        shutil.rmtree(scratch, ignore_errors=True)
        with suppress(OSError):  # other sweeps' folders may still be in it
            scratch.parent.rmdir()


def _sweep(
    cfg: DictConfig,
    space: list[Param],
    name: str,
    engine: str,
    pool: WorkerPool | None,
    started: float,
    before: Before,
) -> SweepSummary:
    """The sweep after its config passed every check; trials train in `pool` (None: here);
    `started`: the invocation's start (time.monotonic()), where search.timeout counts from;
    `before`: what existed before this start took the output folder's lock."""
    # What is found from here on (a weights file, the data) removes what this start created.
    with removed_on_error(cfg, before):
        create_output_dir(Path(cfg.output_dir))  # a file system that refuses it: fail now
        check_models(cfg, space)
        # Heavy imports only once the config is known to be good: bad input fails in a second.
        from experiments.quiet import quiet_logs, quiet_tensorflow

        quiet_tensorflow() if pool is None else quiet_logs()
        from search.execution.resume import print_final_interrupted, print_interrupted, recover
        from search.trials.runner import TrialRunner
        from tracking.mlflow_tracker import SweepTracker
        from tracking.recovery import interrupted_final, mark_final_completed

        # Bad data fails here, before any store is created or opened. A decoded set that would
        # not fit in memory is decoded to the file cache instead (search/execution/data_fit.py).
        data = load_fitted(cfg.data, int(cfg.seed), pool)
        # Only now, with the input known good, this process's temporary files (TensorFlow's
        # autograph files, the final stage's too) go under its scratch folder: a sweep refused
        # for bad input leaves nothing in a shared output folder, not even for a moment.
        tmp = scratch_folder(cfg) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(tmp)  # sweep() restores it and removes the folder
        contenders = Contenders.for_config(cfg, len(data.val))
        scale = (len(data.train) + len(data.val)) / max(len(data.train), 1)  # final.retrain's data
        budget = Budget.from_config(
            cfg, contenders, started, scale, contenders.noise, retrained_models(cfg)
        )
        # search.timeout: a trial's parts timed, and a budget too small for trial 0 and the
        # final stage refused, before the study or any MLflow run is created.
        stored = stored_model(cfg, name) if budget.limited else None
        plan = preflight.check(cfg, data, budget, pool, stored, started)
        search = make_engine(cfg, space, name)
        done = search.finished()  # trials cut short by a kill never count, so recovery can wait
        if plan is not None and stored is None:  # known now that the study is open
            plan = preflight.confirm(plan, search.best() is not None)
        print(
            f"sweep {cfg.sweep_name!r}: study {name!r}, engine {engine}, {_objectives(cfg)}, "
            f"{done} of {cfg.search.n_trials} trials finished",
            flush=True,
        )
        tracker = SweepTracker(cfg.tracking)
        recover(search, tracker, name)  # a killed parent run ends KILLED here
        # A complete study whose final stage a kill or Ctrl-C cut short runs that stage again.
        resumed_from = (
            interrupted_final(tracker, name) if done >= int(cfg.search.n_trials) else None
        )
        if done >= int(cfg.search.n_trials) and resumed_from is None:
            print(
                f"the study is complete (search.n_trials={cfg.search.n_trials}): nothing to "
                "train. Raise search.n_trials to add trials."
            )
            if search.best() is None:  # complete, and nothing to show for it
                raise NoModel(no_model(name, done))
            return _summary(name, engine, None, search.best(), done)
        if resumed_from is not None:
            print(
                f"the study is complete, but the final stage of its parent run {resumed_from} "
                "was cut short (killed or interrupted): running the final stage again",
                flush=True,
            )
    if resumed_from is None:
        share = float(cfg.search.staged.share) if staged_runs(cfg) else 0.0  # the screen's
        preflight.announce(plan, budget, cfg, len(data.val), share)
    runner = TrialRunner(
        cfg,
        tracker,
        {"study": name, "engine": engine},
        search.is_pruned,
        data=data,
        pool=pool,
        budget=budget,
    )
    del data  # the runner's: with workers, it maps the pixels from their shared file instead
    # Everything alive now (TensorFlow, MLflow, the data) lives for the whole sweep: freezing it
    # keeps the per-trial gc.collect() from re-scanning it (0.3-0.6 s a trial otherwise).
    gc.freeze()
    tags = {
        "engine": engine,
        "study": name,
        "sweep_name": cfg.sweep_name,
        **search.tags,  # engine-specific: the sampler (and pruner), the Keras Tuner tuner kind
        # A cluster launch's worker index (search/cluster/): which job this parent run is.
        **({"worker": cfg.worker} if cfg.get("worker") is not None else {}),
        **({"resumes_final_of": resumed_from} if resumed_from else {}),
        "final.tracked": "true",  # its final stage is recorded: see tracking/recovery.py
    }
    artifacts = {
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "space.yaml": OmegaConf.to_yaml(cfg.space, resolve=True),
    }
    began = time.perf_counter()
    with tracker.sweep_run(f"sweep-{name}", tags, artifacts) as parent_id:
        runner.best = search.best()
        budget.has_model = runner.best is not None  # a resumed study: its best is a model
        if pool is not None:  # this process mostly waits on its workers from here on
            from search.reporting.figures import import_in_background

            import_in_background()  # the report's figure libraries, not at its end
        try:
            if resumed_from is None:
                _search(cfg, search, runner, space, name, int(cfg.search.n_trials) - done)
        except KeyboardInterrupt:
            print_interrupted(cfg, name, search)
            raise
        best = search.best()
        best = champion(cfg, tracker, name, best)  # a final.select rule's pick
        tracker.log_best(
            str(cfg.train.objective),
            best.value if best else None,
            best.params if best else {},
            best.run_id if best else None,
        )
        summary = _summary(name, engine, parent_id, best, search.finished())
        summary.front = front_summary(cfg, tracker, best)
        if best is None:  # say why, rather than skip the final stage without a word
            print(
                "final stage skipped: no trial of the study completed (each one failed or was "
                "pruned; the reasons are above and in MLflow, tag sweeplab.failure_reason), so "
                "there is no best model to test, register or export.",
                flush=True,
            )
        try:
            summary.final = finalize(
                cfg, runner, tracker, best, name, _top(search, cfg), resumed_from
            )
            from search.reporting.publish import publish_report

            fault_point("report")  # tests: a kill after registration, before the report
            publish_report(cfg, tracker, name)  # the HTML report on the parent run
        except KeyboardInterrupt:
            print_final_interrupted(cfg, name)
            raise
        mark_final_completed(tracker)  # without it, the next start runs the final stage again
    _print_summary(cfg, summary, time.perf_counter() - began)
    if best is None:  # recorded and reported above; a sweep without a model does not succeed
        raise NoModel(no_model(name, summary.finished_trials))
    return summary


def _search(
    cfg: DictConfig, search: Engine, runner: TrialRunner, space: list[Param], name: str, n: int
) -> None:
    """The search: in two stages with search.staged on where it fits (Optuna, a fine-tuning
    schedule: search/engines/optuna/staged.py), else in one, saying why."""
    if staged_on(cfg):
        note = staged_note(cfg)
        if note is None:
            from search.engines.optuna.engine import OptunaEngine
            from search.engines.optuna.staged import optimize_staged

            assert isinstance(search, OptunaEngine)  # staged_note: the Optuna engine
            optimize_staged(cfg, search, runner, space, name)
            return
        print(note, flush=True)
    search.optimize(runner, n)


def _plain(value: Any) -> Any:
    """A sampled value without float noise: 0.35, not 0.35000000000000003 (a stepped value one
    unit in the last place off); any other float exactly as before."""
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    short = float(f"{value:.6g}")
    return short if abs(short - value) <= math.ulp(value) else value


def _objectives(cfg: DictConfig) -> str:
    """The header's objective: `objective val_accuracy`, or every one with its direction."""
    objectives = objectives_of(cfg)
    if len(objectives) == 1:
        return f"objective {cfg.train.objective}"
    line = "objectives " + ", ".join(f"{o.metric} ({o.direction})" for o in objectives)
    target = cost_plan(cfg).target
    return line + (f"; size and latency of each trial's {target} export" if target else "")


def _top(search: Engine, cfg: DictConfig) -> list[Best]:
    """The engine's best trials for the final stage's top-k re-evaluation (final.top_k)."""
    top_k = int((cfg.get("final") or {}).get("top_k") or 0)
    return search.top(top_k * 3) if top_k else []  # x3: Hyperband repeats a config per round


def _summary(
    name: str, engine: str, parent_id: str | None, best: Best | None, finished: int
) -> SweepSummary:
    if best is None:
        return SweepSummary(name, engine, parent_id, None, {}, None, finished)
    return SweepSummary(name, engine, parent_id, best.value, best.params, best.run_id, finished)


def _print_summary(cfg: DictConfig, s: SweepSummary, seconds: float) -> None:
    print(
        f"\nstudy {s.study_name!r}: {s.finished_trials} finished trials ({seconds:.0f}s this run)"
    )
    for line in s.front:  # several objectives: the front and the rule's choice
        print(line)
    if s.front and s.best_run_id is not None:
        print(f"champion MLflow run {s.best_run_id}")
        for key, value in s.best_params.items():
            print(f"  {key} = {_plain(value)}")
    elif s.best_value is not None:
        print(f"best {cfg.train.objective} = {s.best_value:.4f}  MLflow run {s.best_run_id}")
        for key, value in s.best_params.items():
            print(f"  {key} = {_plain(value)}")
    print(f"results: {cfg.output_dir}\nopen the MLflow UI: {ui_command(cfg)}")
