"""Overhead: what sweeplab costs on top of the training it runs.

    python bench/overhead.py [--quick] [--repeats N]

The same fixed list of trial configs is trained four ways, each arm a fresh process:

  sweeplab    `python -m search.run` with full tracking (MLflow child runs, per-epoch curves,
              model logging on) over an Optuna study whose trials are enqueued, so nothing is sampled
  bare        a plain Keras loop: same data split, same models (experiments.data / models), same
              input pipeline, same epochs; no MLflow, no Optuna, no Hydra
  keras_tuner a plain Keras Tuner random search with its own defaults (trial directory, best-epoch
              checkpoints), its oracle handing out the same configs in order
  optuna_mlflow a hand-written Optuna + MLflow loop (nested runs, per-epoch metrics, logged model)

Arms are interleaved (ABCD, BCDA, ...) so that drift on a shared machine hits all of them alike,
and ratios are taken per repeat against the bare arm of the same repeat. Inside each process the
parts are timed (start-up, data loading, training, per-epoch logging, model saving, the rest), so
the table says where any overhead goes. Enqueueing the fixed trials into a study is bench set-up,
not part of a sweep, and is subtracted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, median, parse_args, print_table, verdict, write_result

TARGET = 1.03  # sweeplab wall time <= 1.03 x bare Keras
ARMS = ("sweeplab", "bare", "keras_tuner", "optuna_mlflow")
SEED = 42
STUDY = "bench-overhead"

# Fixed trials: values inside conf/space/cnn.yaml, from small to large networks.
CONFIGS: list[dict[str, Any]] = [
    {
        "optimizer.learning_rate": 0.001,
        "model.conv_blocks": 1,
        "model.filters": 8,
        "model.dropout": 0.0,
        "model.dense_units": 32,
    },
    {
        "optimizer.learning_rate": 0.003,
        "model.conv_blocks": 2,
        "model.filters": 16,
        "model.dropout": 0.2,
        "model.dense_units": 64,
    },
    {
        "optimizer.learning_rate": 0.0005,
        "model.conv_blocks": 2,
        "model.filters": 32,
        "model.dropout": 0.3,
        "model.dense_units": 128,
    },
    {
        "optimizer.learning_rate": 0.002,
        "model.conv_blocks": 1,
        "model.filters": 16,
        "model.dropout": 0.1,
        "model.dense_units": 64,
    },
    {
        "optimizer.learning_rate": 0.006,
        "model.conv_blocks": 2,
        "model.filters": 8,
        "model.dropout": 0.4,
        "model.dense_units": 32,
    },
    {
        "optimizer.learning_rate": 0.0008,
        "model.conv_blocks": 1,
        "model.filters": 32,
        "model.dropout": 0.2,
        "model.dense_units": 128,
    },
    {
        "optimizer.learning_rate": 0.0015,
        "model.conv_blocks": 2,
        "model.filters": 16,
        "model.dropout": 0.5,
        "model.dense_units": 128,
    },
    {
        "optimizer.learning_rate": 0.004,
        "model.conv_blocks": 2,
        "model.filters": 32,
        "model.dropout": 0.1,
        "model.dense_units": 64,
    },
]
FULL = {"image_size": 32, "epochs": 5, "repeats": 3}
QUICK = {"image_size": 16, "epochs": 2, "repeats": 1}


# --------------------------------------------------------------------------- parent


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [("--repeats", {"type": int, "default": None, "help": "interleaved repeats"})],
    )
    size = dict(QUICK if args.quick else FULL)
    if args.repeats:
        size["repeats"] = args.repeats
    overrides = [
        f"data.image_size={size['image_size']}",
        f"train.epochs={size['epochs']}",
        "train.batch_size=64",
        f"seed={SEED}",
        "tracking.log_models=true",
    ]
    spec = {
        "seed": SEED,
        "epochs": size["epochs"],
        "overrides": overrides,
        **trial_specs(overrides),
    }
    print(
        f"overhead: {len(CONFIGS)} fixed trials, digits {size['image_size']}x{size['image_size']}, "
        f"{size['epochs']} epochs, {size['repeats']} interleaved repeat(s) of {', '.join(ARMS)}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sweeplab-overhead-") as tmp:
        for repeat in range(size["repeats"]):
            order = ARMS[repeat % len(ARMS) :] + ARMS[: repeat % len(ARMS)]
            for arm in order:
                out = Path(tmp) / f"{repeat}-{arm}"
                out.mkdir()
                run = launch(arm, {**spec, "out_dir": str(out)}, out)
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"  repeat {repeat} {arm:<14} {run['wall_s']:7.1f}s  "
                    f"(start-up {run['startup_s']:.1f}s, trials {run['loop_s']:.1f}s)",
                    flush=True,
                )
    report(runs, size, args.quick)


def trial_specs(overrides: list[str]) -> dict[str, Any]:
    """Resolve each fixed trial into the model / optimizer / data configs every arm builds from."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from search.space import apply_params

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = compose("config", overrides=[*overrides, "output_dir=unused"])
    trials = []
    for params in CONFIGS:
        cfg = apply_params(base, params)
        trials.append(
            {
                "params": params,
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
            }
        )
    return {
        "trials": trials,
        "data": OmegaConf.to_container(base.data, resolve=True),
        "batch_size": int(base.train.batch_size),
    }


