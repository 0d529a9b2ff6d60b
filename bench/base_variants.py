"""Variants of the default transfer sweep's base config (its trial 0), paired by seed.

    python bench/base_variants.py --variant none: --variant flip:data.augmentation.preset=flip
        [--sets sign cifar] [--seeds 0 1 2] [--quick]

Each variant is NAME:OVERRIDE[,OVERRIDE...] applied on top of `sweep=transfer` (empty: the base
itself). For each set and seed, every variant is trained once on the same split from the same
seed (`seed` sets the split, the initial weights and the shuffling) and tested on the same test
images, so differences between variants are paired and the split's luck cancels. This is how
the transfer sweep's base values are chosen from measurements (docs/transfer.md).

--quick: 20 images per class, 96 px, 3 epochs: minutes, not figures.
Everything is written to a temporary folder (one feature cache per set, shared by the variants;
the Keras cache with the offline MobileNet weights file); results go to
bench/results/base_variants.json.
"""

from __future__ import annotations

import statistics
from typing import Any

from _common import parse_args, print_table, write_result
from transfer_vs_recipe import SETS, compose, each_set


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


def one_seed(common: list[str], variants: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """Train and test every variant on the split of `seed`."""
    from experiments.data.load import load_data
    from experiments.training.trial import run_trial
    from search.final.stage import score_on_test
    from search.sweep import prepare

    row: dict[str, Any] = {"seed": seed}
    data = None
    for name, overrides in variants.items():
        cfg = prepare(compose([*common, *overrides, f"seed={seed}"]))  # absolute paths, KERAS_HOME
        data = data or load_data(cfg.data, seed)  # variants change training, never the split
        result = run_trial(cfg, data)
        row[name] = {
            "val": result.metrics["val_accuracy"],
            "test": score_on_test(result.model, data, seed).metrics["test_accuracy"],
            "seconds": round(result.seconds, 1),
            "cache": result.feature_cache.reason,
        }
        del result
        print(
            f"  seed {seed} {name}: val {row[name]['val']:.4f} test {row[name]['test']:.4f} "
            f"in {row[name]['seconds']:.0f}s ({row[name]['cache']})",
            flush=True,
        )
    return row


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--variant", {"action": "append", "required": True, "help": "NAME:OVERRIDES"}),
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": list(SETS)}),
            ("--seeds", {"nargs": "+", "type": int, "default": [0, 1, 2]}),
        ],
    )
    variants = dict(parse_variant(v) for v in args.variant)
    results: dict[str, Any] = {}
    for name, folder, per_class, common in each_set(args.sets, "base_variants", args.quick):
        rows = [one_seed(common, variants, seed) for seed in args.seeds]
        results[name] = {"data": folder, "per_class": per_class, "seeds": rows}
    table = []
    for r in results.values():
        for variant in variants:
            tests = [row[variant]["test"] for row in r["seeds"]]
            vals = [row[variant]["val"] for row in r["seeds"]]
            secs = [row[variant]["seconds"] for row in r["seeds"]]
            table.append(
                [r["data"], variant, " / ".join(f"{v:.3f}" for v in vals), statistics.fmean(vals),
                 " / ".join(f"{t:.3f}" for t in tests), statistics.fmean(tests),
                 statistics.fmean(secs)]
            )  # fmt: skip
    print_table(
        "the transfer sweep's base config, variants paired by seed",
        ["data", "variant", "val per seed", "val mean", "test per seed", "test mean", "s mean"],
        table,
    )
    write_result("base_variants", {"variants": variants, "sets": results}, args.quick)


if __name__ == "__main__":
    main()
