"""Augmentation and the frozen-feature cache: the transfer sweep's arms at one wall-clock budget.

    python bench/transfer_augmentation.py [--quick] [--sets sign cifar] [--budget S] [--arms ...]

The same `sweep=transfer` on the same data, split and seed, each arm given the same
`search.timeout`, then re-evaluated (top-k) and tested once as the sweep does:
- `augmented`: the overlay before this benchmark: augmentation searched as continuous strengths
  (flip, rotation, zoom, translation), so every trial runs uncached (the frozen backbone sees a
  new augmented image every epoch);
- `none`: augmentation switched off and not searched: every trial trains on cached activations;
- `preset`: the overlay as it is: augmentation searched as a categorical
  (`data.augmentation.preset`: none | light; trial 0: none), the light preset's phase 1 on K
  cached augmented copies (`model.feature_cache.augmented_copies`), phase 2 uncached;
- `preset_light`: the same with trial 0 light;
- `kcopies`: the light preset always on, phase 1 on K cached augmented copies.
Figures: test accuracy of the final model, trials completed (and pruned), wall time.
Writes bench/results/transfer_augmentation.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, parse_args, print_table, write_result
from transfer_vs_recipe import QUICK_SWEEP, SETS, WEIGHTS_FILE, keras_home, run_sweep

NO_AUGMENTATION = [
    "data.augmentation.flip=none",
    "data.augmentation.rotation=0.0",
    "data.augmentation.zoom=0.0",
    "data.augmentation.translation=0.0",
    "~space.data",  # nor searched
]
ARMS: dict[str, list[str]] = {
    # conf/sweep/transfer.yaml before this benchmark: the strengths searched, base flip + 0.05
    # rotation + 0.1 zoom + 0.1 translation, every trial uncached.
    "augmented": [
        "data.augmentation.preset=null",
        "data.augmentation.flip=horizontal",
        "data.augmentation.rotation=0.05",
        "data.augmentation.zoom=0.1",
        "data.augmentation.translation=0.1",
        "~space.data",
        "+space.data.augmentation.flip={type: categorical, choices: [none, horizontal]}",
        "+space.data.augmentation.rotation={type: float, low: 0.0, high: 0.1, step: 0.025}",
        "+space.data.augmentation.zoom={type: float, low: 0.0, high: 0.2, step: 0.05}",
        "+space.data.augmentation.translation={type: float, low: 0.0, high: 0.2, step: 0.05}",
        "model.feature_cache.augmented_copies=0",
    ],
    # Augmentation off and not searched: every trial wholly cached.
    "none": ["data.augmentation.preset=none", "~space.data"],
    # The overlay's own defaults: preset searched (none | light), trial 0 none, light trials on
    # K cached copies in phase 1.
    "preset": [],
    # The same with trial 0 light (the overlay's base before this benchmark).
    "preset_light": ["data.augmentation.preset=light"],
    # The light preset always on, phase 1 on K cached copies, phase 2 uncached.
    "kcopies": ["data.augmentation.preset=light", "~space.data"],
}
QUICK_BUDGET = 60.0


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": ["sign"]}),
            ("--per-class", {"type": int, "default": None, "help": "images per class"}),
            ("--budget", {"type": float, "default": 240.0, "help": "search.timeout, seconds"}),
            ("--arms", {"nargs": "+", "choices": list(ARMS), "default": list(ARMS)}),
            ("--name", {"default": "transfer_augmentation", "help": "results file name"}),
        ],
    )
    missing = [SETS[s][0] for s in args.sets if not (SHARED_DATA / SETS[s][0]).exists()]
    if missing or not (SHARED_DATA / "keras-weights" / WEIGHTS_FILE).exists():
        raise SystemExit(f"transfer_augmentation: {SHARED_DATA} lacks {missing or WEIGHTS_FILE}")
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    budget = QUICK_BUDGET if args.quick else args.budget
    results: dict[str, dict[str, Any]] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="transfer_augmentation-") as tmp:
        for name in args.sets:
            folder, per_class = SETS[name]
            per_class = args.per_class or (20 if args.quick else per_class)
            root = Path(tmp) / name
            common = [
                "sweep=transfer",
                "data=directory",
                f"data.path={SHARED_DATA / folder}",
                f"keras_home={keras_home(root)}",
                "final.register=false",
                "tracking.log_models=false",
                "seed=42",
                f"search.timeout={budget}",
                *([f"data.max_per_class={per_class}"] if per_class else []),
                *(QUICK_SWEEP if args.quick else []),
            ]
            results[name] = {"data": folder, "per_class": per_class, "budget_s": budget}
            for arm in args.arms:
                print(f"{folder}: arm {arm}, search.timeout={budget:.0f}s ...", flush=True)
                out = run_sweep([*common, *ARMS[arm], f"output_dir={root / arm}"])
                results[name][arm] = out
                print(
                    f"  {arm}: test {out['test_accuracy']:.4f}, best val {out['best_val']:.4f}, "
                    f"{out['trials']} trials ({out['pruned']} pruned) in {out['wall_s']:.0f}s",
                    flush=True,
                )
                rows.append(
                    [folder, arm, budget, out["wall_s"], out["trials"], out["pruned"],
                     out["best_val"], out["test_accuracy"]]
                )  # fmt: skip
    print_table(
        "the transfer sweep's augmentation arms at one budget (search.timeout)",
        ["data", "arm", "budget_s", "wall_s", "trials", "pruned", "best_val", "test_acc"],
        rows,
    )
    write_result(args.name, {"sets": results, "arms": {a: ARMS[a] for a in args.arms}}, args.quick)


if __name__ == "__main__":
    main()
