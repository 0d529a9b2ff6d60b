"""int8 TFLite against float32 for one transfer model: selective int8, calibration, per-tensor, 16x8.

    python bench/int8_modes.py [--sets cifar sign] [--size 224] [--quick]

One trial of `sweep=transfer` (seed 42's split; cifar10-test at 300 per class, as
bench/anytime.py) at `--size` px, exported once as a SavedModel and converted to TFLite: float32;
int8 as `final.export` writes it (selective: TFLite's quantization debugger on the 200 calibration
images, the layers of largest rmse / scale kept float32 while the file stays within 0.45 of
float32's, `experiments.serving.selective`); the same at 0.40; the layers over 0.7 steps kept float
(TF's tutorial threshold, no size cap); full-integer int8 (every layer int8: round 11's export)
calibrated on 200 training images, and on every training image; int8 with one scale per weight
tensor (per-tensor); int16 activations with int8 weights (TFLite's 16x8 mode). Calibration and
debugging read training images only. Each file is measured by
`experiments.serving.measure.measure_export` on the test split: accuracy, bytes, ms per image at
batch 1 (median of 5 calls: indicative only, this bench is about accuracy and size). Results, with
the layers each selective mode kept float, go to bench/results/int8_modes.json.

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

FULL_INTEGER = (
    "int8 full-integer",
    "int8 full-integer, all training images",
    "int8 per-tensor",
    "16x8",
)
SELECTIVE = (
    "int8 selective <= 0.45x (final.export)",
    "int8 selective <= 0.40x",
    "int8 selective > 0.7 steps",
)
MODES = ("float32", *SELECTIVE, *FULL_INTEGER)
CALIBRATION = 200  # images, as final.export calibrates (export.CALIBRATION_LIMIT)


def convert(saved: Path, out: Path, mode: str, calibration: np.ndarray | None) -> Path:
    """`saved` converted to TFLite in `mode` (float32 or one of FULL_INTEGER) at `out`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if mode != "float32":
        assert calibration is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # One float32 image at a time: every 224 px training image at once would be 1.3 GB.
        converter.representative_dataset = lambda: (
            [np.asarray(image, dtype="float32")[None]] for image in calibration
        )
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [
            ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if mode == "16x8"
            else ops.TFLITE_BUILTINS_INT8
        ]
        converter._experimental_disable_per_channel = mode == "int8 per-tensor"
    out.write_bytes(converter.convert())
    return out


def every_training_image(data) -> np.ndarray:
    """The training split's pixels as held (uint8 in memory: a quarter of float32's bytes)."""
    return data.train.x if data.train.x is not None else data.sample(len(data.train), "train")


def selective(saved: Path, calibration: np.ndarray, float_bytes: int) -> dict[str, tuple]:
    """Each SELECTIVE mode's (model bytes, layers kept float), from one debugger run."""
    from experiments.quiet import silenced_stderr
    from experiments.serving import selective as sel

    shipped = sel.selective_int8(saved, calibration)  # what convert_to_tflite writes
    with silenced_stderr():  # the quantizer's C++ log lines, two per candidate
        debugger = sel.Int8Debugger(saved, calibration)
        capped, capped_model = sel.within_size(debugger, int(0.40 * float_bytes))
        tutorial = sel.above(debugger.errors, 0.7)
        return {
            SELECTIVE[0]: shipped,
            SELECTIVE[1]: (capped_model, capped),
            SELECTIVE[2]: (debugger.convert(tutorial), tutorial),
        }


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
        calibration = data.sample(CALIBRATION, "train")
        rows = []
        selected: dict[str, tuple] = {}
        for mode in MODES:
            path, kept = root / "model.tflite", None
            if mode in SELECTIVE:
                if not selected:
                    selected = selective(saved, calibration, rows[0]["size_bytes"])
                model, kept = selected[mode]
                path.write_bytes(model)
            else:
                whole = mode == "int8 full-integer, all training images"
                convert(saved, path, mode, every_training_image(data) if whole else calibration)
            measured = measure_export(path, "tflite", x, y, timed=5)
            rows.append({"mode": mode, "accuracy": round(measured.accuracy, 4),
                         "size_bytes": measured.size_bytes,
                         "ms_per_image": round(measured.ms_per_image, 3),
                         **({"float_layers": kept} if kept is not None else {})})  # fmt: skip
    base = rows[0]
    print_table(
        f"{folder}, {size} px, {len(y)} test images",
        ["mode", "test_acc", "vs float32 (points)", "size_bytes", "vs float32", "ms/image", "float layers"],
        [[r["mode"], r["accuracy"], round(100 * (r["accuracy"] - base["accuracy"]), 2),
          r["size_bytes"], round(r["size_bytes"] / base["size_bytes"], 3), r["ms_per_image"],
          len(r.get("float_layers", []))]
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
