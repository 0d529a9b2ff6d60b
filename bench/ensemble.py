"""`final.ensemble`: is the average of a sweep's models more accurate than its members?

    python bench/ensemble.py [--sets cifar sign] [--seeds 42 43 44] [--quick]

On the split `bench/transfer_vs_recipe.py` tests (`seed=42`), the default transfer sweep's base
config and its first variant (the base with `flip`) are each trained on the training split once
per initialization seed (the split stays seed 42's). Every model is tested alone; then every
average of 2, 3 and 4 of them is tested, and its gain over its members' mean test accuracy is
reported (the spread, and how many averages beat their members). "sweep (b)" is the average of
the four models a base-and-flip sweep holds at 3x the recipe's time: both trials (first seed) and
their re-evaluations (second seed). Test-time flips (each model averaged with itself on mirrored
images) are measured alongside. Inference: milliseconds per image of one model and of the
average of 5, predicting the test split in batches of 32 on this machine.

--quick: 20 images per class, 96 px, 3 epochs: minutes, not figures.
Everything is written to a temporary folder; results go to bench/results/ensemble.json.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import numpy as np
from _common import parse_args, print_table, write_result
from transfer_vs_recipe import SETS, compose, each_set

SPLIT_SEED = 42  # bench/transfer_vs_recipe.py's
CONFIGS = {"base": [], "flip": ["data.augmentation.preset=flip"]}


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def train_models(overrides: list[str], seeds: list[int]) -> tuple[dict[str, Any], Any, list]:
    """{name: test probabilities...} of each config x seed, the data, and the trained models."""
    from omegaconf import open_dict

    from experiments.data.load import load_data
    from experiments.training.trial import run_trial
    from search.sweep import prepare

    data, models, rows = None, [], {}
    for name, extra in CONFIGS.items():
        for seed in seeds:
            cfg = prepare(compose([*overrides, *extra, f"seed={SPLIT_SEED}"]))
            data = data or load_data(cfg.data, SPLIT_SEED)
            with open_dict(cfg):
                cfg.seed = seed  # initialization, shuffling, augmentation; not the split
            result = run_trial(cfg, data)
            test = result.model.predict(data.test.x, verbose=0)
            mirrored = result.model.predict(data.test.x[:, :, ::-1], verbose=0)
            key = f"{name}{seed}"
            rows[key] = {
                "val": float(result.metrics["val_accuracy"]),
                "test": accuracy(test, data.test.y),
                "test_flip_tta": accuracy(test + mirrored, data.test.y),
                "seconds": round(result.seconds, 1),
                "probabilities": test,
            }
            models.append(result.model)
            print(
                f"  {key}: val {rows[key]['val']:.4f} test {rows[key]['test']:.4f} "
                f"(flip TTA {rows[key]['test_flip_tta']:.4f}) in {result.seconds:.0f}s",
                flush=True,
            )
    return rows, data, models


def averages(rows: dict[str, Any], labels: np.ndarray) -> dict[str, Any]:
    """Every average of 2, 3, 4 models: its gain over its members' mean test accuracy."""
    out: dict[str, Any] = {}
    for size in (2, 3, 4):
        gains = []
        for combo in itertools.combinations(rows, size):
            mean = sum(rows[k]["probabilities"] for k in combo) / size
            gains.append(accuracy(mean, labels) - statistics.fmean(rows[k]["test"] for k in combo))
        out[str(size)] = {
            "count": len(gains),
            "better": sum(g > 0 for g in gains),
            "min_gain": min(gains),
            "mean_gain": statistics.fmean(gains),
            "max_gain": max(gains),
        }
    return out


def inference_ms(models: list, x: np.ndarray) -> dict[str, float]:
    """Milliseconds per image: one model, and the average of 5 (as final.ensemble builds it)."""
    from experiments.models.ensemble import average_model

    def timed(model) -> float:
        model.predict(x[:32], batch_size=32, verbose=0)  # trace once
        started = time.perf_counter()
        model.predict(x, batch_size=32, verbose=0)
        return 1000 * (time.perf_counter() - started) / len(x)

    single = timed(models[0])
    five = (models * 5)[:5]  # the first 5, repeated when fewer were trained
    import keras

    clones = [keras.models.clone_model(m) for m in five]  # distinct objects, renamed freely
    return {"single_ms": single, "average_of_5_ms": timed(average_model(clones))}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": list(SETS)}),
            ("--seeds", {"nargs": "+", "type": int, "default": [42, 43, 44]}),
        ],
    )
    results: dict[str, Any] = {}
    for name, folder, per_class, overrides in each_set(args.sets, "ensemble", args.quick):
        rows, data, models = train_models(overrides, args.seeds)
        first, second = args.seeds[:2]
        sweep_b = [f"base{first}", f"flip{first}", f"base{second}", f"flip{second}"]
        mean = sum(rows[k]["probabilities"] for k in sweep_b) / len(sweep_b)
        results[name] = {
            "data": folder,
            "per_class": per_class,
            "split": [len(data.train), len(data.val), len(data.test)],
            "models": {
                k: {m: v for m, v in r.items() if m != "probabilities"} for k, r in rows.items()
            },  # fmt: skip
            "averages": averages(rows, data.test.y),
            "sweep_b": {"members": sweep_b, "test": accuracy(mean, data.test.y)},
            "inference": inference_ms(models, data.test.x),
        }
        del models
    print_table(
        "averages of the base and flipped-base models: test gain over their members' mean",
        ["data", "models", "count", "better", "min", "mean", "max"],
        [
            [r["data"], size, a["count"], a["better"], a["min_gain"], a["mean_gain"], a["max_gain"]]
            for r in results.values()
            for size, a in r["averages"].items()
        ],
    )
    for r in results.values():
        singles = [m["test"] for m in r["models"].values()]
        print(
            f"{r['data']}: single models test {min(singles):.4f}-{max(singles):.4f}; sweep (b)'s "
            f"4 averaged {r['sweep_b']['test']:.4f}; inference {r['inference']['single_ms']:.2f} "
            f"ms/image alone, {r['inference']['average_of_5_ms']:.2f} averaged over 5"
        )
    write_result("ensemble", {"split_seed": SPLIT_SEED, "sets": results}, args.quick)


if __name__ == "__main__":
    main()
