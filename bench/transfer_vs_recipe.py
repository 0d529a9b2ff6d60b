"""The default transfer sweep against the seed's hand-made recipe, on photos, test accuracy.

    python bench/transfer_vs_recipe.py [--quick] [--sets sign cifar] [--per-class N]

For each photo set (sign-language-digits; a cifar10-test subset of 300 images per class through
`data=directory data.max_per_class=300`): `sweep=recipe` (the seed's Example 1 as one trial,
with the backbone's own preprocessing) is run once and timed; then `sweep=transfer` (the default
transfer sweep) is given (a) the recipe's wall time and (b) three times it as `search.timeout`.
Each is tested once on the same held-out test split (same data config and seed, so the same
split), and the table shows test accuracy, wall time, trials. Targets (issue 12): the sweep
matches the recipe at (a) and beats it by 3 points at (b) wherever the recipe is below 0.95.

`search.timeout` is the sweep's whole budget (search/trials/budget.py): the search keeps back the time
its top-k re-evaluation and the test need, so a sweep ends near its budget; its total wall time
is reported beside it.

--quick: 20 images per class, 96 px, 3-4 epochs, top-2 re-evaluation: minutes, not figures.
--per-class N: the full-size configs on N images per class of every set (a shorter real run).
Everything is written to a temporary folder (MLflow, Optuna, the Keras cache with the offline
MobileNet weights file); results go to bench/results/transfer_vs_recipe.json.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, SHARED_DATA, parse_args, print_table, verdict, write_result

WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
SETS = {
    "sign": ("sign-language-digits", None),
    "cifar": ("cifar10-test", 300),
}
QUICK_PER_CLASS = 20
# Small sizes for --quick: the same configs at 96 px and a few epochs.
QUICK_RECIPE = [
    "data.image_size=96",
    "model.input_size=96",
    "train.epochs=3",
    "model.fine_tune.head_epochs=3",
]
QUICK_SWEEP = [
    "data.image_size=96",
    "model.input_size=96",
    "train.epochs=4",
    "model.fine_tune.head_epochs=3",
    "space.model.fine_tune.head_epochs.high=4",
    "final.top_k=2",
]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from search.cli.overrides import normalize_overrides

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=normalize_overrides(overrides))


def run_sweep(overrides: list[str]) -> dict[str, Any]:
    """One sweep in a fresh process of its own (`sweep_here` there): the final stage trains in
    the sweep process, and a benchmark running every sweep in one process grew past 15 GB
    (docs/benchmarks.md section 11); a process per sweep gives its memory back when it ends."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(sweep_here, overrides).result()


def sweep_here(overrides: list[str]) -> dict[str, Any]:
    """One sweep in this process; its test accuracy, wall time and trial count."""
    from search.sweep import sweep

    cfg = compose(overrides)
    started = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        summary = sweep(cfg)
    seconds = time.perf_counter() - started
    final = summary.final
    lines = log.getvalue().splitlines()
    return {
        "test_accuracy": None if final is None else final.metrics["test_accuracy"],
        "source": None if final is None else final.source,
        "best_val": summary.best_value,
        "best_params": summary.best_params,
        "trials": summary.finished_trials,
        # "test (N images, source): ..." says how many images one test point is worth.
        "test_images": next(
            (int(line.split()[1].lstrip("(")) for line in lines if line.startswith("test (")), None
        ),
        # Trial lines of trials stopped early: by the pruner or by the budget (search.timeout).
        "pruned": sum(
            line.startswith("trial ")
            and (" pruned after epoch " in line or " stopped by the budget" in line)
            for line in lines
        ),
        # search.staged: head configurations its screen trained on cached features ("screen N").
        "screened": sum(line.startswith("screen ") for line in lines),
        "wall_s": round(seconds, 1),
        # What the sweep did: each trial's line, the budget's and the final stage's decisions.
        "story": [
            line
            for line in lines
            if line.startswith(
                ("trial ", "final:", "re-evaluat", "crowned", "search.timeout", "search.staged")
            )
        ],
        "log_tail": lines[-12:],
    }


def require_sets(names: list[str], script: str) -> None:
    """Exit with what is missing when ../shared/data lacks a set or the weights file."""
    missing = [SETS[s][0] for s in names if not (SHARED_DATA / SETS[s][0]).exists()]
    if missing or not (SHARED_DATA / "keras-weights" / WEIGHTS_FILE).exists():
        raise SystemExit(f"{script}: {SHARED_DATA} lacks {missing or WEIGHTS_FILE}")


def base_config(name: str, root: Path, quick: list[str] | None) -> tuple[str, int | None, list]:
    """(folder, images per class, overrides) of `sweep=transfer` on set `name` under `root`:
    its own output folder and Keras cache; `quick` (None: full size) shrinks it."""
    folder, per_class = SETS[name]
    per_class = QUICK_PER_CLASS if quick is not None else per_class
    overrides = [
        "sweep=transfer",
        "data=directory",
        f"data.path={SHARED_DATA / folder}",
        f"keras_home={keras_home(root / name)}",
        f"output_dir={root / name / 'runs'}",
        *([f"data.max_per_class={per_class}"] if per_class else []),
        *(quick or []),
    ]
    return folder, per_class, overrides


