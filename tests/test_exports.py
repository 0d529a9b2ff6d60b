"""Exports and `search.predict` on real photos: ../shared/data/sign-language-digits at 32x32 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, run_cli, shared_data

from experiments.data.splits import ImageData, Split
from experiments.serving.export import export_model
from experiments.serving.predict import collect_images, load_image
from experiments.serving.predictors import load_predictor
from experiments.training.trial import run_trial

SIZE = (32, 32)


def load_images(files: list[Path], size: tuple[int | None, int | None], channels: int):
    """The photos as one float32 batch, decoded as `search.predict` decodes them."""
    return np.stack([load_image(f, size, channels) for f in files])


TRAIN_PER_CLASS, HELD_OUT_PER_CLASS = 16, 4


def sign_photos(train_per_class: int, held_out_per_class: int):
    """(class names, [(file, label)] to train on, [(file, label)] held out): real photos of
    sign-language-digits drawn per class with a fixed seed, under 200 kB each."""
    root = shared_data("sign-language-digits")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(0)
    train, held_out = [], []
    for label, name in enumerate(class_names):
        files = [f for f in collect_images([root / name]) if f.stat().st_size < 200_000]
        chosen = rng.choice(len(files), train_per_class + held_out_per_class, replace=False)
        picked = [(files[i], label) for i in chosen]
        train += picked[:train_per_class]
        held_out += picked[train_per_class:]
    return class_names, train, held_out


@pytest.fixture(scope="module")
def sign_model(tmp_path_factory):
    """A CNN trained 3 epochs on 160 real photos, exported in every format; and held-out images."""
    class_names, train, held_out = sign_photos(TRAIN_PER_CLASS, HELD_OUT_PER_CLASS)

    def split(pairs) -> Split:
        return Split(
            load_images([f for f, _ in pairs], SIZE, 3), np.array([y for _, y in pairs], "int32")
        )

    data = ImageData(split(train), split(held_out), split(held_out), class_names, "sign")
    out = tmp_path_factory.mktemp("exports")
    cfg = compose_config(
        ["train.epochs=3", "train.batch_size=32", "model.filters=8", "model.dense_units=32"],
        out / "runs",
    )
    model = run_trial(cfg, data).model
    paths = export_model(model, ["keras", "saved_model", "tflite"], out / "export", class_names)
    return model, paths, data, [f for f, _ in held_out]


def keras_on_raw(model, raw: np.ndarray) -> np.ndarray:
    """What the trained model says about raw photos resized the way the exports resize them."""
    import tensorflow as tf

    return model.predict(tf.image.resize(raw, SIZE, method="bilinear").numpy(), verbose=0)


def test_saved_model_and_tflite_agree_with_keras_on_real_photos(sign_model) -> None:
    model, paths, data, held_out = sign_model
    x = data.val.x  # 32x32: the size the model was trained at
    expected = model.predict(x, verbose=0)
    assert len(set(expected.argmax(axis=1))) > 1, "a constant model would make this test vacuous"
    raw = load_images(held_out, (None, None), 3)  # the 100x100 photos as they are
    assert raw.shape[1:] == (100, 100, 3)
    expected_raw = keras_on_raw(model, raw)
    for kind in ("keras", "saved_model", "tflite"):
        predictor = load_predictor(paths[kind])
        assert predictor.input_shape == (None, None, 3)  # resizing travels inside the export
        assert predictor.class_names == data.class_names
        got = predictor.predict(x)
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1), err_msg=kind)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=kind)
        got_raw = predictor.predict(raw)
        np.testing.assert_array_equal(
            got_raw.argmax(axis=1), expected_raw.argmax(axis=1), err_msg=kind
        )
        np.testing.assert_allclose(got_raw, expected_raw, atol=1e-4, err_msg=kind)


def test_predict_cli_on_a_folder_of_real_photos(sign_model, tmp_path: Path) -> None:
    model, paths, data, held_out = sign_model
    folder = shared_data("sign-language-digits") / "4"
    files = collect_images([folder])
    result = run_cli("search.predict", str(paths["keras"]), str(folder), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(files)
    expected = keras_on_raw(model, load_images(files, (None, None), 3)).argmax(axis=1)
    for line, file, top1 in zip(lines, files, expected, strict=True):
        path, first, p1, second, p2 = line.split()
        assert path == str(file)
        assert first == data.class_names[top1] and second != first
        assert 1.0 >= float(p1) >= float(p2) >= 0.0
