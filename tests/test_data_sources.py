"""Sweeps on real image folders and keras datasets, with what MLflow records about the data."""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from experiments.data import keras_datasets
from experiments.data.load import load_data
from experiments.errors import UserInputError
from experiments.keras_home import keras_home
from search.sweep import sweep
from tests.conftest import shared_data
from tests.test_sweep import runs_of


def check_dataset_records(cfg, data_name: str, classes: list[str]) -> list:
    client = MlflowClient(cfg.tracking.tracking_uri)
    children = runs_of(cfg, "trial")
    for child in children:
        assert child.info.status == "FINISHED"
        tags = child.data.tags
        assert json.loads(tags["sweeplab.class_names"]) == classes
        info = json.loads(
            Path(client.download_artifacts(child.info.run_id, "dataset.json")).read_text()
        )
        assert info["fingerprint"] == tags["sweeplab.data_fingerprint"]
        assert set(info["counts"]) == {"train", "val", "test"}
        assert all(set(per_class) == set(classes) for per_class in info["counts"].values())
        assert all(min(per_class.values()) >= 1 for per_class in info["counts"].values())
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        contexts = {i.tags[0].value: i.dataset for i in inputs}
        assert set(contexts) == {"train", "validation", "test"}
        assert {d.digest for d in contexts.values()} == {info["fingerprint"]}
        assert contexts["train"].name == f"{data_name}-train"
    return children


@pytest.mark.slow
def test_sweep_on_sign_language_photos(make_config, tmp_path) -> None:
    folder = shared_data("sign-language-digits")
    cfg = make_config(
        "data=directory",
        f"data.path={folder}",
        "data.image_size=16",
        "data.max_per_class=12",
        f"data.cache_dir={tmp_path / 'cache'}",
        "search.n_trials=2",
    )
    summary = sweep(cfg)
    assert summary.finished_trials == 2 and summary.best_value is not None
    children = check_dataset_records(cfg, "sign-language-digits", [str(i) for i in range(10)])
    info = json.loads(
        Path(
            MlflowClient(cfg.tracking.tracking_uri).download_artifacts(
                children[0].info.run_id, "dataset.json"
            )
        ).read_text()
    )
    # The recorded path is the resolved folder: the same data however it is reached (links).
    assert info["source"] == "directory" and Path(info["path"]) == folder.resolve()
    assert Path(info["path"]).is_absolute() and Path(info["path"]).resolve() == Path(info["path"])
    assert info["image_shape"] == [16, 16, 3] and sum(info["sizes"].values()) == 120
    best = next(c for c in children if c.info.run_id == summary.best_run_id)
    assert best.data.tags["sweeplab.model_uri"].startswith("models:/")  # the model worth keeping


def test_sweep_on_fashion_mnist_pngs_searching_augmentation(make_config, tmp_path) -> None:
    folder = shared_data("fashion-mnist-test")
    cfg = make_config(
        "data=directory",
        f"data.path={folder}",
        "data.image_size=16",
        "data.channels=1",
        "data.max_per_class=10",
        "data.cache=file",
        f"data.cache_dir={tmp_path / 'cache'}",
        "+space.data.augmentation.rotation={type:float,low:0.0,high:0.1}",
        "+space.data.augmentation.flip={type:categorical,choices:[none,horizontal]}",
        "search.n_trials=2",
        "tracking.log_models=false",
    )
    summary = sweep(cfg)
    assert summary.finished_trials == 2
    children = check_dataset_records(cfg, "fashion-mnist-test", [str(i) for i in range(10)])
    for child in children:
        assert "data.augmentation.rotation" in child.data.params
    assert len(list((tmp_path / "cache").iterdir())) == 1  # decoded once, shared by the trials


def write_mnist_npz(home: Path) -> None:
    """A Keras-cache mnist.npz made of the real MNIST test images (the train file is not here)."""
    raw = shared_data("mnist")
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    (home / "datasets").mkdir(parents=True)
    np.savez(
        home / "datasets" / "mnist.npz",
        x_train=x[:8000],
        y_train=y[:8000],
        x_test=x[8000:],
        y_test=y[8000:],
    )


