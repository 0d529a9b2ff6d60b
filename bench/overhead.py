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
SMOKE = {
    "image_size": 8,
    "epochs": 1,
    "repeats": 1,
    "trials": 2,
}  # the test suite's check that it runs


# --------------------------------------------------------------------------- parent


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--repeats", {"type": int, "default": None, "help": "interleaved repeats"}),
            ("--smoke", {"action": "store_true", "help": "2 tiny trials: does it run at all"}),
            (
                "--log-models",
                {
                    "default": "best",
                    "choices": ["best", "all", "false"],
                    "help": "sweeplab's tracking.log_models (best: its default)",
                },
            ),
        ],
    )
    size = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    if args.repeats:
        size["repeats"] = args.repeats
    overrides = [
        f"data.image_size={size['image_size']}",
        f"train.epochs={size['epochs']}",
        "train.batch_size=64",
        f"seed={SEED}",
        f"tracking.log_models={args.log_models}",
        "search.pruner=none",  # every arm trains every epoch of the same fixed trials
        "final.enabled=false",  # the test report and registry are not trial work (timed apart)
    ]
    configs = CONFIGS[: size.get("trials", len(CONFIGS))]
    spec = {"seed": SEED, "epochs": size["epochs"], "overrides": overrides}
    spec.update(trial_specs(overrides, configs))
    print(
        f"overhead: {len(configs)} fixed trials, digits {size['image_size']}x{size['image_size']}, "
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
                wall, cpu = run["wall"], run["cpu"]
                print(
                    f"  repeat {repeat} {arm:<14} {wall['total_s']:7.1f}s wall "
                    f"(start-up {wall['startup_s']:.1f}s, trials {wall['loop_s']:.1f}s), "
                    f"{cpu['total_s']:7.1f}s CPU",
                    flush=True,
                )
    report(runs, size, args.quick or args.smoke, configs)


def trial_specs(overrides: list[str], configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Resolve each fixed trial into the model / optimizer / data configs every arm builds from."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from search.space.apply import apply_params

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = compose("config", overrides=[*overrides, "output_dir=unused"])
    trials = []
    for params in configs:
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
    """Run one arm in a fresh process; return its parts in wall-clock and CPU seconds."""
    spec_path, result_path = out / "spec.json", out / "timings.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    with open(out / "output.txt", "w") as log:
        launched = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", arm, str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=out,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        ended = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result_path.exists():
        output = (out / "output.txt").read_text()[-5000:]
        sys.exit(f"overhead: arm {arm} failed (exit {proc.returncode}):\n{output}")
    rec = json.loads(result_path.read_text())
    cpu = usage.ru_utime + usage.ru_stime
    trials = rec["trials"]
    return {
        "arm": arm,
        "wall": parts(rec, 0, launched, ended, wall),
        "cpu": parts(rec, 1, 0.0, cpu, cpu),
        "val_accuracy": [t.get("val_accuracy") for t in trials],
        "trial_train_s": [t["train_s"][0] for t in trials],
    }


def parts(rec: dict[str, Any], k: int, launched: float, ended: float, total: float) -> dict:
    """Split one process's time on clock k (0 wall, 1 CPU) into start-up, trials, exit."""
    trials = rec["trials"]

    def get(mapping: dict, key: str) -> float:
        value = mapping.get(key)
        return 0.0 if value is None else value[k]

    # sweeplab: the first trial waits for its worker's TensorFlow import, which bare Keras does
    # before its loop; the loop starts once a worker is up (the wait counts as start-up).
    first = trials[0]["start"][k] + get(rec, "worker_wait_s")
    last, done = trials[-1]["end"][k], rec["done"][k]
    setup = get(rec, "setup_excluded_s")
    epoch_log = sum(get(t, "epoch_log_s") for t in trials)
    model_log = sum(get(t, "model_log_s") for t in trials)
    train = sum(get(t, "train_s") for t in trials) - epoch_log
    loop = last - first
    return {
        "total_s": total - setup,
        "setup_excluded_s": setup,
        "startup_s": first - launched - setup,
        "imports_s": get(rec, "imports_s"),
        "store_open_s": get(rec, "store_open_s"),
        "data_load_s": get(rec, "data_load_s"),
        "loop_s": loop,
        "train_s": train,
        "epoch_log_s": epoch_log,
        "model_log_s": model_log,
        "other_in_loop_s": loop - train - epoch_log - model_log,
        "finish_s": done - last,
        "exit_s": ended - done,
    }


def summarize(runs: list[dict[str, Any]], clock: str) -> dict[str, dict[str, Any]]:
    """Per arm: median of each part over repeats, and ratios paired per repeat against bare."""
    by_repeat: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_repeat.setdefault(run["repeat"], {})[run["arm"]] = run[clock]
    arms: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        mine = [r[arm] for r in by_repeat.values()]
        ratios = [r[arm]["total_s"] / r["bare"]["total_s"] for r in by_repeat.values()]
        loop_ratios = [r[arm]["loop_s"] / r["bare"]["loop_s"] for r in by_repeat.values()]
        arms[arm] = {
            **{key: median([m[key] for m in mine]) for key in mine[0]},
            "ratio_vs_bare": median(ratios),
            "ratio_vs_bare_each_repeat": ratios,
            "trials_ratio_vs_bare": median(loop_ratios),
        }
    return arms


def breakdown(sl: dict[str, float], bare: dict[str, float]) -> list[tuple[str, float]]:
    """sweeplab minus bare, part by part; the parts add up to the difference of the totals."""
    imports = sl["imports_s"] - bare["imports_s"]
    data = sl["data_load_s"] - bare["data_load_s"]
    rest = sl["startup_s"] - bare["startup_s"] - imports - sl["store_open_s"] - data
    return [
        ("start-up: imports (MLflow, Optuna, Hydra on top of TF)", imports),
        ("start-up: open MLflow store + Optuna study", sl["store_open_s"]),
        ("start-up: data loading", data),
        ("start-up: the rest (Hydra compose, checks, parent run)", rest),
        ("per-epoch logging (curves to MLflow)", sl["epoch_log_s"]),
        ("model artifact saving (mlflow.keras.log_model)", sl["model_log_s"]),
        (
            "per-trial tracking + Optuna bookkeeping",
            sl["other_in_loop_s"] - bare["other_in_loop_s"],
        ),
        ("training itself (should be ~0: same models)", sl["train_s"] - bare["train_s"]),
        ("after the last trial (best run, summary)", sl["finish_s"] - bare["finish_s"]),
        ("interpreter exit", sl["exit_s"] - bare["exit_s"]),
    ]


def report(
    runs: list[dict[str, Any]], size: dict[str, Any], quick: bool, configs: list[dict]
) -> None:
    """Tables for both clocks, where sweeplab's extra time goes, the target verdict, JSON."""
    n, repeats = len(configs), size["repeats"]
    clocks = {clock: summarize(runs, clock) for clock in ("wall", "cpu")}
    for clock, arms in clocks.items():
        print_table(
            f"{'Wall-clock' if clock == 'wall' else 'CPU'} seconds per arm ({n} trials, median of "
            f"{repeats} interleaved repeat(s); x bare = paired per repeat)",
            [
                "arm",
                "total",
                "x bare",
                "trials only x bare",
                "start-up",
                "train",
                "epoch log",
                "model save",
                "other in loop",
                "after loop",
                "exit",
            ],  # fmt: skip
            [
                [
                    a,
                    s["total_s"],
                    s["ratio_vs_bare"],
                    s["trials_ratio_vs_bare"],
                    s["startup_s"],
                    s["train_s"],
                    s["epoch_log_s"],
                    s["model_log_s"],
                    s["other_in_loop_s"],
                    s["finish_s"],
                    s["exit_s"],
                ]
                for a, s in arms.items()
            ],  # fmt: skip
        )
    split = {clock: breakdown(arms["sweeplab"], arms["bare"]) for clock, arms in clocks.items()}
    bare_total = {clock: arms["bare"]["total_s"] for clock, arms in clocks.items()}
    rows = [
        [name, wall, wall / n, 100 * wall / bare_total["wall"], cpu, 100 * cpu / bare_total["cpu"]]
        for (name, wall), (_, cpu) in zip(split["wall"], split["cpu"], strict=True)
    ]
    extra = {c: clocks[c]["sweeplab"]["total_s"] - bare_total[c] for c in clocks}
    rows.append(
        ["total: sweeplab - bare", extra["wall"], extra["wall"] / n,
         100 * extra["wall"] / bare_total["wall"], extra["cpu"], 100 * extra["cpu"] / bare_total["cpu"]]
    )  # fmt: skip
    print_table(
        "Where sweeplab's extra time goes (sweeplab - bare, medians)",
        ["part", "wall s", "wall s/trial", "% of bare wall", "CPU s", "% of bare CPU"],
        rows,
    )
    by_repeat: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_repeat.setdefault(run["repeat"], {})[run["arm"]] = run
    diffs = [
        abs(a - b)
        for r in by_repeat.values()
        for a, b in zip(r["sweeplab"]["val_accuracy"], r["bare"]["val_accuracy"], strict=True)
        if a is not None and b is not None
    ]
    same_work = max(diffs) if diffs else float("nan")
    wall_ratio = clocks["wall"]["sweeplab"]["ratio_vs_bare"]
    cpu_ratio = clocks["cpu"]["sweeplab"]["ratio_vs_bare"]
    print(
        f"\nsame work: max |val_accuracy(sweeplab) - val_accuracy(bare)| over trials = "
        f"{same_work:.4f}\ntarget sweeplab <= {TARGET} x bare: wall {wall_ratio:.3f} x "
        f"{verdict(wall_ratio <= TARGET)}, CPU {cpu_ratio:.3f} x {verdict(cpu_ratio <= TARGET)} "
        f"(trials only, without start-up and exit: wall "
        f"{clocks['wall']['sweeplab']['trials_ratio_vs_bare']:.3f} x, CPU "
        f"{clocks['cpu']['sweeplab']['trials_ratio_vs_bare']:.3f} x)"
    )
    write_result(
        "overhead",
        {
            "settings": {**size, "trials": n, "configs": configs, "seed": SEED},
            "target": {
                "sweeplab_vs_bare_max": TARGET,
                "wall_ratio": wall_ratio,
                "cpu_ratio": cpu_ratio,
                "met_wall": wall_ratio <= TARGET,
                "met_cpu": cpu_ratio <= TARGET,
            },
            "arms": clocks,
            "sweeplab_extra_breakdown_s": {c: dict(split[c]) for c in split},
            "max_val_accuracy_diff_sweeplab_vs_bare": same_work,
            "runs": runs,
        },
        quick,
    )


# --------------------------------------------------------------------------- workers
# Each worker runs in its own process and writes its timings to JSON. Every time is a pair
# [wall clock, CPU time of this process (all threads)], so that a shared machine's contention can
# be told apart from work done: the CPU column hardly moves when other processes compete.

Clock = list[float]  # [time.time(), time.process_time()]


def now() -> Clock:
    return [time.time(), time.process_time()]


def since(t0: Clock) -> Clock:
    t1 = now()
    return [t1[0] - t0[0], t1[1] - t0[1]]


def plus(a: Clock | None, b: Clock) -> Clock:
    return [b[0], b[1]] if a is None else [a[0] + b[0], a[1] + b[1]]


def worker(arm: str, spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rec: dict[str, Any] = {"trials": []}
    started = now()
    if arm != "sweeplab":  # sweeplab's own process imports no TensorFlow (its workers do)
        from experiments.quiet import quiet_tensorflow

        quiet_tensorflow()
    {"sweeplab": arm_sweeplab, "bare": arm_bare, "keras_tuner": arm_keras_tuner,
     "optuna_mlflow": arm_optuna_mlflow}[arm](spec, rec, started)  # fmt: skip
    rec["done"] = now()
    Path(result_path).write_text(json.dumps(rec))


def arm_sweeplab(spec: dict, rec: dict, started: Clock) -> None:
    """`python -m search.run` (run in this process via runpy) with timing hooks around its parts."""
    import runpy

    import search.cli.command  # noqa: F401  (imported here so the import time is counted as imports)
    import search.execution.pool

    # Where `python -m search.run` starts its first worker: after its own import, before
    # anything else (here: the imports for the timing hooks below, which it does later too).
    search.execution.pool.start_early()
    import optuna

    import experiments.data.load as data_load
    import search.engines.optuna.engine as backend
    import search.trials.runner as runner
    import tracking.mlflow_tracker as tracker

    rec["imports_s"] = since(started)
    storage = f"sqlite:///{spec['out_dir']}/optuna.db"
    t = now()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for trial in spec["trials"]:
        study.enqueue_trial(trial["params"])
    del study
    rec["setup_excluded_s"] = since(t)
    trials = rec["trials"]
    rec["store_open_s"] = [0.0, 0.0]

    def timed(owner: Any, name: str, on_time) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = now()
            try:
                return original(*args, **kwargs)
            finally:
                on_time(since(t0))

        setattr(owner, name, wrapper)

    def add(key: str):
        def on_time(spent: Clock) -> None:
            rec[key] = plus(rec.get(key), spent)

        return on_time

    def add_trial(key: str):
        def on_time(spent: Clock) -> None:
            trials[-1][key] = plus(trials[-1].get(key), spent)

        return on_time

    original_run = runner.TrialRunner.run

    def run(self, number, params, callbacks=None, tags=None):
        trials.append({"number": number, "start": now()})
        try:
            outcome = original_run(self, number, params, callbacks, tags)
        finally:
            trials[-1]["end"] = now()
        trials[-1]["val_accuracy"] = outcome.metrics.get("val_accuracy")
        return outcome

    runner.TrialRunner.run = run
    send_trial = search.execution.pool.Worker.send_trial

    def send_when_ready(self, *args, **kwargs):  # the first one waits for the worker to be up
        t0 = now()
        try:
            return send_trial(self, *args, **kwargs)
        finally:
            rec.setdefault("worker_wait_s", since(t0))

    search.execution.pool.Worker.send_trial = send_when_ready
    # Training as the sweep waits for it: in its worker process (issue 13), the pipe and the
    # worker's save of a kept model included.
    timed(runner.TrialRunner, "_train", add_trial("train_s"))
    # Looked up at call time by `search.execution.data_fit.load_fitted` (the sweep's and the
    # runner's one way to load a set), so the hook on its module sees every load.
    timed(data_load, "load_data", add("data_load_s"))
    timed(tracker.EpochLogger, "on_epoch_end", add_trial("epoch_log_s"))
    timed(tracker.TrialRun, "log_model_files", add_trial("model_log_s"))  # a worker's files
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


def arm_bare(spec: dict, rec: dict, started: Clock) -> None:
    """What a user writes without any platform: load, then build / compile / fit per config."""
    import keras  # noqa: F401  (imported here, so imports_s counts what fit_bare uses)
    from omegaconf import OmegaConf

    import experiments.data.pipeline  # noqa: F401
    import experiments.models.build  # noqa: F401
    from experiments.data.load import load_data

    rec["imports_s"] = since(started)
    t = now()
    data = load_data(OmegaConf.create(spec["data"]), spec["seed"])
    rec["data_load_s"] = since(t)
    seed, batch = spec["seed"], spec["batch_size"]
    for trial in spec["trials"]:
        start = now()
        _, history = fit_bare(data, trial["model"], trial["optimizer"], seed, batch, spec["epochs"])
        end = now()
        rec["trials"].append(
            {
                "start": start,
                "end": end,
                "train_s": [end[0] - start[0], end[1] - start[1]],
                "val_accuracy": history["val_accuracy"][-1],
            }  # fmt: skip
        )


def arm_keras_tuner(spec: dict, rec: dict, started: Clock) -> None:
    """A plain Keras Tuner random search with its defaults; the oracle hands out the fixed configs."""
    import keras
    import keras_tuner as kt
    from omegaconf import OmegaConf

    from experiments.data.load import load_data
    from experiments.data.pipeline import to_dataset
    from experiments.models.build import build_model, build_optimizer

    rec["imports_s"] = since(started)
    t = now()
    data = load_data(OmegaConf.create(spec["data"]), spec["seed"])
    rec["data_load_s"] = since(t)
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
            trials[-1]["fit_start"] = now()

        def on_train_end(self, logs=None):
            trials[-1]["train_s"] = since(trials[-1]["fit_start"])

    tuner = kt.Tuner(
        oracle=FixedOrderOracle(objective="val_accuracy", max_trials=len(configs), seed=seed),
        hypermodel=build,
        directory=spec["out_dir"],
        project_name="keras_tuner",
        overwrite=True,
    )
    begin, end = tuner.on_trial_begin, tuner.on_trial_end

    def on_trial_begin(trial):
        trials.append({"start": now()})
        begin(trial)

    def on_trial_end(trial):
        end(trial)
        trials[-1]["end"] = now()
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


def arm_optuna_mlflow(spec: dict, rec: dict, started: Clock) -> None:
    """The loop a user writes by hand with Optuna and MLflow: nested runs, curves, logged model."""
    import keras
    import mlflow
    import optuna
    import tensorflow as tf
    from mlflow.models import infer_signature
    from omegaconf import OmegaConf

    import experiments.data.pipeline  # noqa: F401  (imports_s counts what fit_bare uses)
    import experiments.models.build  # noqa: F401
    from experiments.data.load import load_data

    rec["imports_s"] = since(started)
    out, seed, batch, configs = spec["out_dir"], spec["seed"], spec["batch_size"], spec["trials"]
    t = now()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out}/optuna.db"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for trial in configs:
        study.enqueue_trial(trial["params"])
    rec["setup_excluded_s"] = since(t)
    t = now()
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    mlflow.create_experiment("handwritten", artifact_location=Path(out, "mlartifacts").as_uri())
    mlflow.set_experiment("handwritten")
    rec["store_open_s"] = since(t)
    t = now()
    data = load_data(OmegaConf.create(spec["data"]), seed)
    rec["data_load_s"] = since(t)
    base_model, base_optimizer = configs[0]["model"], configs[0]["optimizer"]
    trials = rec["trials"]
    requirements = [f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}"]

    class Curves(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            t0 = now()
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)
            trials[-1]["epoch_log_s"] = plus(trials[-1]["epoch_log_s"], since(t0))

    def objective(trial: optuna.Trial) -> float:
        trials.append({"start": now(), "epoch_log_s": [0.0, 0.0]})
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
            t0 = now()
            model, history = fit_bare(
                data,
                model_cfg,
                {**base_optimizer, "learning_rate": lr},
                seed,
                batch,
                spec["epochs"],
                [Curves()],
            )
            trials[-1]["train_s"] = since(t0)
            value = float(history["val_accuracy"][-1])
            mlflow.log_metric("final_val_accuracy", value)
            t0 = now()
            sample = data.val.x[:8]
            signature = infer_signature(sample, model.predict(sample, verbose=0))
            mlflow.keras.log_model(
                model, name="model", signature=signature, pip_requirements=requirements
            )
            trials[-1]["model_log_s"] = since(t0)
        trials[-1].update(end=now(), val_accuracy=value)
        return value

    with mlflow.start_run(run_name="sweep"):
        study.optimize(objective, n_trials=len(configs))


def fit_bare(data, model_cfg, optimizer_cfg, seed, batch, epochs, callbacks=()) -> tuple:
    """One model trained the plain Keras way (fresh session, seeded), as the hand-written arms
    do it: returns (model, history)."""
    import keras
    from omegaconf import OmegaConf

    from experiments.data.pipeline import to_dataset
    from experiments.models.build import build_model, build_optimizer

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(OmegaConf.create(model_cfg), data.image_shape, data.num_classes)
    model.compile(
        optimizer=build_optimizer(OmegaConf.create(optimizer_cfg)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        to_dataset(data.train, batch, training=True, seed=seed),
        validation_data=to_dataset(data.val, batch, training=False, seed=seed),
        epochs=epochs,
        callbacks=list(callbacks),
        verbose=0,
    ).history
    return model, history


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
