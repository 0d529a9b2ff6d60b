"""Every export of a MobileNet (alpha 0.25) transfer model, measured from its own file: accuracy,
size and milliseconds per image at batch 1, float32 vs float16 vs int8 TFLite (and Keras, SavedModel).

    python bench/exports.py [--quick] [--timed N] [--seed S] [--sets sign cifar]

On each set (sign-language-digits, every photo: ~1,440 training and ~310 test images; cifar10-test,
300 per class as bench/anytime.py: ~2,100 and 450) through `data=directory` at 224 px, the model's
input size, one trial of `sweep=transfer` (its defaults: 6 head epochs on cached activations, then
4 with the top 20 backbone layers unfrozen), the ImageNet weights copied from
../shared/data/keras-weights into a temporary KERAS_HOME. `export_model` writes every format, int8
calibrated on (the first 200) training images, its worst layers kept float32 (selective, round
12); `measure_exports` scores each file on the test split and times N single-image calls (median,
after 3 warm-up calls).

Targets (issue 26): int8 TFLite within 1 point of float32 TFLite's test accuracy, at most a third
of its size. Also printed: where the bytes of the float32 and int8 files go (`size_breakdown`,
read from the flatbuffer), and a side row, not an export format: full-integer int8 (every
layer) with one scale per weight tensor instead of per output channel, to see what the per-channel
parameters buy. (Round 10's side row, uint8 input and output, gave the same size and accuracy
and no faster calls: docs/exports-measured.md.)

--quick: 20 images per class, 96 px, 3 epochs: minutes, not figures.
Results go to bench/results/exports.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, SHARED_DATA, parse_args, print_table, verdict, write_result
from transfer_vs_recipe import SETS

WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
QUICK = ["data.max_per_class=20", "data.image_size=96", "model.input_size=96", "train.epochs=3",
         "model.fine_tune.head_epochs=2"]  # fmt: skip


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from search.cli.overrides import normalize_overrides

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=normalize_overrides(overrides))


def size_breakdown(path: Path) -> dict[str, int]:
    """Where a .tflite file's bytes go, read from its flatbuffer: constant tensors by type (the
    weights; int32: int8 biases), the per-channel quantization parameters (a float32 scale and an
    int64 zero point per channel of every quantized weight and bias), tensor names, and the rest
    (operators, shapes, the signature, metadata)."""
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = path.read_bytes()
    model = schema.Model.GetRootAsModel(buffer, 0)
    graph = model.Subgraphs(0)
    types = {0: "float32", 1: "float16", 2: "int32", 9: "int8"}
    parts: dict[str, int] = {}
    counted: set[int] = set()  # the converter shares one buffer between equal constants
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        data = model.Buffers(tensor.Buffer())
        size = data.DataLength() if data is not None and tensor.Buffer() not in counted else 0
        counted.add(tensor.Buffer())
        if size:
            key = f"constants {types.get(tensor.Type(), str(tensor.Type()))}"
            parts[key] = parts.get(key, 0) + size
        parts["tensor names"] = parts.get("tensor names", 0) + len(tensor.Name() or b"")
        quantization = tensor.Quantization()
        if quantization is not None:
            parts["quantization scales (float32)"] = (
                parts.get("quantization scales (float32)", 0) + 4 * quantization.ScaleLength()
            )
            parts["quantization zero points (int64)"] = (
                parts.get("quantization zero points (int64)", 0)
                + 8 * quantization.ZeroPointLength()
            )
    parts["graph and the rest"] = len(buffer) - sum(parts.values())
    parts["file"] = len(buffer)
    return parts


def random_pixels():
    """20 images of uniform random pixels: enough to calibrate a conversion measured for size."""
    for image in np.random.default_rng(0).uniform(0, 255, (20, 224, 224, 3)).astype("float32"):
        yield [image[None]]


def size_by_width(alphas: tuple[float, ...] = (0.25, 0.5, 1.0)) -> list[dict[str, Any]]:
    """int8 / float32 TFLite size of MobileNet at each width `alpha` (224 px, a 10-class head,
    untrained and calibrated on random pixels: sizes do not depend on the values): how much of
    the int8 file's excess over a quarter is a small model's fixed cost (graph, per-channel
    parameters)."""
    import keras
    import tensorflow as tf

    rows = []
    for alpha in alphas:
        backbone = keras.applications.MobileNet(
            input_shape=(224, 224, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
        )
        images = keras.Input((224, 224, 3))
        scaled = keras.layers.Rescaling(1 / 127.5, -1)(images)
        model = keras.Model(images, keras.layers.Dense(10, activation="softmax")(backbone(scaled)))
        with tempfile.TemporaryDirectory() as tmp:
            model.export(f"{tmp}/saved", format="tf_saved_model", verbose=False)
            sizes = {}
            for fmt in ("float32", "int8"):
                converter = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved")
                if fmt == "int8":
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    converter.representative_dataset = random_pixels
                Path(f"{tmp}/{fmt}.tflite").write_bytes(converter.convert())
                sizes[fmt] = size_breakdown(Path(f"{tmp}/{fmt}.tflite"))
        rows.append({"alpha": alpha, "params": model.count_params(), "float32": sizes["float32"],
                     "int8": sizes["int8"],
                     "ratio": round(sizes["int8"]["file"] / sizes["float32"]["file"], 3)})  # fmt: skip
        print(f"  MobileNet alpha {alpha}: int8 / float32 {rows[-1]['ratio']}", flush=True)
    return rows


def per_tensor_row(
    saved_model: Path, out: Path, calibration: np.ndarray, x: np.ndarray, y: np.ndarray, timed: int
) -> dict[str, Any]:
    """Full-integer int8 with one scale per weight tensor instead of one per output channel
    (the converter's `_experimental_disable_per_channel`): the per-channel parameters are a fifth
    of the int8 file, and this row is what dropping them costs in accuracy."""
    import tensorflow as tf

    from experiments.serving.measure import measure_export

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    images = calibration.astype("float32")
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter._experimental_disable_per_channel = True
    out.write_bytes(converter.convert())
    measured = measure_export(out, "tflite_int8", x, y, timed=timed)
    return {
        "format": "tflite_int8 (per-tensor)",
        "accuracy": round(measured.accuracy, 4),
        "size_bytes": measured.size_bytes,
        "ms_per_image": round(measured.ms_per_image, 3),
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            (
                "--timed",
                {"type": int, "default": 50, "help": "single-image calls timed per export"},
            ),
            ("--seed", {"type": int, "default": 42, "help": "the split's and the training's seed"}),
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": ["sign", "cifar"]}),
        ],
    )
    weights = SHARED_DATA / "keras-weights" / WEIGHTS_FILE
    missing = [SETS[s][0] for s in args.sets if not (SHARED_DATA / SETS[s][0]).exists()]
    if missing or not weights.exists():
        raise SystemExit(f"exports: {SHARED_DATA} lacks {missing or WEIGHTS_FILE}")
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    results: dict[str, Any] = {}
    for name in args.sets:  # written after each set: a run cut short keeps what it measured
        results[name] = one_set(name, args, weights)
        write_result("exports", {"seed": args.seed, "sets": results}, args.quick)
    widths = size_by_width()
    write_result(
        "exports", {"seed": args.seed, "sets": results, "size_by_width": widths}, args.quick
    )


def one_set(name: str, args: Any, weights: Path) -> dict[str, Any]:
    """One trial on set `name`, every export measured, the int8 file's bytes broken down."""
    folder, per_class = SETS[name]
    with tempfile.TemporaryDirectory(prefix="exports-") as tmp:
        root = Path(tmp)
        (root / "keras_home" / "models").mkdir(parents=True)
        shutil.copy(weights, root / "keras_home" / "models" / WEIGHTS_FILE)
        os.environ["KERAS_HOME"] = str(root / "keras_home")
        from experiments.data.load import load_data
        from experiments.serving.export import (
            FORMATS,
            export_model,
            export_saved_model,
            serving_model,
        )
        from experiments.serving.measure import human_size, measure_exports, measures_table
        from experiments.training.trial import run_trial

        cfg = compose(
            ["sweep=transfer", "data=directory", f"data.path={SHARED_DATA / folder}",
             f"keras_home={root / 'keras_home'}", f"output_dir={root / 'runs'}",
             f"seed={args.seed}",
             *([f"data.max_per_class={per_class}"] if per_class and not args.quick else []),
             *(QUICK if args.quick else [])]
        )  # fmt: skip
        started = time.perf_counter()
        data = load_data(cfg.data, int(cfg.seed))
        print(f"{folder}: {len(data.train)} train, {len(data.test)} test images at "
              f"{data.image_shape}", flush=True)  # fmt: skip
        trial = run_trial(cfg, data)
        train_s = time.perf_counter() - started
        print(f"trained in {train_s:.0f}s (val {trial.metrics})", flush=True)
        started = time.perf_counter()
        calibration = data.sample(200, "train")
        paths = export_model(trial.model, list(FORMATS), root / "export", data.class_names,
                             calibration)  # fmt: skip
        export_s = time.perf_counter() - started
        print(f"exported {', '.join(paths)} in {export_s:.0f}s", flush=True)
        x, y = np.asarray(data.test.x), data.test.y
        rows = measures_table(measure_exports(paths, x, y, timed=args.timed))
        breakdown = {f: size_breakdown(paths[f]) for f in ("tflite", "tflite_int8")}
        with tempfile.TemporaryDirectory() as scratch:
            saved = export_saved_model(serving_model(trial.model), Path(scratch) / "saved_model")
            side = per_tensor_row(saved, root / "per_tensor.tflite", calibration, x, y,
                                  args.timed)  # fmt: skip
            breakdown["int8 per-tensor"] = size_breakdown(root / "per_tensor.tflite")
    by_format = {r["format"]: r for r in rows}
    f32, i8 = by_format["tflite"], by_format["tflite_int8"]
    side["size"] = human_size(side["size_bytes"])
    side["size_ratio"] = round(side["size_bytes"] / f32["size_bytes"], 3)
    side["accuracy_delta"] = round(side["accuracy"] - f32["accuracy"], 4)
    targets = {
        "int8_within_1_point": f32["accuracy"] - i8["accuracy"] <= 0.01,
        "int8_at_most_a_third_of_the_size": i8["size_bytes"] <= f32["size_bytes"] / 3,
    }
    print_table(
        f"each export of MobileNet 0.25 on {len(y)} {folder} test images at "
        f"{x.shape[1]}x{x.shape[2]} (ms: median of {args.timed} single-image calls)",
        ["format", "test_acc", "size", "size_bytes", "vs_tflite", "acc_delta", "ms/image"],
        [[r["format"], r["accuracy"], r["size"], r["size_bytes"], r["size_ratio"],
          r["accuracy_delta"], r["ms_per_image"]] for r in [*rows, side]],
    )  # fmt: skip
    parts = sorted({k for b in breakdown.values() for k in b})
    print_table(
        "where the bytes go (from each file's flatbuffer)",
        ["part", *breakdown],
        [[part, *(b.get(part, 0) for b in breakdown.values())] for part in parts],
    )
    print(
        f"int8 / float32 size: {i8['size_ratio']:.3f}; accuracy {i8['accuracy_delta']:+.4f}. "
        f"within 1 point: {verdict(targets['int8_within_1_point'])}; at most a third of the "
        f"size: {verdict(targets['int8_at_most_a_third_of_the_size'])}"
    )
    return {
        "data": folder,
        "per_class": per_class,
        "train_images": len(data.train),
        "test_images": len(y),
        "image_size": list(x.shape[1:]),
        "timed_calls": args.timed,
        "train_s": round(train_s, 1),
        "export_s": round(export_s, 1),
        "val_metrics": trial.metrics,
        "exports": rows,
        "int8_per_tensor": side,
        "size_breakdown": breakdown,
        "targets": targets,
    }


if __name__ == "__main__":
    main()
