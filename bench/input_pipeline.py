"""Benchmark: training throughput from an image folder vs the same images as in-memory arrays.

    python bench/input_pipeline.py            # sign-language-digits, 64 px, 6 timed epochs per side
    python bench/input_pipeline.py --quick    # 80 images per class at 32 px, 3 per side (~1 min)

Both sides train the project's CNN, one model per cache mode, with the same batch size on the
same training images:
- arrays: `model.fit(x, y)` on float32 NumPy arrays held in memory (Keras's own array input);
- folder: `model.fit(dataset(data, "train", ...))`, the tf.data pipeline that trials use,
  for each `data.cache` mode asked for.
After one warm-up epoch per side (graph tracing; for cache=file, the page cache), timed epochs
alternate between the sides (arrays first, then folder first, ...) so that both see the same load
on a shared machine; the figure is the median over rounds of folder images/s / arrays images/s,
by wall clock (what a user waits for) and by CPU seconds of this process (steadier when other
work shares the machine).
Also reported: the pipeline alone (iterating one epoch of batches without a model), folder vs
`tf.data` over the arrays. Target: folder / arrays >= 0.95 in training with cache=memory and
cache=file (cache=none decodes every epoch and is reported for information).
Writes bench/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from experiments.data.load import load_data  # noqa: E402
from experiments.data.pipeline import dataset  # noqa: E402
from experiments.data.splits import ImageData  # noqa: E402
from experiments.models.build import build_model  # noqa: E402
from experiments.training.trial import fresh_session  # noqa: E402

TARGET = 0.95
warnings.filterwarnings("ignore", category=UserWarning)
SHARED = Path(os.environ.get("SWEEPLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def epoch_seconds(model: keras.Model, source, batch_size: int) -> tuple[float, float]:
    """Seconds of one training epoch over `source` (arrays or a dataset), fit overhead excluded."""
    timer = EpochTimer()
    if isinstance(source, tuple):
        x, y = source
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    else:
        model.fit(source, epochs=1, verbose=0, callbacks=[timer])
    return timer.seconds


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None) -> None:
        wall, cpu = self._start
        self.seconds = (time.perf_counter() - wall, time.process_time() - cpu)


def iterate_seconds(ds: tf.data.Dataset) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _batch in ds:
        pass
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(run_arrays, run_folder, rounds: int) -> tuple[list, list]:
    """One warm-up each, then `rounds` rounds alternating which side goes first.

    Alternating epoch by epoch on one model keeps both sides under the same machine load (this
    CPU is shared), so the ratio is fair even when absolute rates drift.
    """
    run_arrays(), run_folder()  # the first epoch of each: tracing, caches filled
    arrays, folder = [], []
    for i in range(rounds):
        if i % 2:
            folder.append(run_folder())
            arrays.append(run_arrays())
        else:
            arrays.append(run_arrays())
            folder.append(run_folder())
    return arrays, folder


def measure(data: ImageData, batch_size: int, rounds: int) -> dict:
    """Training and pipeline-only rates, folder vs the same images as in-memory arrays."""
    x = data.sample(len(data.train), "train")  # the same images as float32 arrays
    y = data.train.y
    arrays_ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    fresh_session(0)
    model_cfg = OmegaConf.load(ROOT / "conf/model/cnn.yaml")
    model = build_model(model_cfg, data.image_shape, data.num_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    folder_ds = dataset(data, "train", batch_size, training=True, seed=0)
    t_arrays, t_folder = alternate(
        lambda: epoch_seconds(model, (x, y), batch_size),
        lambda: epoch_seconds(model, folder_ds, batch_size),
        rounds,
    )
    i_arrays, i_folder = alternate(
        lambda: iterate_seconds(arrays_ds), lambda: iterate_seconds(folder_ds), rounds
    )
    return {
        "train": summary(len(y), t_arrays, t_folder),
        "pipeline_only": summary(len(y), i_arrays, i_folder),
    }


def summary(n: int, arrays: list[tuple[float, float]], folder: list[tuple[float, float]]) -> dict:
    """Rates and folder/arrays ratios by wall clock and by CPU seconds of this process.

    The CPU-time ratio (images per CPU-second) is the steadier figure on a machine shared with
    other work; the wall-clock ratio is what a user waits for.
    """
    out: dict = {}
    for index, clock in ((0, "wall"), (1, "cpu")):
        ratios = [a[index] / f[index] for a, f in zip(arrays, folder, strict=True)]
        out[clock] = {
            "arrays_images_per_s": round(n * len(arrays) / sum(a[index] for a in arrays), 1),
            "folder_images_per_s": round(n * len(folder) / sum(f[index] for f in folder), 1),
            "ratio_median": round(statistics.median(ratios), 4),
            "ratio_per_round": [round(r, 3) for r in ratios],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subsample at 32 px, 3 rounds")
    parser.add_argument("--path", default=str(SHARED / "sign-language-digits"))
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="timed epochs per side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--caches", default="memory,file,none")
    parser.add_argument("--out", default=str(ROOT / "bench/results/input_pipeline.json"))
    args = parser.parse_args()
    size = args.image_size or (32 if args.quick else 64)
    per_class = args.max_per_class or (80 if args.quick else None)
    rounds = args.rounds or (3 if args.quick else 6)
    if not Path(args.path).is_dir():
        sys.exit(f"bench: {args.path} is not a folder of class subfolders (pass --path)")

    results: dict = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for cache in args.caches.split(","):
            cfg = OmegaConf.load(ROOT / "conf/data/directory.yaml")
            cfg.merge_with(
                {
                    "path": args.path,
                    "image_size": size,
                    "max_per_class": per_class,
                    "cache": cache,
                    "cache_dir": cache_dir,
                }
            )
            start = time.perf_counter()
            data = load_data(cfg, 42)
            load_seconds = time.perf_counter() - start
            results[cache] = measure(data, args.batch_size, rounds)
            results[cache]["load_seconds"] = round(load_seconds, 2)
            train, alone = results[cache]["train"], results[cache]["pipeline_only"]
            print(
                f"cache={cache:<6} training folder/arrays: wall {train['wall']['ratio_median']:.3f} "
                f"({train['wall']['folder_images_per_s']:.0f} vs "
                f"{train['wall']['arrays_images_per_s']:.0f} images/s), "
                f"cpu {train['cpu']['ratio_median']:.3f}   pipeline alone: wall "
                f"{alone['wall']['ratio_median']:.3f} ({alone['wall']['folder_images_per_s']:.0f} vs "
                f"{alone['wall']['arrays_images_per_s']:.0f} images/s)   load {load_seconds:.1f}s",
                flush=True,
            )
    report = {
        "benchmark": "input_pipeline",
        "command": "python bench/input_pipeline.py" + (" --quick" if args.quick else ""),
        "path": args.path,
        "train_images": len(data.train),
        "image_shape": list(data.image_shape),
        "timed_epochs_per_side": rounds,
        "batch_size": args.batch_size,
        "target": TARGET,
        "results": results,
        "meets_target": {
            cache: r["train"]["wall"]["ratio_median"] >= TARGET
            for cache, r in results.items()
            if cache in ("memory", "file")
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