# The base config at small sizes, for the paired benchmarks' --quick (retrain, base_variants,
# ensemble).
QUICK_BASE = ["data.image_size=96", "model.input_size=96", "train.epochs=3"]


def each_set(
    names: list[str], script: str, quick: bool
) -> Iterator[tuple[str, str, int | None, list]]:
    """(name, folder, images per class, the base config's overrides) of each set, every one under
    one temporary folder (removed after the last); checks the sets first and quiets TensorFlow."""
    require_sets(names, script)
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    with tempfile.TemporaryDirectory(prefix=f"{script}-") as tmp:
        for name in names:
            folder, per_class, overrides = base_config(
                name, Path(tmp), QUICK_BASE if quick else None
            )
            print(f"\n{folder} ({per_class or 'all'} per class)", flush=True)
            yield name, folder, per_class, overrides


def keras_home(root: Path) -> Path:
    home = root / "keras_home"
    (home / "models").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "keras-weights" / WEIGHTS_FILE, home / "models" / WEIGHTS_FILE)
    return home


def common_overrides(name: str, root: Path, per_class: int | None) -> list[str]:
    """The data, Keras cache and seed every run on set `name` shares (so: the same split)."""
    return [
        "data=directory",
        f"data.path={SHARED_DATA / SETS[name][0]}",
        f"keras_home={keras_home(root / name)}",
        "final.register=false",
        "seed=42",
        *([f"data.max_per_class={per_class}"] if per_class else []),
    ]


def run_recipe(name: str, root: Path, common: list[str], quick: bool) -> dict[str, Any]:
    """`sweep=recipe` (the seed's Example 1, one trial) on set `name`, timed: the reference."""
    folder, per_class = SETS[name]
    print(f"\n{folder}: the recipe ...", flush=True)
    recipe = run_sweep(
        ["sweep=recipe", *common, f"output_dir={root / name / 'recipe'}"]
        + (QUICK_RECIPE if quick else [])
    )
    print(f"  recipe: test {recipe['test_accuracy']:.4f} in {recipe['wall_s']:.0f}s", flush=True)
    return recipe


def one_set(name: str, root: Path, quick: bool, per_class_override: int | None) -> dict[str, Any]:
    folder, per_class = SETS[name]
    per_class = per_class_override or (QUICK_PER_CLASS if quick else per_class)
    common = common_overrides(name, root, per_class)
    recipe = run_recipe(name, root, common, quick)
    budgets = {"a": recipe["wall_s"], "b": 3 * recipe["wall_s"]}
    sweeps = {}
    for label, budget in budgets.items():
        print(f"  sweep=transfer, search.timeout={budget:.0f}s ({label}) ...", flush=True)
        sweeps[label] = run_sweep(
            [
                "sweep=transfer",
                *common,
                f"search.timeout={budget}",  # the rest as a user runs it (models logged)
                f"output_dir={root / name / ('sweep_' + label)}",
            ]
            + (QUICK_SWEEP if quick else [])
        )
        sweeps[label]["budget_s"] = round(budget, 1)
        s = sweeps[label]
        print(
            f"  sweep ({label}): test {s['test_accuracy']:.4f}, {s['trials']} trials "
            f"({s['pruned']} pruned) in {s['wall_s']:.0f}s",
            flush=True,
        )
    r = recipe["test_accuracy"]
    targets = {
        "a_matches": sweeps["a"]["test_accuracy"] >= r,
        "b_beats_by_3_points": None if r >= 0.95 else sweeps["b"]["test_accuracy"] >= r + 0.03,
    }
    return {"data": folder, "per_class": per_class, "recipe": recipe, **sweeps, "targets": targets}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": list(SETS)}),
            ("--per-class", {"type": int, "default": None, "help": "images per class"}),
        ],
    )
    missing = [SETS[s][0] for s in args.sets if not (SHARED_DATA / SETS[s][0]).exists()]
    if missing or not (SHARED_DATA / "keras-weights" / WEIGHTS_FILE).exists():
        raise SystemExit(f"transfer_vs_recipe: {SHARED_DATA} lacks {missing or WEIGHTS_FILE}")
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    results = {}
    with tempfile.TemporaryDirectory(prefix="transfer_vs_recipe-") as tmp:
        for name in args.sets:
            results[name] = one_set(name, Path(tmp), args.quick, args.per_class)
    rows = []
    for res in results.values():
        rec = res["recipe"]
        rows.append(
            [res["data"], "recipe", "-", rec["wall_s"], rec["trials"], rec["test_accuracy"]]
        )
        for label in ("a", "b"):
            s = res[label]
            rows.append(
                [res["data"], f"transfer ({label})", s["budget_s"], s["wall_s"], s["trials"],
                 s["test_accuracy"]]
            )  # fmt: skip
    print_table(
        "test accuracy: recipe vs the default transfer sweep (budget = search.timeout)",
        ["data", "what", "budget_s", "wall_s", "trials", "test_acc"],
        rows,
    )
    for res in results.values():
        t = res["targets"]
        print(
            f"{res['data']}: (a) matches the recipe: {verdict(t['a_matches'])}; (b) beats it by "
            f"3 points: {verdict(t['b_beats_by_3_points'])}"
        )
    payload = {"per_class_override": args.per_class, "sets": results}
    write_result("transfer_vs_recipe", payload, args.quick)


if __name__ == "__main__":
    main()
