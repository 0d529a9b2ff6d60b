"""Every export of a MobileNet (alpha 0.25) transfer model, measured from its own file: accuracy,
size and milliseconds per image at batch 1, float32 vs float16 vs int8 TFLite (and Keras, SavedModel).

    python bench/exports.py [--quick] [--timed N] [--seed S]

sign-language-digits through `data=directory` at 224 px, the model's input size (the seeded split:
~1,440 training images, ~310 test images), one trial of `sweep=transfer` (its defaults: 6 head
epochs on cached activations, then 4 with the top 20 backbone layers unfrozen), the ImageNet weights
copied from ../shared/data/keras-weights into a temporary KERAS_HOME. `export_model` writes every
format, int8 calibrated on (the first 200) training images; `measure_exports` scores each file on
the test split and times N single-image calls (median, after 3 warm-up calls).

Targets (issue 26): int8 TFLite within 1 point of float32 TFLite's test accuracy, at most a third
of its size. A side row, not an export format: the same int8 conversion with uint8 input and
output (pixels in as they are decoded; the float input/output of `tflite_int8` costs a quantize
and a dequantize op), timed with LiteRT directly, to see whether integer input/output pays.

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
from _common import ROOT, SHARED_DATA, median, parse_args, print_table, verdict, write_result

WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
DATA = "sign-language-digits"
QUICK = ["data.max_per_class=20", "data.image_size=96", "model.input_size=96", "train.epochs=3",
         "model.fine_tune.head_epochs=2"]  # fmt: skip


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from search.cli.overrides import normalize_overrides

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=normalize_overrides(overrides))


def uint8_io_row(saved_model: Path, out: Path, calibration: np.ndarray, x: np.ndarray,
                 y: np.ndarray, timed: int) -> dict[str, Any]:  # fmt: skip
    """The int8 conversion with uint8 input and output, run by LiteRT directly (the predictors
    take float pixels, so this file is measured here, not through `measure_export`)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    images = calibration.astype("float32")  # the SavedModel's input: float pixels
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    out.write_bytes(converter.convert())
    interpreter = Interpreter(model_path=str(out))
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], [1, *x.shape[1:]])
    interpreter.allocate_tensors()
    target = interpreter.get_output_details()[0]["index"]
    pixels = np.clip(np.round(x), 0, 255).astype("uint8")  # decoded photos are whole numbers

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        return interpreter.get_tensor(target)[0]

    # Dequantizing is affine and increasing, so the argmax of the uint8 output is the class.
    accuracy = float(
        np.mean([run(image).argmax() == label for image, label in zip(pixels, y, strict=True)])
    )
    for image in pixels[:3]:
        run(image)
    seconds = []
    for image in pixels[:timed]:
        started = time.perf_counter()
        run(image)
        seconds.append(time.perf_counter() - started)
    return {
        "format": "tflite_int8 (uint8 in/out)",
        "accuracy": round(accuracy, 4),
        "size_bytes": out.stat().st_size,
        "ms_per_image": round(1000 * median(seconds), 3),
        "input_quantization": [float(v) for v in source["quantization"]],
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
        ],
    )
    weights = SHARED_DATA / "keras-weights" / WEIGHTS_FILE
    if not (SHARED_DATA / DATA).exists() or not weights.exists():
        raise SystemExit(f"exports: {SHARED_DATA} lacks {DATA} or keras-weights/{WEIGHTS_FILE}")
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
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
            ["sweep=transfer", "data=directory", f"data.path={SHARED_DATA / DATA}",
             f"keras_home={root / 'keras_home'}", f"output_dir={root / 'runs'}",
             f"seed={args.seed}",
             *(QUICK if args.quick else [])]
        )  # fmt: skip
        started = time.perf_counter()
        data = load_data(cfg.data, int(cfg.seed))
        print(f"{DATA}: {len(data.train)} train, {len(data.test)} test images at "
              f"{data.image_shape}", flush=True)  # fmt: skip
        trial = run_trial(cfg, data)
        train_s = time.perf_counter() - started
        print(f"trained in {train_s:.0f}s (val {trial.metrics})", flush=True)
        started = time.perf_counter()
        paths = export_model(
            trial.model, list(FORMATS), root / "export", data.class_names, data.train.x
        )
        export_s = time.perf_counter() - started
        print(f"exported {', '.join(paths)} in {export_s:.0f}s", flush=True)
        x, y = np.asarray(data.test.x), data.test.y
        rows = measures_table(measure_exports(paths, x, y, timed=args.timed))
        with tempfile.TemporaryDirectory() as scratch:
            saved = export_saved_model(serving_model(trial.model), Path(scratch) / "saved_model")
            side = uint8_io_row(saved, root / "uint8_io.tflite", data.train.x[:200], x, y,
                                args.timed)  # fmt: skip
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
        f"each export of MobileNet 0.25 on {len(y)} {DATA} test images at "
        f"{x.shape[1]}x{x.shape[2]} (ms: median of {args.timed} single-image calls)",
        ["format", "test_acc", "size", "size_bytes", "vs_tflite", "acc_delta", "ms/image"],
        [[r["format"], r["accuracy"], r["size"], r["size_bytes"], r["size_ratio"],
          r["accuracy_delta"], r["ms_per_image"]] for r in [*rows, side]],
    )  # fmt: skip
    print(
        f"int8 / float32 size: {i8['size_ratio']:.3f}; accuracy {i8['accuracy_delta']:+.4f}. "
        f"within 1 point: {verdict(targets['int8_within_1_point'])}; at most a third of the "
        f"size: {verdict(targets['int8_at_most_a_third_of_the_size'])}"
    )
    write_result(
        "exports",
        {
            "data": DATA,
            "seed": args.seed,
            "train_images": len(data.train),
            "test_images": len(y),
            "image_size": list(x.shape[1:]),
            "timed_calls": args.timed,
            "train_s": round(train_s, 1),
            "export_s": round(export_s, 1),
            "val_metrics": trial.metrics,
            "exports": rows,
            "int8_uint8_io": side,
            "targets": targets,
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
