"""Search efficiency: best validation accuracy versus wall time, per search method.

    python bench/search_efficiency.py [--quick] [--seeds N] [--trials N] [--data fashion-mnist-test]
    python bench/search_efficiency.py --space transfer [--quick] [--seeds N] [--trials N]

Every method searches the same space (conf/space/cnn.yaml) on the same real images (a per-class
subsample of ../shared/data/fashion-mnist-test, split once with a fixed seed) with the same
budget (search.n_trials trials of at most train.epochs epochs), once per search seed:

  random            search.sampler=random
  tpe               search.sampler=tpe
  tpe+median        TPE with search.pruner=median          (needs the pruners, issue #7)
  kt_hyperband      search=keras_tuner, tuner hyperband    (needs the Keras Tuner engine, issue #5)
  plain_kt_hyperband  keras_tuner.Hyperband by hand, no sweeplab (the baseline to beat)

Timings come from the MLflow store each sweep writes (child run end times, `final_val_accuracy`),
so every sweeplab engine is measured the same way. The figure of merit is the time to reach random
search's final best (the median over seeds of random's best; for an even number of seeds the lower
of the middle two, a value random reached): target <= 1/3 of random's time.
Methods whose pieces are not in this checkout are skipped with the reason.

--space transfer: the default transfer sweep (`+sweep=transfer`: conf/sweep/transfer.yaml over
conf/space/transfer.yaml, MobileNet alpha 0.25 with the offline ImageNet weights file copied into a
temporary keras_home) on photos: the first images of each class of ../shared/data/
sign-language-digits, through `data=directory`. Methods: `random` (no pruner), `tpe` (no pruner,
n_startup_trials=5 as above) and `default` (the sweep as it is: TPE with Optuna's default 10
start-up trials and the sweep's own Hyperband pruner); the Keras Tuner methods are skipped there.
Each sweep has its own output_dir, so its own frozen-feature cache, cold at the start as a
user's first sweep is (a cache shared across sweeps would favour whichever ran later).
Results go to bench/results/search_efficiency_transfer.json.

Trial 0 of every study is the base config (search/space/baseline.py), the same for every method; it is
kept, and its time and epochs count for every method. Except `plain_random` (--space transfer):
random search with `search.baseline=false search.variants=[]`, as a user runs random search without
sweeplab's start, every trial a draw. Each reference method (--reference: `random` and
`plain_random`) gets its own table and target line: against `random` the comparison isolates the
samplers and pruners (same first trials); against `plain_random` it is the default sweep against
plain random search. --methods NAME...: run only those methods.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, SHARED_DATA, median, parse_args, print_table, verdict, write_result
from omegaconf import OmegaConf
from transfer_vs_recipe import QUICK_SWEEP, WEIGHTS_FILE, keras_home

TARGET = 1 / 3  # time to reach random's final best <= 1/3 of random's time
# The reference methods: no target is asked of them, every other method is compared with each.
REFERENCES = ("random", "plain_random")
DATA_SEED = 42  # data split and weight init: fixed, so only the search differs between seeds
FULL = {"per_class": 150, "epochs": 4, "n_trials": 16, "seeds": 3}
# TPE models the space after this many random trials (Optuna's default, 10, is most of a
# 16-trial budget, which would make TPE random search by another name).
TPE_STARTUP = ["search.samplers.tpe.n_startup_trials=5"]
QUICK = {"per_class": 50, "epochs": 2, "n_trials": 5, "seeds": 3}

# --space transfer. 10 epochs is the sweep's own train.epochs (6 head-only + 4 fine-tuning in its
# base config); input sizes as its space samples them (96-224 px). 40 images per class (279
# train / 61 validation): about 20 s a trial at nice 19 beside another load on 2 cores, so the
# 108 trials take about 35 minutes (50 per class measured 22-27 s a trial).
TRANSFER_DATA = "sign-language-digits"
TRANSFER_FULL = {"per_class": 40, "epochs": 10, "n_trials": 12, "seeds": 3}
# --quick: the same sweep at 96 px only and 4 epochs (transfer_vs_recipe.py's quick configs).
TRANSFER_QUICK = {"per_class": 20, "epochs": 4, "n_trials": 4, "seeds": 3}
BASELINE_NOTE = (
    "trial 0 of every study is the base config (search/space/baseline.py), the same for every method "
    "but plain_random (search.baseline=false: random search as a user without sweeplab runs it): "
    "kept, and its time and epochs count"
)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--seeds", {"type": int, "default": None, "help": "search seeds per method"}),
            ("--trials", {"type": int, "default": None, "help": "search.n_trials per sweep"}),
            (
                "--data",
                {
                    "default": None,
                    "help": "a folder of ../shared/data (default: fashion-mnist-test; "
                    f"{TRANSFER_DATA} with --space transfer)",
                },
            ),
            (
                "--space",
                {
                    "choices": ["cnn", "transfer"],
                    "default": "cnn",
                    "help": "cnn: conf/space/cnn.yaml (default); transfer: +sweep=transfer",
                },
            ),
            ("--methods", {"nargs": "+", "default": None, "help": "only these methods"}),
            (
                "--reference",
                {
                    "nargs": "+",
                    "default": list(REFERENCES),
                    "help": "the methods every other one is compared with (those that ran)",
                },
            ),
        ],
    )
    transfer = args.space == "transfer"
    args.data = args.data or (TRANSFER_DATA if transfer else "fashion-mnist-test")
    if transfer:
        size = dict(TRANSFER_QUICK if args.quick else TRANSFER_FULL)
    else:
        size = dict(QUICK if args.quick else FULL)
    if args.seeds:
        size["seeds"] = args.seeds
    if args.trials:
        size["n_trials"] = args.trials
    source = SHARED_DATA / args.data
    if not source.is_dir():
        print(
            f"search_efficiency: skipped: {source} is not here (a fresh clone has no shared data)"
        )
        return
    if transfer and not (SHARED_DATA / "keras-weights" / WEIGHTS_FILE).is_file():
        print(f"search_efficiency: skipped: no {SHARED_DATA / 'keras-weights' / WEIGHTS_FILE}")
        return
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    work = Path(tempfile.mkdtemp(prefix="sweeplab-search-efficiency-"))
    loads = [os.getloadavg()]
    try:
        subset = link_subset(source, work / "images", size["per_class"])
        if transfer:
            data_overrides, data_note = transfer_config(subset, work, args.quick)
        else:
            data_overrides, data_note = data_config(subset)
        print(
            f"search efficiency ({'+sweep=transfer' if transfer else 'conf/space/cnn.yaml'}): "
            f"{args.data}, {size['per_class']} images per class ({data_note}), "
            f"{size['n_trials']} trials x <= {size['epochs']} epochs, {size['seeds']} seeds",
            flush=True,
        )
        print(f"  note: {BASELINE_NOTE}")
        print(f"  load average at the start (1, 5, 15 min): {_load(loads[0])}", flush=True)
        if transfer:
            methods, skipped = transfer_methods()
        else:
            methods, skipped = available_methods(data_overrides)
        if args.methods:
            unknown = sorted(set(args.methods) - set(methods) - set(skipped))
            if unknown:
                raise SystemExit(f"search_efficiency: no method {unknown}; known: {list(methods)}")
            methods = {n: m for n, m in methods.items() if n in args.methods}
        for name, reason in skipped.items():
            print(f"  skip {name}: {reason}")
        curves: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
        for seed in range(size["seeds"]):  # interleaved: seed 0 of every method, then seed 1, ...
            for name, run in methods.items():
                curve = run(work / "runs", data_overrides, subset, size, seed)
                curves[name].append(curve)
                loads.append(os.getloadavg())
                print(
                    f"  seed {seed} {name:<20} best {curve['best']:.4f} (trial "
                    f"{curve['best_trial'] or '-'}) after {curve['total_s']:6.1f}s, {curve['trials']} "
                    f"trials, {curve['epochs']} epochs; load {_load(loads[-1])}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one_minute = [load[0] for load in loads]
    print(
        f"\nload average (1 min) over the run: {min(one_minute):.2f}-{max(one_minute):.2f}, "
        f"median {median(one_minute):.2f} ({len(loads)} samples: the start and after each sweep)"
    )
    report(curves, skipped, size, args, loads)


def _load(load: tuple[float, ...]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


# --------------------------------------------------------------------------- data


def link_subset(source: Path, target: Path, per_class: int) -> Path:
    """The first `per_class` images of each class folder, hard-linked (copied across devices).

    Not symlinks: a data folder's symbolic links are followed only while they stay inside it
    (docs/operations.md, "Data links"), so links to ../shared/data would be skipped.
    """
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if f.is_file())[:per_class]
        (target / class_dir.name).mkdir(parents=True)
        for f in files:
            try:
                os.link(f, target / class_dir.name / f.name)
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copyfile(f, target / class_dir.name / f.name)
    return target


def data_config(subset: Path) -> tuple[list[str], str]:
    """`data=directory data.path=...` when the folder loader exists (issue #3), else a fallback.

    The fallback reads the PNGs with PIL here and hands them to the runner in place of
    `load_data`: the same `ImageData`, stratified split and seed as the real loader would give.
    """
    if (ROOT / "conf" / "data" / "directory.yaml").exists():
        overrides = ["data=directory", f"data.path={subset}"]
        try:
            data = compose(overrides).data
            # Keep the images at their own 28x28 grey where the loader lets us say so.
            overrides += [
                f"data.{k}={v}" for k, v in (("image_size", 28), ("channels", 1)) if k in data
            ]
            compose(overrides)
            return overrides, "data=directory"
        except Exception as err:  # a changed interface: say so and use the fallback
            print(f"  data=directory did not compose ({err}); reading the folder in the bench")
    import search.trials.runner

    loader = folder_loader(subset)
    loader(compose([]).data, DATA_SEED)  # read once now, so no method pays for it
    search.trials.runner.load_data = loader
    return [], "read by the bench script: no data=directory loader in this checkout"


def folder_loader(folder: Path):
    """A `load_data` replacement over a class-per-folder image tree (PIL -> float32 arrays)."""
    import numpy as np
    from PIL import Image

    from experiments.data.splits import ImageData, stratified_split

    cache: dict[int, ImageData] = {}

    def load(cfg, seed: int) -> ImageData:
        if seed not in cache:
            classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
            images, labels = [], []
            for label, name in enumerate(classes):
                for f in sorted((folder / name).iterdir()):
                    with Image.open(f) as im:
                        images.append(np.asarray(im.convert("L"), dtype="float32")[..., None])
                    labels.append(label)
            x, y = np.stack(images), np.asarray(labels, dtype="int32")
            train, val, test = stratified_split(
                x, y, float(cfg.val_fraction), float(cfg.test_fraction), seed
            )
            cache[seed] = ImageData(train, val, test, classes, source=f"folder:{folder.name}")
        return cache[seed]

    return load


def transfer_config(subset: Path, work: Path, quick: bool) -> tuple[list[str], str]:
    """`+sweep=transfer` on the photo subset with the offline MobileNet weights (--space transfer).

    --quick takes transfer_vs_recipe.py's quick configs (96 px only, 4 epochs, 3 of them
    head-only); their `final.*` keys do not apply, as the final stage is off here.
    """
    overrides = [
        "+sweep=transfer",
        "data=directory",
        f"data.path={subset}",
        f"keras_home={keras_home(work)}",
    ]
    if quick:
        overrides += [o for o in QUICK_SWEEP if not o.startswith("final.")]
    cfg = compose(overrides)
    sizes = OmegaConf.select(cfg, "space.model.input_size.choices", default=None)
    note = (
        f"data=directory, decoded at {cfg.data.image_size} px, input sizes "
        f"{list(sizes) if sizes is not None else [cfg.model.input_size]}, {cfg.model.backbone} alpha "
        f"{cfg.model.alpha} ImageNet weights from {WEIGHTS_FILE}"
    )
    return overrides, note


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from search.cli.overrides import normalize_overrides  # +sweep=NAME as sweep=NAME

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=normalize_overrides(overrides))


# --------------------------------------------------------------------------- methods


def available_methods(data_overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The methods this checkout can run, and a reason for each one it cannot."""
    methods: dict[str, Any] = {
        "random": sweeplab_method(["search.sampler=random", "search.pruner=none"]),
        "tpe": sweeplab_method(["search.sampler=tpe", "search.pruner=none"] + TPE_STARTUP),
    }
    skipped: dict[str, str] = {}
    base = compose(data_overrides)
    if "pruner" in base.search:
        methods["tpe+median"] = sweeplab_method(
            ["search.sampler=tpe", "search.pruner=median"] + TPE_STARTUP
        )
    else:
        skipped["tpe+median"] = "conf/search/optuna.yaml has no `pruner` key (pruners: issue #7)"
    if (ROOT / "conf" / "search" / "keras_tuner.yaml").exists():
        kt = compose([*data_overrides, "search=keras_tuner"])
        key = next((k for k in ("tuner", "algorithm", "oracle") if k in kt.search), None)
        if key:
            methods["kt_hyperband"] = sweeplab_method(
                ["search=keras_tuner", f"search.{key}=hyperband"]
            )
        else:
            skipped["kt_hyperband"] = "conf/search/keras_tuner.yaml names no tuner key to set"
    else:
        skipped["kt_hyperband"] = "no conf/search/keras_tuner.yaml (Keras Tuner engine: issue #5)"
    methods["plain_kt_hyperband"] = plain_hyperband
    return methods, skipped


