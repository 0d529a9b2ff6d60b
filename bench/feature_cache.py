"""Benchmark: a default transfer trial at 224 px with and without the frozen-feature cache.

    python bench/feature_cache.py            # sign-language-digits, all 2,062 photos
    python bench/feature_cache.py --quick    # 15 photos per digit at 96 px (~1 min)
    python bench/feature_cache.py --per-class 100 --unfreeze-layers 0   # head-only fine-tuning
    python bench/feature_cache.py --preset light  # the space's augmented trials (K cached copies)

`+sweep=transfer` as documented (MobileNet alpha 0.25, ImageNet weights from $KERAS_HOME or
../shared/data/keras-weights, 10 epochs: 6 head-only, then 4 with the top 20 layers open;
augmentation preset none, as trial 0: both phases cached; `--preset light`: the cached runs train
phase 1 on 4 cached augmented copies and run phase 2 uncached), with
`data.image_size=224 model.input_size=224`, run three times on the same split and seed:
uncached (`model.feature_cache.enabled=false`), cached with an empty cache (cold: builds the
entries) and cached again (warm: a later trial of the same sweep, a resumed run or a worker).
Figures: whole-trial wall time, uncached / cached warm (target >= 3x), and the second phase-1
epoch (the first one also traces the graph), uncached / cached (target >= 10x). The validation
accuracy of each run is printed too: the cached runs train the same model (tests check equality).
Writes bench/results/feature_cache.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA, keras_home, parse_args, print_table, verdict, write_result

from experiments.quiet import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from experiments.data.load import load_data  # noqa: E402
from experiments.training.trial import run_trial  # noqa: E402

TRIAL_TARGET, EPOCH_TARGET = 3.0, 10.0
ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--per-class", {"type": int, "default": None, "help": "photos per digit (all)"}),
            (
                "--unfreeze-layers",
                {"type": int, "default": None, "help": "model.fine_tune.unfreeze_layers (20)"},
            ),
            (
                "--preset",
                {"default": None, "help": "data.augmentation.preset (the overlay's: none)"},
            ),
        ],
    )
    per_class = args.per_class or (15 if args.quick else None)
    size = 96 if args.quick else 224  # 96 is no native size: it loads the 224 file
    with tempfile.TemporaryDirectory(prefix="sweeplab-feature-cache-") as name:
        tmp = Path(name)
        keras_home(tmp)
        base = [
            "sweep=transfer",  # the root config's `sweep: null` default takes no `+sweep=`
            "data=directory",
            f"data.path={SHARED_DATA / 'sign-language-digits'}",
            f"data.max_per_class={'null' if per_class is None else per_class}",
            f"data.image_size={size}",
            f"model.input_size={size}",
            f"output_dir={tmp / 'runs'}",
        ]
        if args.unfreeze_layers is not None:
            base.append(f"model.fine_tune.unfreeze_layers={args.unfreeze_layers}")
        if args.preset is not None:
            base.append(f"data.augmentation.preset={args.preset}")
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            configs = {
                "uncached": compose(
                    "config", overrides=[*base, "model.feature_cache.enabled=false"]
                ),
                "cached_cold": compose("config", overrides=base),
                "cached_warm": compose("config", overrides=base),
            }
        data = load_data(configs["uncached"].data, int(configs["uncached"].seed))
        runs = {}
        for label, cfg in configs.items():
            timer = EpochTimer()
            started = time.perf_counter()
            result = run_trial(cfg, data, [timer])
            report = result.feature_cache
            runs[label] = {
                "trial_s": time.perf_counter() - started,
                "epoch_s": timer.seconds,
                "val_accuracy": result.metrics["val_accuracy"],
                "cache": report.reason,
                "hits": report.hits,
                "misses": report.misses,
                "build_s": report.build_seconds,
            }
            print(f"{label}: {runs[label]['trial_s']:.1f}s, {report.reason}", flush=True)
    head_epoch = int(configs["uncached"].model.fine_tune.head_epochs) - 1  # the last phase-1 epoch
    trial_ratio = runs["uncached"]["trial_s"] / runs["cached_warm"]["trial_s"]
    cold_ratio = runs["uncached"]["trial_s"] / runs["cached_cold"]["trial_s"]
    epoch_ratio = (
        runs["uncached"]["epoch_s"][head_epoch] / runs["cached_warm"]["epoch_s"][head_epoch]
    )
    print_table(
        f"sign-language-digits, {per_class or 'all'} per digit ({len(data.train)} train / {len(data.val)} "
        f"val), {size} px, default transfer trial",
        ["run", "trial s", f"phase-1 epoch {head_epoch} s", "val acc", "cache", "hits", "misses"],
        [
            [
                k,
                r["trial_s"],
                r["epoch_s"][head_epoch],
                r["val_accuracy"],
                r["cache"],
                r["hits"],
                r["misses"],
            ]
            for k, r in runs.items()
        ],
    )
    print_table(
        "Speed-up (uncached / cached)",
        ["figure", "ratio", "target", "verdict"],
        [
            ["whole trial, warm cache", trial_ratio, f">= {TRIAL_TARGET:g}x", verdict(trial_ratio >= TRIAL_TARGET)],
            ["whole trial, cold cache", cold_ratio, "-", "n/a"],
            ["phase-1 epoch", epoch_ratio, f">= {EPOCH_TARGET:g}x", verdict(epoch_ratio >= EPOCH_TARGET)],
        ],
    )  # fmt: skip
    write_result(
        "feature_cache",
        {
            "data": {
                "set": "sign-language-digits",
                "per_class": per_class,
                "train": len(data.train),
                "val": len(data.val),
                "image_size": size,
            },
            "config": "+sweep=transfer data=directory data.image_size=S model.input_size=S",
            "preset": str(configs["uncached"].data.augmentation.preset),
            "unfreeze_layers": int(configs["uncached"].model.fine_tune.unfreeze_layers),
            "runs": runs,
            "trial_speedup_warm": trial_ratio,
            "trial_speedup_cold": cold_ratio,
            "phase1_epoch_speedup": epoch_ratio,
            "targets": {"trial": TRIAL_TARGET, "phase1_epoch": EPOCH_TARGET},
            "met": {
                "trial": trial_ratio >= TRIAL_TARGET,
                "phase1_epoch": epoch_ratio >= EPOCH_TARGET,
            },
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
