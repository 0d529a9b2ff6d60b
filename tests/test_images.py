"""Folder reading on real image files written to temporary folders: layouts, modes, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.data.images import decode_file
from experiments.data.load import load_data
from experiments.data.pipeline import dataset
from experiments.errors import UserInputError
from experiments.serving.predict import collect_images, load_image
from tests.conftest import run_cli


def write_image(path: Path, size=(20, 20), mode="RGB", fmt=None, seed=0) -> Path:
    """A real image file of random pixels (content differs per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(pixels).convert(mode)
    img.save(path, format=fmt)
    return path


def make_folder(root: Path, classes=("cat", "dog"), per_class=6, size=(20, 20)) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", size, seed=100 * c + i)
    return root


@pytest.fixture
def load(make_config, tmp_path):
    """load_data over the real composed data=directory config, with overrides."""

    def run(path: Path | str, *overrides: str):
        cfg = make_config(
            "data=directory",
            f"data.path={path}",
            "data.image_size=12",
            f"data.cache_dir={tmp_path / 'cache'}",
            *overrides,
        )
        return load_data(cfg.data, int(cfg.seed))

    return run


def test_reads_class_folders_in_order_with_a_stratified_split(load, tmp_path) -> None:
    data = load(make_folder(tmp_path / "pets", classes=("b", "a", "c"), per_class=10))
    assert data.class_names == ["a", "b", "c"]
    assert data.image_shape == (12, 12, 3)
    counts = data.counts()
    for split in ("train", "val", "test"):  # stratified: classes within one image of each other
        assert max(counts[split].values()) - min(counts[split].values()) <= 1
    assert 4 <= sum(counts["test"].values()) <= 5 and 4 <= sum(counts["val"].values()) <= 5
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 30
    train = set(data.train.files)
    assert not train & set(data.val.files) and not train & set(data.test.files)
    x, y = next(iter(dataset(data, "train", 64, training=False, seed=0)))
    assert (
        x.dtype.name == "float32"
        and x.shape == (len(data.train), 12, 12, 3)
        and float(x.numpy().max()) > 200
    )


def test_train_val_test_folders_fix_the_split(load, tmp_path) -> None:
    root = tmp_path / "fixed"
    make_folder(root / "train", per_class=8)
    make_folder(root / "test", per_class=3)
    data = load(root)
    assert len(data.test) == 6 and all("/test/" in f for f in data.test.files)
    assert len(data.train) + len(data.val) == 16
    assert all("/train/" in f for f in data.train.files + data.val.files)
    assert data.describe()["fixed_split"] is True


def test_every_mode_and_format_becomes_the_configured_channels(tmp_path) -> None:
    modes = [("L", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("P", "gif"), ("CMYK", "jpg")]
    modes += [("RGB", "bmp"), ("I;16", "png"), ("P", "png")]
    for i, (mode, ext) in enumerate(modes):
        path = write_image(tmp_path / f"{i}.{ext}", size=(30 + i, 17), mode=mode, seed=i)
        for channels in (1, 3):
            for policy in ("stretch", "crop", "pad"):
                pixels = decode_file(str(path), (10, 14), channels, policy)
                assert pixels.shape == (10, 14, channels) and pixels.dtype == np.uint8


def test_a_huge_photo_among_small_ones_is_resized_like_the_rest(load, tmp_path) -> None:
    root = make_folder(tmp_path / "mixed", per_class=6, size=(100, 100))
    write_image(root / "cat" / "big.jpg", size=(3024, 3024), seed=7)
    write_image(root / "dog" / "gray.png", size=(64, 40), mode="L", seed=8)
    write_image(root / "dog" / "alpha.png", size=(33, 90), mode="RGBA", seed=9)
    data = load(root, "data.resize=crop")
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 15
    assert data.image_shape == (12, 12, 3)


def test_non_image_files_are_ignored_and_counted(load, tmp_path) -> None:
    root = make_folder(tmp_path / "notes")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("top-level files are not classes")
    data = load(root)
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 12
    assert data.describe()["ignored_files"] == 2


def test_missing_path(load, tmp_path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_no_path_given(make_config) -> None:
    cfg = make_config("data=directory")
    with pytest.raises(UserInputError, match="needs a folder: set data.path"):
        load_data(cfg.data, 0)


def test_a_file_instead_of_a_folder(load, tmp_path) -> None:
    photo = write_image(tmp_path / "one.jpg")
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        load(photo)


def test_an_empty_folder(load, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no class subfolders"):
        load(tmp_path / "empty")


def test_images_without_class_folders(load, tmp_path) -> None:
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.png", seed=i)
    with pytest.raises(UserInputError, match="move them into one subfolder per class"):
        load(tmp_path / "flat")


def test_one_class_only(load, tmp_path) -> None:
    with pytest.raises(UserInputError, match="only one class folder"):
        load(make_folder(tmp_path / "solo", classes=("cat",)))


def test_class_folders_without_images(load, tmp_path) -> None:
    root = make_folder(tmp_path / "holes", classes=("cat", "dog", "eel"))
    for f in (root / "eel").iterdir():
        f.unlink()
    (root / "eel" / "readme.txt").write_text("no images here")
    (root / "fox").mkdir()
    with pytest.raises(UserInputError, match=r"\['eel', 'fox'\] contain no images"):
        load(root)


def corrupt_folder(root: Path) -> Path:
    make_folder(root, per_class=8)
    good = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    (root / "dog" / "empty.bmp").write_bytes(b"")
    return root


def test_corrupt_and_truncated_images_fail_listing_the_files(load, tmp_path) -> None:
    root = corrupt_folder(tmp_path / "bad")
    with pytest.raises(UserInputError) as err:
        load(root)
    message = str(err.value)
    assert "3 of 19 image files could not be read" in message
    for name in ("truncated.png", "garbage.jpg", "empty.bmp"):
        assert name in message
    assert "data.on_corrupt=skip" in message


@pytest.mark.parametrize("cache", ["memory", "file", "none"])
def test_on_corrupt_skip_counts_warns_and_records(load, tmp_path, cache) -> None:
    root = corrupt_folder(tmp_path / "bad")
    with pytest.warns(UserWarning, match="skipped 3 of 19 unreadable image files"):
        data = load(root, "data.on_corrupt=skip", f"data.cache={cache}")
    info = data.describe()
    assert info["skipped_count"] == 3 and len(info["skipped_files"]) == 3
    assert sum(info["sizes"].values()) == 16
    every = [f for s in ("train", "val", "test") for f in data.split(s).files]
    assert not any(Path(f).name in ("truncated.png", "garbage.jpg", "empty.bmp") for f in every)
    x, _ = next(iter(dataset(data, "train", 64, training=False, seed=0)))
    assert x.shape[0] == len(data.train)


def test_bad_settings_are_named(load, tmp_path) -> None:
    root = make_folder(tmp_path / "ok")
    for override, needle in [
        ("data.resize=squash", "data.resize='squash'"),
        ("data.channels=4", "data.channels=4"),
        ("data.cache=disk", "data.cache='disk'"),
        ("data.on_corrupt=ignore", "data.on_corrupt='ignore'"),
        ("data.image_size=2", "data.image_size=2"),
    ]:
        with pytest.raises(UserInputError, match=needle.replace("(", r"\(")):
            load(root, override)


def test_too_few_images_for_the_split_is_a_clear_error(load, tmp_path) -> None:
    with pytest.raises(UserInputError, match="cannot hold out"):
        load(make_folder(tmp_path / "tiny", per_class=2))


def test_cache_modes_give_the_same_images_and_are_deterministic(load, tmp_path) -> None:
    root = make_folder(tmp_path / "det", classes=("a", "b", "c"), per_class=9)
    batches = {}
    for cache in ("memory", "file", "none"):
        data = load(root, f"data.cache={cache}")
        for run in range(2):
            ds = dataset(data, "train", 64, training=True, seed=3)
            x, y = next(iter(ds))
            order = np.lexsort(x.numpy().reshape(len(y), -1).T)  # file mode sorts inside a batch
            batches[cache, run] = (x.numpy()[order], y.numpy()[order], data.fingerprint())
    reference = batches["memory", 0]
    for x, y, fingerprint in batches.values():
        np.testing.assert_array_equal(x, reference[0])
        np.testing.assert_array_equal(y, reference[1])
        assert fingerprint == reference[2]
    # the same seed gives the same order on a fresh pipeline; another seed a different one
    data = load(root)
    first = [y.numpy() for _, y in dataset(data, "train", 4, training=True, seed=3)]
    again = [y.numpy() for _, y in dataset(data, "train", 4, training=True, seed=3)]
    other = [y.numpy() for _, y in dataset(data, "train", 4, training=True, seed=4)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))


def test_the_file_cache_is_reused(load, tmp_path) -> None:
    root = make_folder(tmp_path / "reuse")
    first = load(root, "data.cache=file")
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").exists()
    second = load(root, "data.cache=file")
    assert list((tmp_path / "cache").iterdir()) == entries
    assert second.fingerprint() == first.fingerprint()
    assert isinstance(second.train.x, np.memmap)


def test_bad_data_on_the_command_line_is_one_paragraph_and_exit_2(tmp_path) -> None:
    result = run_cli(
        "search.run",
        "data=directory",
        f"data.path={tmp_path / 'nowhere'}",
        f"output_dir={tmp_path / 'runs'}",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("sweeplab: error: data.path=")
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # failed before anything was recorded


def test_training_and_prediction_read_images_the_same_way(load, tmp_path) -> None:
    """One decoder, one extension list: WebP and TIFF train too, and predict's pixels equal
    training's (a 16-bit PNG used to be clipped by predict and scaled by training)."""
    root = make_folder(tmp_path / "formats", per_class=6)
    write_image(root / "cat" / "extra.webp", seed=11)
    write_image(root / "dog" / "extra.tiff", seed=12)
    data = load(root)
    every = [Path(f).suffix for s in ("train", "val", "test") for f in data.split(s).files]
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 14
    assert {".webp", ".tiff"} <= set(every) and data.describe()["ignored_files"] == 0
    assert collect_images([root]) == sorted(
        p for p in root.rglob("*") if p.suffix in (".png", ".webp", ".tiff")
    )
    deep = write_image(tmp_path / "deep.png", size=(15, 9), mode="I;16", seed=3)
    for path in (deep, root / "cat" / "extra.webp", root / "dog" / "extra.tiff"):
        channels = 1 if path == deep else 3
        trained = decode_file(str(path), (10, 14), channels, "stretch").astype(np.float32)
        predicted = load_image(path, (10, 14), channels)
        np.testing.assert_array_equal(predicted, trained)
    assert len(np.unique(load_image(deep, (10, 14), 1))) > 50  # scaled to 8 bits, not clipped
