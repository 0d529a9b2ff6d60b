"""`make bench`: run every benchmark script in order; skip, with the reason, the ones not here.

    python bench/run_all.py [--quick] [NAME ...]      # NAMEs: only those benchmarks

Each benchmark is `bench/NAME.py [--quick]`, prints its own table and writes
bench/results/NAME.json. A script that is missing (its feature not merged yet) is skipped with a
printed reason, not a failure; a script that fails makes this exit non-zero after the others ran.
A missed target is a figure, not a failure.
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import ROOT, parse_args

# (script, what it measures, the issue that brings it)
BENCHMARKS = (
    ("overhead", "wall time vs bare Keras, Keras Tuner, Optuna + MLflow by hand", "#8"),
    ("input_pipeline", "images/s, folder pipeline vs in-memory arrays", "#3"),
    ("search_efficiency", "best val accuracy vs wall time per search method", "#8"),
    ("memory", "resident memory across 50 short trials (sweep + workers)", "#7, #13"),
    ("workers", "trials/hour with 2 workers vs 1; store round trips a trial", "#13"),
    ("memory_scale", "peak memory of a transfer sweep at 1k-10k images, sweep vs workers", "#28"),
    ("chaos", "kill -9 of a worker or the sweep at random moments, resuming", "#13"),
    ("feature_cache", "transfer trial at 224 px, frozen-feature cache on vs off", "#12"),
    (
        "screen_rank",
        "does a head's cached phase-1 score rank its two-phase one (search.staged)",
        "#25",
    ),
    ("transfer_vs_recipe", "test accuracy, default transfer sweep vs the seed's recipe", "#12"),
    ("anytime", "test accuracy of the transfer sweep at 1x, 3x, 10x the recipe's time", "#25"),
    ("transfer_augmentation", "transfer sweep's augmentation arms at one budget", "#12"),
    ("retrain", "final.retrain: base transfer config trained on train vs train + val", "#12"),
    ("ensemble", "final.ensemble: averages of transfer models vs their members, test", "#12"),
    ("exports", "every export measured from its file: accuracy, size, ms; int8 vs float32", "#26"),
    ("distil", "one student of a 3-model ensemble: test accuracy and latency vs one model", "#26"),
    ("int8_modes", "int8 TFLite vs float32: selective, calibration size, per-tensor, 16x8", "#26"),
)


def main() -> None:
    known = [name for name, _, _ in BENCHMARKS]
    args = parse_args(
        __doc__.splitlines()[0],
        [("names", {"nargs": "*", "choices": [[], *known], "help": "only these benchmarks"})],
    )
    outcomes: list[tuple[str, str, float]] = []
    for name, what, issue in BENCHMARKS:
        if args.names and name not in args.names:
            continue
        script = ROOT / "bench" / f"{name}.py"
        print(f"\n=== {name}: {what}", flush=True)
        if not script.exists():
            print(
                f"skip {name}: bench/{name}.py is not in this checkout (comes with issue {issue})"
            )
            outcomes.append((name, "skipped (script not here)", 0.0))
            continue
        started = time.perf_counter()
        code = subprocess.call(
            [sys.executable, str(script), *(["--quick"] if args.quick else [])], cwd=ROOT
        )
        seconds = time.perf_counter() - started
        outcomes.append((name, "ok" if code == 0 else f"FAILED (exit {code})", seconds))
    print("\n=== make bench" + (" QUICK=1" if args.quick else ""))
    for name, outcome, seconds in outcomes:
        print(f"{name:<20} {outcome:<28} {seconds:7.0f}s")
    print("results: bench/results/*.json; figures and how to read them: docs/benchmarks.md")
    sys.exit(1 if any(o.startswith("FAILED") for _, o, _ in outcomes) else 0)


if __name__ == "__main__":
    main()
