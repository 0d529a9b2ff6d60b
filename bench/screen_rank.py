"""Does a head's cached phase-1 validation accuracy predict its two-phase result?

    python bench/screen_rank.py [--quick] [--sets sign cifar] [--configs 8]

The staged search (search.staged) ranks head configurations (learning rate, weight decay, label
smoothing, pooling, dense units, dropout) on cached frozen features, phase 1 only, and carries
the best few into two-phase trials. That pays only if the cached ranking predicts the two-phase
ranking. For each set, N head configurations drawn at random (seeded) from conf/space/transfer.yaml
are trained twice on the same split: head-only (train.epochs = head_epochs = the base's 6, no
augmentation: cached throughout) and two-phase (the base's fine-tuning: 10 epochs, 20 layers
open). The table shows both validation accuracies, the seconds of each, and Spearman's rank
correlation. Results go to bench/results/screen_rank.json.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from _common import parse_args, print_table, write_result
from transfer_vs_recipe import QUICK_PER_CLASS, SETS, common_overrides, compose, require_sets

HEAD_KEYS = (
    "optimizer.learning_rate",
    "optimizer.weight_decay",
    "train.label_smoothing",
    "model.pooling",
    "model.dense_units",
    "model.dropout",
)


def draw(rng: random.Random) -> dict:
    """One head configuration from the default space's head knobs (log-uniform where log)."""
    return {
        "optimizer.learning_rate": round(10 ** rng.uniform(-3.52, -2.0), 6),
        "optimizer.weight_decay": round(10 ** rng.uniform(-5.0, -2.0), 7),
        "train.label_smoothing": rng.choice([0.0, 0.05, 0.1, 0.15, 0.2]),
        "model.pooling": rng.choice(["avg", "max"]),
        "model.dense_units": rng.choice([0, 256]),
        "model.dropout": rng.choice([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
    }


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def train_pair(overrides: list[str], params: dict) -> dict:
    """One head configuration trained head-only (cached) and two-phase, in this process."""
    from omegaconf import OmegaConf

    from experiments.data.load import load_data
    from experiments.quiet import quiet_tensorflow
    from experiments.training.trial import run_trial
    from search.sweep import prepare

    quiet_tensorflow()
    cfg = prepare(compose(overrides))
    data = load_data(cfg.data, int(cfg.seed))
    params = params or {k: OmegaConf.select(cfg, k) for k in HEAD_KEYS}  # {}: the base's
    for key, value in params.items():
        OmegaConf.update(cfg, key, value)
    head = cfg.copy()
    OmegaConf.update(head, "train.epochs", int(cfg.model.fine_tune.head_epochs))
    cached = run_trial(head, data)
    full = run_trial(cfg, data)
    return {"params": params, "head_val": cached.metrics["val_accuracy"],
            "head_s": round(cached.seconds, 1), "two_phase_val": full.metrics["val_accuracy"],
            "two_phase_s": round(full.seconds, 1)}  # fmt: skip


def one_set(name: str, root: Path, quick: bool, n: int) -> dict:
    """N configurations of set `name`, each pair in a fresh process (TensorFlow keeps memory
    trial after trial: 16 pairs in one process grew to 17.8 GB); the cache on disk is shared."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    per_class = QUICK_PER_CLASS if quick else SETS[name][1]
    common = common_overrides(name, root, per_class)
    size = ["data.image_size=96", "model.input_size=96"] if quick else []
    overrides = ["sweep=transfer", *common, *size, f"output_dir={root / name}"]
    rng = random.Random(7)
    rows = []
    for i in range(n):
        params = draw(rng) if i else {}
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(train_pair, overrides, params).result())
        print(f"  {name} #{i}: head {rows[-1]['head_val']:.4f} ({rows[-1]['head_s']}s), "
              f"two-phase {rows[-1]['two_phase_val']:.4f} ({rows[-1]['two_phase_s']}s) "
              f"{rows[-1]['params']}", flush=True)  # fmt: skip
    rho = spearman([r["head_val"] for r in rows], [r["two_phase_val"] for r in rows])
    return {"rows": rows, "spearman": rho, "per_class": per_class}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": list(SETS)}),
            ("--configs", {"type": int, "default": 8}),
        ],
    )
    require_sets(args.sets, "screen_rank")
    results = {}
    with tempfile.TemporaryDirectory(prefix="screen-rank-") as tmp:
        for name in args.sets:
            results[name] = one_set(name, Path(tmp), args.quick, args.configs)
            write_result("screen_rank", results, args.quick)
    rows = [[name, i, r["head_val"], r["head_s"], r["two_phase_val"], r["two_phase_s"]]
            for name, res in results.items() for i, r in enumerate(res["rows"])]  # fmt: skip
    print_table("cached head-only vs two-phase validation accuracy",
                ["set", "config", "head_val", "head_s", "two_phase_val", "two_phase_s"], rows)  # fmt: skip
    for name, res in results.items():
        print(f"{name}: Spearman rank correlation {res['spearman']:.2f} over {len(res['rows'])}")


if __name__ == "__main__":
    main()