def test_keras_mnist_from_the_keras_cache(make_config, tmp_path, monkeypatch) -> None:
    home = tmp_path / "keras"
    write_mnist_npz(home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    cfg = make_config(
        "data=keras",
        "data.name=mnist",
        "data.max_per_class=15",
        f"keras_home={home}",
        "search.n_trials=1",
        "tracking.log_models=false",
    )
    summary = sweep(cfg)
    assert summary.finished_trials == 1
    check_dataset_records(cfg, "mnist", [str(i) for i in range(10)])
    data = load_data(
        make_config(
            "data=keras", "data.channels=3", "data.image_size=12", "data.max_per_class=20"
        ).data,
        0,
    )
    assert data.image_shape == (12, 12, 3) and len(data.test) == 200
    assert data.train.x.dtype == np.uint8 and data.train.x.max() > 200


def test_keras_offline_without_a_cached_file_names_it(make_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cfg = make_config("data=keras", "data.name=mnist", "data.download=false")
    expected = str(tmp_path / "keras" / "datasets" / "mnist.npz")
    with pytest.raises(UserInputError, match="download=false") as err:
        load_data(cfg.data, 0)
    assert expected in str(err.value) and "storage.googleapis.com" in str(err.value)

    # A download that cannot connect (as offline) gives the same kind of message.
    unreachable = dataclasses.replace(
        keras_datasets.SETS["mnist"].downloads[0], origin="http://127.0.0.1:9/mnist.npz"
    )
    spec = dataclasses.replace(keras_datasets.SETS["mnist"], downloads=(unreachable,))
    monkeypatch.setitem(keras_datasets.SETS, "mnist", spec)
    with pytest.raises(UserInputError, match="downloading it failed") as err:
        load_data(make_config("data=keras", "data.name=mnist").data, 0)
    assert expected in str(err.value) and "offline" in str(err.value)

    cifar = make_config("data=keras", "data.name=cifar10", "data.download=false")
    with pytest.raises(UserInputError, match="cifar-10-batches-py-target_archive"):
        load_data(cifar.data, 0)
    with pytest.raises(UserInputError, match="data.name='svhn'"):
        load_data(make_config("data=keras", "data.name=svhn").data, 0)


@pytest.mark.parametrize("keras_home_set", [True, False])
def test_keras_home_is_where_keras_itself_caches(tmp_path, monkeypatch, keras_home_set) -> None:
    """One resolver for datasets and backbone weights, agreeing with a fresh Keras process."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    if keras_home_set:
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "elsewhere"))
    else:
        monkeypatch.delenv("KERAS_HOME", raising=False)
    asked = subprocess.run(
        [sys.executable, "-c", "from keras.src.backend import config; print(config.keras_home())"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = tmp_path / ("elsewhere" if keras_home_set else "user/.keras")
    assert Path(asked.stdout.strip()) == expected == keras_home()


def test_a_data_fingerprint_is_hashed_once_and_a_changed_copy_hashes_anew() -> None:
    """`ImageData.fingerprint` is asked a few times a trial: hashed once per object, and a
    `dataclasses.replace` copy with other pixels gets its own hash."""
    import dataclasses

    import numpy as np

    from experiments.data.splits import ImageData, Split

    def split(value: int) -> Split:
        return Split(np.full((4, 2, 2, 1), value, np.uint8), np.arange(4) % 2)

    data = ImageData(split(1), split(2), split(3), ["a", "b"], "test")
    first = data.fingerprint()
    assert data.fingerprint() == first and "_content_hash" in vars(data)
    changed = dataclasses.replace(data, train=split(9))
    assert changed.fingerprint() != first


def test_sweeplabs_cache_folder_is_one_place_and_an_empty_variable_counts_as_unset(
    monkeypatch, tmp_path
) -> None:
    """data.cache=file's images and the MLflow store template share `experiments.cache_home`:
    $XDG_CACHE_HOME/sweeplab, else ~/.cache/sweeplab (an empty variable too, as XDG says)."""
    from pathlib import Path

    from experiments.cache_home import cache_home
    from tracking.mlflow_tracker import store_template

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_home() == tmp_path / "sweeplab"
    assert store_template().parent == tmp_path / "sweeplab" / "stores"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_home() == Path("~/.cache/sweeplab").expanduser()
