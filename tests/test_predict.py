"""`search.predict` bad input: each case is one clear paragraph and exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from experiments.models.cnn import build_cnn
from search.predict import main as predict_main


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    """A real (untrained) 8x8 RGB CNN saved as .keras: the checks happen before it predicts."""
    cfg = OmegaConf.create(
        {"conv_blocks": 1, "filters": 4, "filter_growth": 1, "kernel_size": 3}
        | {"batch_norm": False, "dropout": 0.0, "dense_units": 8}
    )
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_cnn(cfg, (8, 8, 3), 3).save(path)
    return path


def fails(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict_main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sweeplab: error: ") and "Traceback" not in err
    assert err.count("\n") == 1, err  # one paragraph
    return err


def test_predicts_top_k_with_probabilities(rgb_model, tmp_path, capsys) -> None:
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), "uint8")).save(image)
    predict_main([str(rgb_model), str(image), "--top-k", "5"])
    path, *rest = capsys.readouterr().out.split()
    assert path == str(image) and len(rest) == 6  # k clipped to the model's 3 classes
    assert sorted(rest[0::2]) == ["0", "1", "2"]  # no class_names.json: output indices
    assert sum(float(p) for p in rest[1::2]) == pytest.approx(1.0, abs=1e-3)


def test_corrupt_and_non_image_files(rgb_model, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    assert "broken.jpg" in fails(capsys, str(rgb_model), str(broken))
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:300])
    assert "truncated.jpg" in fails(capsys, str(rgb_model), str(truncated))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert "not a readable image" in fails(capsys, str(rgb_model), str(notes))


def test_folder_without_images_and_missing_path(rgb_model, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    err = fails(capsys, str(rgb_model), str(empty))
    assert "holds no image files" in err and ".jpg" in err
    assert "neither an image file nor a folder" in fails(
        capsys, str(rgb_model), str(tmp_path / "missing.png")
    )


def test_wrong_channel_count(rgb_model, tmp_path, capsys) -> None:
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 8), 128).save(gray)
    err = fails(capsys, str(rgb_model), str(gray))
    assert "gray.png" in err and "1 channel" in err and "takes 3 (RGB)" in err
    rgba = tmp_path / "alpha.png"
    Image.new("RGBA", (8, 8)).save(rgba)
    assert "4 channel" in fails(capsys, str(rgb_model), str(rgba))


def test_model_path_that_is_no_model(tmp_path, capsys) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert "does not exist" in fails(capsys, str(tmp_path / "nope.keras"), str(image))
    bogus = tmp_path / "bogus.keras"
    bogus.write_bytes(b"not a zip")
    assert "cannot be loaded as a Keras model" in fails(capsys, str(bogus), str(image))
    assert "not a model sweeplab can load" in fails(capsys, str(tmp_path), str(image))


def test_a_junk_saved_model_and_a_decompression_bomb(rgb_model, tmp_path, capsys) -> None:
    """Issue 28 (14): a folder with a junk saved_model.pb was an OSError traceback, and a
    20000x20000 PNG PIL's DecompressionBombError; both are one paragraph, exit 2."""
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    junk = tmp_path / "junk_model"
    junk.mkdir()
    (junk / "saved_model.pb").write_bytes(b"\x00 not a SavedModel protobuf")
    err = fails(capsys, str(junk), str(image))
    assert "junk_model" in err and "could not be loaded" in err
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels, a few kB as 1-bit PNG
    err = fails(capsys, str(rgb_model), str(bomb))
    assert "bomb.png" in err and "DecompressionBombError" in err
