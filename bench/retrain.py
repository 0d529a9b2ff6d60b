"""`final.retrain`: does re-training the chosen config on train + validation test better?

    python bench/retrain.py [--quick] [--sets sign cifar] [--seeds 0 1 2]

The final stage can test the chosen config as trained on the training split (`final.retrain=
false`, the default: the trial's or the re-evaluation's model) or re-train it on train +
validation first (`final.retrain=true`: about a fifth more images, no validation score left to
check it by). This measures the difference on the default transfer sweep's base config (trial 0
of `sweep=transfer`): for each set and seed, the same config is trained on train and on train +
validation, from the same initial weights and the same split (`seed` sets both), and both models
are tested on the same test images. Paired per seed, so the split's luck cancels.

--quick: 20 images per class, 96 px, 3 epochs: minutes, not figures.
Everything is written to a temporary folder (the feature cache, the Keras cache with the offline
MobileNet weights file); results go to bench/results/retrain.json.
"""

from __future__ import annotations

import statistics
from typing import Any

from _common import parse_args, print_table, write_result
from transfer_vs_recipe import SETS, compose, each_set


def one_seed(overrides: list[str], seed: int) -> dict[str, Any]:
    """Train the base config on train and on train + validation; test both."""
    from experiments.data.load import load_data
    from experiments.data.splits import train_plus_val
    from experiments.training.trial import run_trial
    from search.final.stage import score_on_test
    from search.sweep import prepare

    cfg = prepare(compose([*overrides, f"seed={seed}"]))  # absolute paths, KERAS_HOME
    data = load_data(cfg.data, seed)
    row: dict[str, Any] = {"seed": seed, "train": len(data.train), "val": len(data.val)}
    for label, split in (("train", data), ("train_val", train_plus_val(data))):
        result = run_trial(cfg, split)
        row[f"{label}_test"] = score_on_test(result.model, data, seed).metrics["test_accuracy"]
        row[f"{label}_s"] = round(result.seconds, 1)
        if label == "train":
            row["val_accuracy"] = result.metrics["val_accuracy"]
        del result
    row["gain"] = row["train_val_test"] - row["train_test"]
    print(
        f"  seed {seed}: test {row['train_test']:.4f} (train) vs {row['train_val_test']:.4f} "
        f"(train + val), {row['train_s']:.0f}s / {row['train_val_s']:.0f}s",
        flush=True,
    )
    return row


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": list(SETS)}),
            ("--seeds", {"nargs": "+", "type": int, "default": [0, 1, 2]}),
        ],
    )
    results: dict[str, Any] = {}
    for name, folder, per_class, overrides in each_set(args.sets, "retrain", args.quick):
        rows = [one_seed(overrides, seed) for seed in args.seeds]
        results[name] = {
            "data": folder,
            "per_class": per_class,
            "seeds": rows,
            "mean_gain": statistics.fmean(r["gain"] for r in rows),
        }
    print_table(
        "test accuracy of the base transfer config: trained on train vs on train + validation",
        ["data", "seed", "train", "val", "test (train)", "test (train+val)", "gain", "s", "s+val"],
        [
            [
                r["data"],
                row["seed"],
                row["train"],
                row["val"],
                row["train_test"],
                row["train_val_test"],
                row["gain"],
                row["train_s"],
                row["train_val_s"],
            ]
            for r in results.values()
            for row in r["seeds"]
        ],  # fmt: skip
    )
    for r in results.values():
        wins = sum(row["gain"] > 0 for row in r["seeds"])
        print(
            f"{r['data']}: mean gain {r['mean_gain']:+.4f} "
            f"(train + val better in {wins} of {len(r['seeds'])})"
        )
    write_result("retrain", {"sets": results}, args.quick)


if __name__ == "__main__":
    main()