def launch(arm: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one arm in a fresh process; return its timings (wall clock, seconds)."""
    spec_path, result_path = out / "spec.json", out / "timings.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    launched = time.time()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", arm, str(spec_path), str(result_path)],
        capture_output=True,
        text=True,
        cwd=out,
        env=env,
    )
    wall = time.perf_counter() - started
    ended = time.time()
    if proc.returncode != 0 or not result_path.exists():
        sys.exit(
            f"overhead: arm {arm} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    rec = json.loads(result_path.read_text())
    trials = rec["trials"]
    first, last = trials[0]["start"], trials[-1]["end"]
    setup = rec.get("setup_excluded_s", 0.0)
    train = sum(t["train_s"] - t.get("epoch_log_s", 0.0) for t in trials)
    epoch_log = sum(t.get("epoch_log_s", 0.0) for t in trials)
    model_log = sum(t.get("model_log_s", 0.0) for t in trials)
    loop = last - first
    return {
        "arm": arm,
        "wall_s": wall - setup,
        "setup_excluded_s": setup,
        "startup_s": first - launched - setup,
        "imports_s": rec.get("imports_s", float("nan")),
        "data_load_s": rec.get("data_load_s", float("nan")),
        "store_open_s": rec.get("store_open_s", 0.0),
        "loop_s": loop,
        "train_s": train,
        "epoch_log_s": epoch_log,
        "model_log_s": model_log,
        "other_in_loop_s": loop - train - epoch_log - model_log,
        "shutdown_s": ended - last,
        "val_accuracy": [t.get("val_accuracy") for t in trials],
        "trial_train_s": [t["train_s"] for t in trials],
    }


def report(runs: list[dict[str, Any]], size: dict[str, Any], quick: bool) -> None:
    """Per-arm medians, paired ratios against bare, and where sweeplab's extra time goes."""
    by_repeat: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_repeat.setdefault(run["repeat"], {})[run["arm"]] = run
    keys = ("wall_s", "startup_s", "loop_s", "train_s", "epoch_log_s", "model_log_s",
            "other_in_loop_s", "shutdown_s", "imports_s", "data_load_s", "store_open_s")  # fmt: skip
    arms: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        mine = [r[arm] for r in by_repeat.values()]
        ratios = [r[arm]["wall_s"] / r["bare"]["wall_s"] for r in by_repeat.values()]
        loop_ratios = [r[arm]["loop_s"] / r["bare"]["loop_s"] for r in by_repeat.values()]
        arms[arm] = {
            **{k: median([m[k] for m in mine]) for k in keys},
            "ratio_vs_bare": median(ratios),
            "ratio_vs_bare_each_repeat": ratios,
            "trials_ratio_vs_bare": median(loop_ratios),
        }
    print_table(
        f"Wall time per arm ({len(CONFIGS)} trials, median of {len(by_repeat)} interleaved repeat(s); "
        "ratio = paired per repeat against bare)",
        [
            "arm",
            "wall s",
            "x bare",
            "trials-only x bare",
            "start-up s",
            "train s",
            "epoch log s",
            "model save s",
            "other s",
            "exit s",
        ],  # fmt: skip
        [
            [
                a,
                s["wall_s"],
                s["ratio_vs_bare"],
                s["trials_ratio_vs_bare"],
                s["startup_s"],
                s["train_s"],
                s["epoch_log_s"],
                s["model_log_s"],
                s["other_in_loop_s"],
                s["shutdown_s"],
            ]
            for a, s in arms.items()
        ],  # fmt: skip
    )
    sl, bare = arms["sweeplab"], arms["bare"]
    parts = [
        ("start-up: imports (MLflow, Optuna, Hydra on top of TF)", sl["imports_s"] - bare["imports_s"]),
        ("start-up: MLflow store + Optuna study open", sl["store_open_s"]),
        ("start-up: data loading (sweeplab - bare)", sl["data_load_s"] - bare["data_load_s"]),
        ("start-up: the rest (Hydra compose, config checks, parent run)",
         sl["startup_s"] - bare["startup_s"] - (sl["imports_s"] - bare["imports_s"])
         - sl["store_open_s"] - (sl["data_load_s"] - bare["data_load_s"])),
        ("per-epoch logging (curves to MLflow)", sl["epoch_log_s"]),
        ("model artifact saving (mlflow.keras.log_model)", sl["model_log_s"]),
        ("other per-trial tracking + Optuna bookkeeping",
         sl["other_in_loop_s"] - bare["other_in_loop_s"]),
        ("training itself (sweeplab - bare; noise)", sl["train_s"] - bare["train_s"]),
        ("exit (sweeplab - bare)", sl["shutdown_s"] - bare["shutdown_s"]),
    ]  # fmt: skip
    total = sl["wall_s"] - bare["wall_s"]
    print_table(
        "Where sweeplab's extra time goes (medians; seconds per run, per trial, share of bare wall)",
        ["part", "s per run", "s per trial", "% of bare"],
        [[name, s, s / len(CONFIGS), 100 * s / bare["wall_s"]] for name, s in parts]
        + [
            [
                "total (sweeplab wall - bare wall)",
                total,
                total / len(CONFIGS),
                100 * total / bare["wall_s"],
            ]
        ],
    )
    diffs = [
        abs(a - b)
        for r in by_repeat.values()
        for a, b in zip(r["sweeplab"]["val_accuracy"], r["bare"]["val_accuracy"], strict=True)
        if a is not None and b is not None
    ]
    same_work = max(diffs) if diffs else float("nan")
    met = sl["ratio_vs_bare"] <= TARGET
    print(
        f"\nsame work check: max |val_accuracy(sweeplab) - val_accuracy(bare)| over trials = "
        f"{same_work:.4f}\ntarget sweeplab <= {TARGET} x bare: {sl['ratio_vs_bare']:.3f} x  "
        f"{verdict(met)} (trials only, without process start-up: "
        f"{sl['trials_ratio_vs_bare']:.3f} x)"
    )
    write_result(
        "overhead",
        {
            "settings": {**size, "trials": len(CONFIGS), "configs": CONFIGS, "seed": SEED},
            "target": {"sweeplab_vs_bare_max": TARGET, "value": sl["ratio_vs_bare"], "met": met},
            "arms": arms,
            "sweeplab_extra_breakdown_s": dict(parts),
            "max_val_accuracy_diff_sweeplab_vs_bare": same_work,
            "runs": runs,
        },
        quick,
    )


# --------------------------------------------------------------------------- workers
# Each worker runs in its own process and writes its timings (time.time(), seconds) to JSON.


def worker(arm: str, spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rec: dict[str, Any] = {"trials": []}
    started = time.time()
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    {"sweeplab": arm_sweeplab, "bare": arm_bare, "keras_tuner": arm_keras_tuner,
     "optuna_mlflow": arm_optuna_mlflow}[arm](spec, rec, started)  # fmt: skip
    Path(result_path).write_text(json.dumps(rec))


def arm_sweeplab(spec: dict, rec: dict, started: float) -> None:
    """`python -m search.run` (run in this process via runpy) with timing hooks around its parts."""
    import runpy

    import optuna

    import search.optuna_backend as backend
    import search.run  # noqa: F401  (imported here so the import time is counted as imports)
    import search.runner as runner
    import tracking.mlflow_tracker as tracker

    rec["imports_s"] = time.time() - started
    storage = f"sqlite:///{spec['out_dir']}/optuna.db"
    t = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for trial in spec["trials"]:
        study.enqueue_trial(trial["params"])
    del study
    rec["setup_excluded_s"] = time.time() - t
    trials = rec["trials"]
    rec["store_open_s"] = 0.0

    def timed(owner: Any, name: str, on_time) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                on_time(t0, time.time())

        setattr(owner, name, wrapper)

    def add(key: str):
        def on_time(t0: float, t1: float) -> None:
            rec[key] = rec.get(key, 0.0) + t1 - t0

        return on_time

    def add_trial(key: str):
        def on_time(t0: float, t1: float) -> None:
            trials[-1][key] = trials[-1].get(key, 0.0) + t1 - t0

        return on_time

    original_run = runner.TrialRunner.run

    def run(self, number, params, callbacks=None, tags=None):
        trials.append({"number": number, "start": time.time()})
        try:
            outcome = original_run(self, number, params, callbacks, tags)
        finally:
            trials[-1]["end"] = time.time()
        trials[-1]["val_accuracy"] = outcome.metrics.get("val_accuracy")
        return outcome

    runner.TrialRunner.run = run
    timed(runner, "run_trial", add_trial("train_s"))
    timed(runner, "load_data", add("data_load_s"))
    timed(tracker.EpochLogger, "on_epoch_end", add_trial("epoch_log_s"))
    timed(tracker.TrialRun, "log_model", add_trial("model_log_s"))
    timed(tracker.SweepTracker, "__init__", add("store_open_s"))
    timed(backend.OptunaEngine, "__init__", add("store_open_s"))
    sys.argv = [
        "search.run",
        *spec["overrides"],
        f"output_dir={spec['out_dir']}",
        f"search.n_trials={len(spec['trials'])}",
        f"search.study_name={STUDY}",
        f"search.storage={storage}",
    ]
    runpy.run_module("search.run", run_name="__main__", alter_sys=True)


def arm_bare(spec: dict, rec: dict, started: float) -> None:
    """What a user writes without any platform: load, then build / compile / fit per config."""
    import keras
    from omegaconf import OmegaConf

    from experiments.data import load_data
    from experiments.models import build_model, build_optimizer
    from experiments.pipeline import to_dataset

    rec["imports_s"] = time.time() - started
    t = time.time()
    data = load_data(OmegaConf.create(spec["data"]), spec["seed"])
    rec["data_load_s"] = time.time() - t
    seed, batch = spec["seed"], spec["batch_size"]
    for trial in spec["trials"]:
        start = time.time()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(OmegaConf.create(trial["model"]), data.image_shape, data.num_classes)
        model.compile(
            optimizer=build_optimizer(OmegaConf.create(trial["optimizer"])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(
            to_dataset(data.train, batch, training=True, seed=seed),
            validation_data=to_dataset(data.val, batch, training=False, seed=seed),
            epochs=spec["epochs"],
            verbose=0,
        ).history
        end = time.time()
        rec["trials"].append(
            {
                "start": start,
                "end": end,
                "train_s": end - start,
                "val_accuracy": history["val_accuracy"][-1],
            }  # fmt: skip
        )


def arm_keras_tuner(spec: dict, rec: dict, started: float) -> None:
    """A plain Keras Tuner random search with its defaults; the oracle hands out the fixed configs."""
    import keras
    import keras_tuner as kt
    from omegaconf import OmegaConf

    from experiments.data import load_data
    from experiments.models import build_model, build_optimizer
    from experiments.pipeline import to_dataset

    rec["imports_s"] = time.time() - started
    t = time.time()
    data = load_data(OmegaConf.create(spec["data"]), spec["seed"])
    rec["data_load_s"] = time.time() - t
    seed, batch, configs = spec["seed"], spec["batch_size"], spec["trials"]
    trials = rec["trials"]

    class FixedOrderOracle(kt.oracles.RandomSearchOracle):
        """RandomSearch's oracle, except that trial i gets config i (no sampling differences)."""

        def populate_space(self, trial_id):
            index = len(trials)
            if index >= len(configs):
                return {"status": "STOPPED", "values": None}
            return {"status": "RUNNING", "values": {"trial_config": index}}

    def build(hp):
        trial = configs[hp.Int("trial_config", 0, len(configs) - 1)]
        keras.utils.set_random_seed(seed)
        model = build_model(OmegaConf.create(trial["model"]), data.image_shape, data.num_classes)
        model.compile(
            optimizer=build_optimizer(OmegaConf.create(trial["optimizer"])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    class FitTimer(keras.callbacks.Callback):  # Keras Tuner deep-copies callbacks: state is global
        def on_train_begin(self, logs=None):
            trials[-1]["fit_start"] = time.time()

        def on_train_end(self, logs=None):
            trials[-1]["train_s"] = time.time() - trials[-1]["fit_start"]

    tuner = kt.Tuner(
        oracle=FixedOrderOracle(objective="val_accuracy", max_trials=len(configs), seed=seed),
        hypermodel=build,
        directory=spec["out_dir"],
        project_name="keras_tuner",
        overwrite=True,
    )
    begin, end = tuner.on_trial_begin, tuner.on_trial_end

    def on_trial_begin(trial):
        trials.append({"start": time.time()})
        begin(trial)

    def on_trial_end(trial):
        end(trial)
        trials[-1]["end"] = time.time()
        # Keras Tuner scores a trial by its best epoch (the others report the last epoch).
        trials[-1]["val_accuracy"] = tuner.oracle.get_trial(trial.trial_id).score

    tuner.on_trial_begin, tuner.on_trial_end = on_trial_begin, on_trial_end
    tuner.search(
        to_dataset(data.train, batch, training=True, seed=seed),
        validation_data=to_dataset(data.val, batch, training=False, seed=seed),
        epochs=spec["epochs"],
        callbacks=[FitTimer()],
        verbose=0,
    )


def arm_optuna_mlflow(spec: dict, rec: dict, started: float) -> None:
    """The loop a user writes by hand with Optuna and MLflow: nested runs, curves, logged model."""
    import keras
    import mlflow
    import optuna
    import tensorflow as tf
    from mlflow.models import infer_signature
    from omegaconf import OmegaConf

    from experiments.data import load_data
    from experiments.models import build_model, build_optimizer
    from experiments.pipeline import to_dataset

    rec["imports_s"] = time.time() - started
    out, seed, batch, configs = spec["out_dir"], spec["seed"], spec["batch_size"], spec["trials"]
    t = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out}/optuna.db"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for trial in configs:
        study.enqueue_trial(trial["params"])
    rec["setup_excluded_s"] = time.time() - t
    t = time.time()
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    mlflow.create_experiment("handwritten", artifact_location=Path(out, "mlartifacts").as_uri())
    mlflow.set_experiment("handwritten")
    rec["store_open_s"] = time.time() - t
    t = time.time()
    data = load_data(OmegaConf.create(spec["data"]), seed)
    rec["data_load_s"] = time.time() - t
    base_model, base_optimizer = configs[0]["model"], configs[0]["optimizer"]
    trials = rec["trials"]
    requirements = [f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}"]

    class Curves(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            t0 = time.time()
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)
            trials[-1]["epoch_log_s"] += time.time() - t0

    def objective(trial: optuna.Trial) -> float:
        trials.append({"start": time.time(), "epoch_log_s": 0.0})
        lr = trial.suggest_float("optimizer.learning_rate", 0.0003, 0.01, log=True)
        model_cfg = {
            **base_model,
            "conv_blocks": trial.suggest_int("model.conv_blocks", 1, 2),
            "filters": trial.suggest_categorical("model.filters", [8, 16, 32]),
            "dropout": trial.suggest_float("model.dropout", 0.0, 0.5, step=0.1),
            "dense_units": trial.suggest_categorical("model.dense_units", [32, 64, 128]),
        }
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            t0 = time.time()
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model = build_model(OmegaConf.create(model_cfg), data.image_shape, data.num_classes)
            model.compile(
                optimizer=build_optimizer(
                    OmegaConf.create({**base_optimizer, "learning_rate": lr})
                ),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            history = model.fit(
                to_dataset(data.train, batch, training=True, seed=seed),
                validation_data=to_dataset(data.val, batch, training=False, seed=seed),
                epochs=spec["epochs"],
                callbacks=[Curves()],
                verbose=0,
            ).history
            trials[-1]["train_s"] = time.time() - t0
            value = float(history["val_accuracy"][-1])
            mlflow.log_metric("final_val_accuracy", value)
            t0 = time.time()
            sample = data.val.x[:8]
            signature = infer_signature(sample, model.predict(sample, verbose=0))
            mlflow.keras.log_model(
                model, name="model", signature=signature, pip_requirements=requirements
            )
            trials[-1]["model_log_s"] = time.time() - t0
        trials[-1].update(end=time.time(), val_accuracy=value)
        return value

    with mlflow.start_run(run_name="sweep"):
        study.optimize(objective, n_trials=len(configs))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
