"""Resident memory trial after trial: does a long sweep leak? (sweep + worker processes)

Runs a small real sweep in this process (8x8 digits, 1 epoch, tiny CNNs, models logged to
MLflow as in a normal sweep) and reads the RSS each trial logged (metric `rss_mb`, taken when the
trial's training ends). Prints RSS after trial 5 and after the last trial and writes
bench/results/memory.json.

python bench/memory.py               # 50 trials (a few minutes on 2 cores)
python bench/memory.py --quick       # 12 trials
python bench/memory.py --trials 100 --no-models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.quiet import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from hydra import compose, initialize_config_dir  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from search.sweep import sweep  # noqa: E402

SMALL = [
    "data.image_size=8",
    "train.epochs=1",
    "train.batch_size=64",
    "search.pruner=none",
    "search.sampler=random",
    "search.max_consecutive_failures=null",
]


def per_trial_rss(tracking_uri: str, experiment: str) -> list[float]:
    """RSS (MiB) logged by each complete trial, in trial order."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    trials = [r for r in runs if r.data.tags.get("sweeplab.kind") == "trial"]
    trials.sort(key=lambda r: int(r.data.tags["sweeplab.trial_number"]))
    # Trials train in worker processes (issue 13): rss_mb is the worker's, sweep_rss_mb the
    # sweep process's; their sum is what the sweep holds in all.
    return [
        r.data.metrics["rss_mb"] + r.data.metrics.get("sweep_rss_mb", 0.0)
        for r in trials
        if "rss_mb" in r.data.metrics
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="12 trials")
    parser.add_argument("--no-models", action="store_true", help="do not log models to MLflow")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    args = parser.parse_args()
    trials = 12 if args.quick else args.trials
    if trials < 6:
        parser.error("--trials must be 6 or more (RSS after trial 5 is the baseline)")

    with tempfile.TemporaryDirectory(prefix="sweeplab-memory-") as tmp:
        overrides = [
            *SMALL,
            f"search.n_trials={trials}",
            f"tracking.log_models={str(not args.no_models).lower()}",
            f"output_dir={tmp}",
        ]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        started = time.perf_counter()
        sweep(cfg)
        seconds = time.perf_counter() - started
        rss = per_trial_rss(f"sqlite:///{tmp}/mlflow.db", str(cfg.tracking.experiment_name))

    after5, last = rss[4], rss[-1]
    tail = rss[4:]
    n = len(tail)
    mean_x, mean_y = (n - 1) / 2, sum(tail) / n
    slope = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(tail)) / sum(
        (i - mean_x) ** 2 for i in range(n)
    )
    result = {
        "trials": len(rss),
        "rss_mb_after_trial_5": round(after5, 1),
        f"rss_mb_after_trial_{len(rss)}": round(last, 1),
        "rss_mb_after_last_trial": round(last, 1),
        "growth_mb_from_trial_5": round(last - after5, 1),
        "slope_mb_per_trial_from_trial_5": round(slope, 3),
        "peak_mb": round(max(rss), 1),
        "log_models": not args.no_models,
        "seconds": round(seconds, 1),
        "per_trial_rss_mb": [round(v, 1) for v in rss],
        "command": "python bench/memory.py " + " ".join(sys.argv[1:]),
        "settings": SMALL,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"RSS after trial 5: {after5:.1f} MiB; after trial {len(rss)}: {last:.1f} MiB "
        f"(growth {last - after5:+.1f} MiB, slope {slope:+.3f} MiB/trial); {seconds:.0f}s"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
