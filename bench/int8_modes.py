"""int8 TFLite against float32 for one transfer model: calibration size, per-tensor, int16 activations.

    python bench/int8_modes.py [--sets cifar sign] [--size 224] [--quick]

One trial of `sweep=transfer` (seed 42's split; cifar10-test at 300 per class, as
bench/anytime.py) at `--size` px, exported once as a SavedModel and converted to TFLite: float32;
int8 as `final.export` writes it (per-channel weights, 200 training images to calibrate); int8
calibrated on every training image; int8 with one scale per weight tensor (per-tensor); int16
activations with int8 weights (TFLite's 16x8 mode). Each file is measured by
`experiments.serving.measure.measure_export` on the test split: accuracy, bytes, ms per image at
batch 1 (median of 5 calls: indicative only, this bench is about accuracy and size). Results go to
bench/results/int8_modes.json.

--quick: 20 images per class, 96 px, 3 epochs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED_DATA, parse_args, print_table, write_result
from exports import QUICK, WEIGHTS_FILE, compose
from transfer_vs_recipe import SETS

MODES = ("float32", "int8 (final.export)", "int8, all training images", "int8 per-tensor", "16x8")


def convert(saved: Path, out: Path, mode: str, calibration: np.ndarray | None) -> Path:
    """`saved` converted to TFLite in `mode` (one of MODES) at `out`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if mode != "float32":
        assert calibration is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [
            ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if mode == "16x8"
            else ops.TFLITE_BUILTINS_INT8
        ]
        converter._experimental_disable_per_channel = mode == "int8 per-tensor"
    out.write_bytes(converter.convert())
    return out


def one_set(name: str, size: int, quick: bool) -> dict[str, Any]:
    folder, per_class = SETS[name]
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        root = Path(tmp)
        (root / "keras_home" / "models").mkdir(parents=True)
        weights = SHARED_DATA / "keras-weights" / WEIGHTS_FILE
        shutil.copy(weights, root / "keras_home" / "models" / WEIGHTS_FILE)
        os.environ["KERAS_HOME"] = str(root / "keras_home")
        from experiments.data.load import load_data
        from experiments.serving.export import export_saved_model, serving_model
        from experiments.serving.measure import measure_export
        from experiments.training.trial import run_trial

        cfg = compose(
            ["sweep=transfer", "data=directory", f"data.path={SHARED_DATA / folder}",
             f"keras_home={root / 'keras_home'}", f"output_dir={root / 'runs'}", "seed=42",
             f"data.image_size={size}", f"model.input_size={size}",
             *([f"data.max_per_class={per_class}"] if per_class and not quick else []),
             *(QUICK if quick else [])]
        )  # fmt: skip
        data = load_data(cfg.data, 42)
        trial = run_trial(cfg, data)
        saved = export_saved_model(serving_model(trial.model), root / "saved_model")
        x, y = np.asarray(data.test.x, dtype="float32"), data.test.y
        rows = []
        for mode in MODES:
            count = len(data.train) if mode == "int8, all training images" else 200
            path = convert(saved, root / "model.tflite", mode, data.sample(count, "train"))
            measured = measure_export(path, "tflite", x, y, timed=5)
            rows.append({"mode": mode, "accuracy": round(measured.accuracy, 4),
                         "size_bytes": measured.size_bytes,
                         "ms_per_image": round(measured.ms_per_image, 3)})  # fmt: skip
    base = rows[0]
    print_table(
        f"{folder}, {size} px, {len(y)} test images",
        ["mode", "test_acc", "vs float32 (points)", "size_bytes", "vs float32", "ms/image"],
        [[r["mode"], r["accuracy"], round(100 * (r["accuracy"] - base["accuracy"]), 2),
          r["size_bytes"], round(r["size_bytes"] / base["size_bytes"], 3), r["ms_per_image"]]
         for r in rows],
    )  # fmt: skip
    return {"data": folder, "size": size, "test_images": len(y), "modes": rows}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": ["cifar", "sign"]}),
            ("--size", {"type": int, "default": 224}),
        ],
    )
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    results: dict[str, Any] = {}
    for name in args.sets:
        results[name] = one_set(name, 96 if args.quick else args.size, args.quick)
        write_result("int8_modes", {"sets": results}, args.quick)


if __name__ == "__main__":
    main()