def transfer_methods() -> tuple[dict[str, Any], dict[str, str]]:
    """--space transfer: random and TPE without pruning, and the transfer sweep as it is."""
    methods = {
        # Random search as a user would run it without sweeplab's start: no base config as
        # trial 0, no variants after it (search.baseline=false, search.variants=[]).
        "plain_random": sweeplab_method(
            [
                "search.sampler=random",
                "search.pruner=none",
                "search.baseline=false",
                "search.variants=[]",
            ],
            label="plain_random",
            own_dir=True,
        ),  # fmt: skip
        "random": sweeplab_method(["search.sampler=random", "search.pruner=none"], own_dir=True),
        "tpe": sweeplab_method(
            ["search.sampler=tpe", "search.pruner=none"] + TPE_STARTUP, own_dir=True
        ),
        # No overrides: conf/sweep/transfer.yaml's TPE (10 start-up trials) + Hyperband pruner.
        "default": sweeplab_method([], label="default", own_dir=True),
    }
    reason = (
        "not run on the transfer space (the brief of this mode: random, TPE and the sweep's "
        "default, within ~35 minutes on 2 cores)"
    )
    return methods, {"kt_hyperband": reason, "plain_kt_hyperband": reason}


def sweeplab_method(extra: list[str], label: str | None = None, own_dir: bool = False):
    """A method that is one sweeplab sweep with these overrides; its curve read from MLflow.

    own_dir: the sweep gets its own output_dir (stores and frozen-feature cache), deleted once its
    curve is read; otherwise every sweep writes to `out`.
    """

    def run(out: Path, data_overrides: list[str], subset: Path, size: dict, seed: int) -> dict:
        from search.sweep import sweep

        name = (label or "-".join(o.split("=")[-1] for o in extra)) + f"-seed{seed}"
        out = out / name if own_dir else out
        cfg = compose(
            [
                *data_overrides,
                *extra,
                f"seed={DATA_SEED}",
                f"search.seed={seed}",
                f"search.n_trials={size['n_trials']}",
                f"search.study_name=bench-{name}",
                f"train.epochs={size['epochs']}",
                "tracking.log_models=false",
                "final.enabled=false",  # the test split is not part of the search
                f"output_dir={out}",
            ]
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the sweep's own lines: not needed here
            summary = sweep(cfg)
        curve = curve_from_mlflow(cfg, summary.parent_run_id)
        if own_dir:
            shutil.rmtree(out, ignore_errors=True)
        return curve

    return run


def curve_from_mlflow(cfg, parent_run_id: str) -> dict[str, Any]:
    """Best-so-far validation accuracy against seconds since the sweep's parent run started."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(str(cfg.tracking.tracking_uri))
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=10_000,
    )
    t0 = parent.info.start_time / 1000
    finished = sorted(children, key=lambda r: r.info.end_time or 0)
    points, best, epochs, best_trial = [], -math.inf, 0, None
    for run in finished:
        epochs += len(client.get_metric_history(run.info.run_id, "loss"))
        value = run.data.metrics.get("final_val_accuracy")
        if value is not None and value > best:
            best, best_trial = value, run.data.tags.get("sweeplab.trial_number")
        points.append((run.info.end_time / 1000 - t0, best, epochs))
    end = (parent.info.end_time or finished[-1].info.end_time) / 1000 - t0
    return {
        "points": points,
        "best": best,
        "best_trial": best_trial,
        "total_s": end,
        "trials": len(finished),
        "epochs": epochs,
    }


def plain_hyperband(out: Path, data_overrides: list[str], subset: Path, size: dict, seed: int):
    """keras_tuner.Hyperband over the same space and data, no sweeplab: the baseline to beat.

    max_epochs is train.epochs, and it stops once it has trained as many epochs as the others
    may (n_trials x epochs); Hyperband spends them on more, mostly shorter, fits.
    """
    import keras
    import keras_tuner as kt

    from experiments.data.pipeline import to_dataset
    from experiments.models.build import build_model, build_optimizer
    from search.space.apply import apply_params
    from search.space.spec import parse_space
    from search.trials.runner import load_data

    cfg = compose([*data_overrides, f"seed={DATA_SEED}", f"train.epochs={size['epochs']}"])
    space = parse_space(cfg.space, cfg)
    data = load_data(cfg.data, DATA_SEED)
    batch = int(cfg.train.batch_size)

    def build(hp):
        params: dict[str, Any] = {}
        for p in space:
            if p.kind == "categorical":
                params[p.name] = hp.Choice(p.name, list(p.choices))
            elif p.kind == "int":
                params[p.name] = hp.Int(p.name, p.low, p.high, step=p.step or 1)
            else:
                sampling = "log" if p.log else "linear"
                params[p.name] = hp.Float(p.name, p.low, p.high, step=p.step, sampling=sampling)
        trial_cfg = apply_params(cfg, params)
        keras.utils.set_random_seed(DATA_SEED)
        model = build_model(trial_cfg.model, data.image_shape, data.num_classes)
        model.compile(
            optimizer=build_optimizer(trial_cfg.optimizer),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    tuner = kt.Hyperband(
        build,
        objective="val_accuracy",
        max_epochs=size["epochs"],
        hyperband_iterations=1000,  # stopped below by the epoch budget instead
        seed=seed,
        directory=str(out / "keras_tuner"),
        project_name=f"hyperband-seed{seed}",
        overwrite=True,
    )
    points: list[tuple[float, float, int]] = []
    epochs = [0]
    best = [-math.inf]
    budget = size["n_trials"] * size["epochs"]  # the most epochs the other methods may train
    started = time.time()
    end_trial, populate = tuner.on_trial_end, tuner.oracle.populate_space

    def populate_space(trial_id):
        if epochs[0] >= budget:
            return {"status": "STOPPED", "values": None}
        return populate(trial_id)

    tuner.oracle.populate_space = populate_space

    class CountEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs[0] += 1

    def on_trial_end(trial):
        end_trial(trial)
        history = tuner.oracle.get_trial(trial.trial_id).metrics.get_history("val_accuracy")
        if history:  # the last epoch's value, as the sweeplab runs report
            best[0] = max(best[0], float(history[-1].value[0]))
        points.append((time.time() - started, best[0], epochs[0]))

    tuner.on_trial_end = on_trial_end
    tuner.search(
        to_dataset(data.train, batch, training=True, seed=DATA_SEED),
        validation_data=to_dataset(data.val, batch, training=False, seed=DATA_SEED),
        callbacks=[CountEpochs()],
        verbose=0,
    )
    return {
        "points": points,
        "best": best[0],
        "best_trial": None,
        "total_s": time.time() - started,
        "trials": len(points),
        "epochs": epochs[0],
    }


# --------------------------------------------------------------------------- report


def time_to_reach(points: list, value: float, index: int = 0) -> float:
    """Seconds (index 0) or epochs trained (index 2) until the best so far reaches `value`."""
    return next((float(p[index]) for p in points if p[1] >= value - 1e-9), math.inf)


def best_at(points: list, seconds: float) -> float:
    reached = [p[1] for p in points if p[0] <= seconds]
    return max(reached) if reached else float("nan")


def compare(curves: dict[str, list[dict]], reference: str) -> tuple[float, float, dict[str, Any]]:
    """(the reference's final best, its median time to it, every method's figures against it).

    The reference's final best is the middle of its seeds' final bests (the lower middle one for
    an even number of seeds, so that it is a value the reference reached)."""
    finals = sorted(c["best"] for c in curves[reference])
    target_value = finals[(len(finals) - 1) // 2]
    ref_time = median([time_to_reach(c["points"], target_value) for c in curves[reference]])
    ref_epochs = median([time_to_reach(c["points"], target_value, 2) for c in curves[reference]])
    ref_total = median([c["total_s"] for c in curves[reference]])
    checkpoints = [ref_total * f for f in (0.25, 0.5, 1.0)]
    summary = {}
    for name, runs in curves.items():
        reach = median([time_to_reach(c["points"], target_value) for c in runs])
        reach_epochs = median([time_to_reach(c["points"], target_value, 2) for c in runs])
        summary[name] = {
            "final_best_each_seed": [c["best"] for c in runs],
            "final_best_median": median([c["best"] for c in runs]),
            "total_s_median": median([c["total_s"] for c in runs]),
            "epochs_median": median([c["epochs"] for c in runs]),
            "time_to_reference_best_s": reach,
            "time_ratio": reach / ref_time if math.isfinite(reach) else math.inf,
            "epochs_to_reference_best": reach_epochs,
            "epochs_ratio": reach_epochs / ref_epochs if math.isfinite(reach_epochs) else math.inf,
            "time_to_reference_best_each_seed_s": [
                time_to_reach(c["points"], target_value) for c in runs
            ],
            "epochs_to_reference_best_each_seed": [
                time_to_reach(c["points"], target_value, 2) for c in runs
            ],
            "best_trial_each_seed": [c.get("best_trial") for c in runs],
            "best_at_s": {
                f"{t:.0f}": median([best_at(c["points"], t) for c in runs]) for t in checkpoints
            },
        }
    return target_value, ref_time, summary


def report(
    curves: dict[str, list[dict]], skipped: dict[str, str], size: dict, args, loads: list
) -> None:
    """A table per reference method (`--reference`: random search, and on the transfer space
    also plain random search without the base config as trial 0), the target against each."""
    targets, compared = [], {}
    for reference in [r for r in args.reference if r in curves]:
        target_value, ref_time, summary = compare(curves, reference)
        compared[reference] = {
            "final_best_median": target_value,
            "time_to_its_best_s": ref_time,
            "methods": summary,
        }
        print_table(
            f"Best val_accuracy vs wall time (median over {size['seeds']} seeds; {reference}'s "
            f"final best {target_value:.4f}, reached after {ref_time:.1f}s)",
            ["method", "final best", "total s", "epochs", f"s to {reference}'s best",
             f"x {reference}", "epochs to it", f"x {reference} (epochs)",
             *(f"best at {t}s" for t in next(iter(summary.values()))["best_at_s"])],
            [
                [name, m["final_best_median"], m["total_s_median"], m["epochs_median"],
                 m["time_to_reference_best_s"], m["time_ratio"], m["epochs_to_reference_best"],
                 m["epochs_ratio"], *m["best_at_s"].values()]
                for name, m in summary.items()
            ],
        )  # fmt: skip
        print(f"\nper seed: final best (its trial), then s / epochs to {target_value:.4f}")
        for name, m in summary.items():
            cells = [
                f"{best:.4f} ({'-' if trial is None else trial}) {_cell_s(t)} / {_cell_s(e)}"
                for best, trial, t, e in zip(
                    m["final_best_each_seed"],
                    m["best_trial_each_seed"],
                    m["time_to_reference_best_each_seed_s"],
                    m["epochs_to_reference_best_each_seed"],
                    strict=True,
                )
            ]
            print(f"  {name:<20} " + ";  ".join(cells))
        contenders = [m for m in summary if m not in (*REFERENCES, "plain_kt_hyperband")]
        if not contenders:
            continue
        best_method = min(contenders, key=lambda m: summary[m]["time_ratio"])
        ratio = summary[best_method]["time_ratio"]
        met = ratio <= TARGET
        targets.append({"reference": reference, "method": best_method, "value": ratio, "met": met})
        print(
            f"\ntarget: time to {reference}'s final best <= {TARGET:.2f} x {reference}'s: best "
            f"sweeplab method {best_method} at {ratio:.2f} x  {verdict(met)} (counted in epochs "
            f"trained instead of seconds: {summary[best_method]['epochs_ratio']:.2f} x)\n"
        )
    base_first = {name: sum(str(t) == "0" for t in c) for name, c in _best_trials(curves).items()}
    print(
        "seeds whose final best is trial 0 (the base config, except for plain_random): "
        + ", ".join(f"{name} {n}/{len(curves[name])}" for name, n in base_first.items())
    )
    for name, reason in skipped.items():
        print(f"not measured: {name}: {reason}")
    transfer = args.space == "transfer"
    write_result(
        "search_efficiency_transfer" if transfer else "search_efficiency",
        {
            "settings": {
                **size,
                "data": args.data,
                "data_seed": DATA_SEED,
                "space": "+sweep=transfer (conf/space/transfer.yaml)"
                if transfer
                else "conf/space/cnn.yaml",
            },  # fmt: skip
            "baseline": BASELINE_NOTE,
            "load_average_1_5_15_samples": [[round(x, 2) for x in load] for load in loads],
            "target_time_ratio_max": TARGET,
            "targets": targets,
            "references": compared,
            "skipped": skipped,
            "curves": curves,
        },
        args.quick,
    )


def _best_trials(curves: dict[str, list[dict]]) -> dict[str, list]:
    return {name: [c.get("best_trial") for c in runs] for name, runs in curves.items()}


def _cell_s(value: float) -> str:
    return "never" if not math.isfinite(value) else f"{value:.0f}"


if __name__ == "__main__":
    main()
