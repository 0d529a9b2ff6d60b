"""`python -m search.run`: compose the config with Hydra, run a sweep, summarize it.

python -m search.run                                   # default sweep (digits, CNN, Optuna)
python -m search.run +sweep=cnn search.n_trials=5 optimizer=sgd
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no background threads in sweeps

import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.errors import UserInputError
from search import after_sweep
from search.final import check_final_config, finalize
from search.precheck import check_models
from search.space import parse_space
from search.study import check_sweep_config, study_name

ENGINES = ("optuna", "keras_tuner")


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
    final: Any = None  # search.final.FinalResult of the test / registry / export stage


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
    cfg = prepare(cfg)
    check_sweep_config(cfg)
    check_final_config(cfg)
    after_sweep.check(cfg)  # issue 14: objectives, champion rule, pruning note
    space = parse_space(cfg.space, cfg)
    check_models(cfg, space)
    engine = str(cfg.search.engine)
    if engine not in ENGINES:
        raise UserInputError(
            f"search.engine={engine!r} is not a search engine; accepted: {', '.join(ENGINES)} "
            "(choose with search=NAME)."
        )
    name = study_name(cfg)
    # Heavy imports only once the config is known to be good: bad input fails in a second.
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    from experiments.data.load import load_data
    from search.resume import print_interrupted, recover
    from search.runner import TrialRunner
    from tracking.mlflow_tracker import SweepTracker

    search = make_engine(cfg, space, name)
    done = search.finished()  # trials cut short by a kill never count, so recovery can wait
    print(
        f"sweep {cfg.sweep_name!r}: study {name!r}, engine {engine}, objective "
        f"{cfg.train.objective}, {done} of {cfg.search.n_trials} trials finished",
        flush=True,
    )
    if done >= int(cfg.search.n_trials):
        print(
            f"the study is complete (search.n_trials={cfg.search.n_trials}): nothing to train. "
            "Raise search.n_trials to add trials."
        )
        return _summary(name, engine, None, search.best(), done)

    data = load_data(cfg.data, int(cfg.seed))  # bad data fails here, before anything is recorded
    tracker = SweepTracker(cfg.tracking)
    recover(search, tracker, name)
    is_pruned = getattr(search, "is_pruned", lambda err: False)
    runner = TrialRunner(cfg, tracker, {"study": name, "engine": engine}, is_pruned, data=data)
    # Everything alive now (TensorFlow, MLflow, the data) lives for the whole sweep: freezing it
    # keeps the per-trial gc.collect() from re-scanning it (0.3-0.6 s a trial otherwise).
    gc.freeze()
    tags = {
        "engine": engine,
        "sampler": cfg.search.get("sampler", ""),
        "study": name,
        "sweep_name": cfg.sweep_name,
        **getattr(search, "tags", {}),  # engine-specific, e.g. the Keras Tuner tuner kind
    }
    artifacts = {
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "space.yaml": OmegaConf.to_yaml(cfg.space, resolve=True),
    }
    started = time.perf_counter()
    with tracker.sweep_run(f"sweep-{name}", tags, artifacts) as parent_id:
        runner.best = search.best()
        try:
            search.optimize(runner, int(cfg.search.n_trials) - done, cfg.search.get("timeout"))
        except KeyboardInterrupt:
            print_interrupted(cfg, name, search)
            raise
        best = search.best()
        best = after_sweep.champion(cfg, tracker, name, best)  # issue 14: final.select rule
        tracker.log_best(
            str(cfg.train.objective),
            best.value if best else None,
            best.params if best else {},
            best.run_id if best else None,
        )
        summary = _summary(name, engine, parent_id, best, search.finished())
        summary.final = finalize(cfg, runner, tracker, best, name)
        after_sweep.report(cfg, tracker, name)  # issue 14: HTML report on the parent run
    _print_summary(cfg, summary, time.perf_counter() - started)
    return summary


def _summary(name: str, engine: str, parent_id: str | None, best, finished: int) -> SweepSummary:
    if best is None:
        return SweepSummary(name, engine, parent_id, None, {}, None, finished)
    return SweepSummary(name, engine, parent_id, best.value, best.params, best.run_id, finished)


def make_engine(cfg: DictConfig, space: list, name: str):
    """The search engine `search.engine` names, over an existing or new study."""
    if str(cfg.search.engine) == "keras_tuner":
        from search.keras_tuner_backend import KerasTunerEngine

        return KerasTunerEngine(cfg, space, name)
    from search.optuna_backend import OptunaEngine

    return OptunaEngine(cfg, space, name)


def _print_summary(cfg: DictConfig, s: SweepSummary, seconds: float) -> None:
    print(
        f"\nstudy {s.study_name!r}: {s.finished_trials} finished trials ({seconds:.0f}s this run)"
    )
    if s.best_value is not None:
        print(f"best {cfg.train.objective} = {s.best_value:.4f}  MLflow run {s.best_run_id}")
        for key, value in s.best_params.items():
            print(f"  {key} = {value}")
    print(
        f"results: {cfg.output_dir}\nopen the MLflow UI: make ui   "
        f"(or: mlflow ui --backend-store-uri {cfg.tracking.tracking_uri} --host 127.0.0.1 "
        "--workers 1)"
    )


def fail(message: str, code: int = 2) -> None:
    """Print a one-paragraph error and exit non-zero, without a traceback."""
    print(f"sweeplab: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from experiments.errors import TooManyFailures
    from search.resume import resume_command, sigterm_as_interrupt  # light: no TensorFlow

    try:
        with sigterm_as_interrupt():
            sweep(cfg)
    except UserInputError as err:
        fail(str(err))
    except TooManyFailures as err:
        fail(str(err), code=3)
    except KeyboardInterrupt:
        sys.exit(130)  # 128 + SIGINT, as a shell reports Ctrl-C
    except Exception as err:
        if not isinstance(err.__context__, KeyboardInterrupt):
            raise
        # A store write cut short by the interrupt failed while cleaning up: still Ctrl-C.
        print(
            f"interrupted; the next start cleans up. resume with: {resume_command()}",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
