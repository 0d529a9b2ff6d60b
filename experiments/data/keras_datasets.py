"""`data=keras`: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through Keras's own download cache.

Files live where `keras.datasets` puts them (`$KERAS_HOME/datasets/...`, KERAS_HOME set from the
root `keras_home` key, else `~/.keras`; experiments/keras_home.py resolves it). A cached file is
read directly; a missing one is fetched with `keras.utils.get_file` (the same URL and hash Keras
uses). Offline without a cached copy, the
error names the file, where to put it and where to get it, instead of Keras's URL-fetch trace.
The official test split is kept as the test split; validation is cut from the training set.
"""

from __future__ import annotations

import gzip
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from experiments.data.images import image_hw
from experiments.data.splits import (
    ImageData,
    Split,
    check_max_per_class,
    holdout,
    per_class_sample,
)
from experiments.errors import UserInputError
from experiments.keras_home import download_dir, keras_home

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test
GOOGLE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10 += ["dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class Download:
    """One `keras.utils.get_file` call, as the keras.datasets loader makes it."""

    fname: str
    origin: str
    subdir: str = "datasets"
    file_hash: str | None = None
    extract: bool = False
    ready: str = ""  # path (under the home) that exists once the file is usable

    def target(self, home: Path) -> Path:
        return home / self.subdir / (self.ready or self.fname)


@dataclass(frozen=True)
class KerasSet:
    downloads: tuple[Download, ...]
    read: Callable[[Path], Arrays]
    class_names: Callable[[Path], list[str]]


def _read_mnist(home: Path) -> Arrays:
    with np.load(home / "datasets" / "mnist.npz", allow_pickle=False) as f:
        return f["x_train"], f["y_train"], f["x_test"], f["y_test"]


def _read_fashion(home: Path) -> Arrays:
    folder = home / "datasets" / "fashion-mnist"

    def idx(name: str, offset: int) -> np.ndarray:
        with gzip.open(folder / name, "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    y_train, y_test = idx("train-labels-idx1-ubyte.gz", 8), idx("t10k-labels-idx1-ubyte.gz", 8)
    x_train = idx("train-images-idx3-ubyte.gz", 16).reshape(len(y_train), 28, 28)
    x_test = idx("t10k-images-idx3-ubyte.gz", 16).reshape(len(y_test), 28, 28)
    return x_train, y_train, x_test, y_test


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(batch[label_key.encode()], np.int64)


def _read_cifar10(home: Path) -> Arrays:
    folder = home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    parts = [_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(folder / "test_batch", "labels")
    x_train = np.concatenate([x for x, _ in parts])
    return x_train, np.concatenate([y for _, y in parts]), x_test, y_test


def _read_cifar100(home: Path) -> Arrays:
    folder = home / "datasets" / "cifar-100-python-target" / "cifar-100-python"
    x_train, y_train = _cifar_batch(folder / "train", "fine_labels")
    x_test, y_test = _cifar_batch(folder / "test", "fine_labels")
    return x_train, y_train, x_test, y_test


def _cifar100_names(home: Path) -> list[str]:
    meta = home / "datasets" / "cifar-100-python-target" / "cifar-100-python" / "meta"
    try:
        with open(meta, "rb") as f:
            return [n.decode() for n in pickle.load(f, encoding="bytes")[b"fine_label_names"]]
    except (OSError, KeyError, pickle.UnpicklingError):
        return [str(i) for i in range(100)]


_FASHION_FILES = [
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
]
SETS: dict[str, KerasSet] = {
    "mnist": KerasSet(
        (
            Download(
                "mnist.npz",
                GOOGLE + "mnist.npz",
                file_hash="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
            ),
        ),
        _read_mnist,
        lambda home: [str(i) for i in range(10)],
    ),
    "fashion_mnist": KerasSet(
        tuple(Download(f, GOOGLE + f, subdir="datasets/fashion-mnist") for f in _FASHION_FILES),
        _read_fashion,
        lambda home: list(FASHION),
    ),
    "cifar10": KerasSet(
        (
            Download(
                "cifar-10-batches-py-target",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                file_hash="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                extract=True,
                ready="cifar-10-batches-py-target/cifar-10-batches-py/test_batch",
            ),
        ),
        _read_cifar10,
        lambda home: list(CIFAR10),
    ),
    "cifar100": KerasSet(
        (
            Download(
                "cifar-100-python-target",
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                file_hash="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                extract=True,
                ready="cifar-100-python-target/cifar-100-python/test",
            ),
        ),
        _read_cifar100,
        _cifar100_names,
    ),
}


def fetch(name: str, download: bool, home: Path | None = None) -> tuple[Arrays, list[str]]:
    """The arrays and class names of a keras dataset, downloading missing files when allowed."""
    spec = SETS.get(name)
    if spec is None:
        raise UserInputError(
            f"data.name={name!r} is not a keras dataset; accepted: {', '.join(SETS)}."
        )
    home = home or keras_home()
    for item in spec.downloads:
        if not item.target(home).exists():
            _download(name, item, home, download)
    try:
        arrays = spec.read(home)
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
        files = ", ".join(str(d.target(home)) for d in spec.downloads)
        raise UserInputError(
            f"the cached keras dataset {name!r} ({files}) cannot be read ({type(err).__name__}: "
            f"{err}); delete it so that it is downloaded again, or replace it with the file from "
            f"{', '.join(d.origin for d in spec.downloads)}."
        ) from err
    return arrays, spec.class_names(home)


def _download(name: str, item: Download, home: Path, allowed: bool) -> None:
    archive = home / item.subdir / (f"{item.fname}_archive" if item.extract else item.fname)
    where = (
        f"put {item.origin.rsplit('/', 1)[-1]} (from {item.origin}) at {archive}, or its "
        f"extracted contents so that {item.target(home)} exists"
        if item.extract
        else f"put it there (download it from {item.origin})"
    )
    missing = (
        f"data=keras data.name={name}: the file {item.target(home)} is missing from the Keras "
        f"cache ({home}; set keras_home=DIR or $KERAS_HOME to use another)"
    )
    if not allowed and not (item.extract and archive.exists()):
        raise UserInputError(f"{missing} and data.download=false; {where}.")
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        keras.utils.get_file(
            item.fname,
            origin=item.origin,
            file_hash=item.file_hash,
            cache_subdir=item.subdir,
            cache_dir=download_dir(home),
            extract=item.extract,
        )
    except Exception as err:  # keras raises a bare Exception for URL failures
        raise UserInputError(
            f"{missing} and downloading it failed ({str(err).splitlines()[0][:200]}). If this "
            f"machine is offline, {where}."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)
    if not item.target(home).exists():
        raise UserInputError(f"{missing}; the download finished but did not produce it. {where}.")


def load_keras(cfg: DictConfig, seed: int) -> ImageData:
    """A keras dataset, converted to the configured size and channels, split train/val/test."""
    name = str(cfg.get("name"))
    limit = check_max_per_class(cfg.get("max_per_class"))
    (x_train, y_train, x_test, y_test), class_names = fetch(name, bool(cfg.get("download", True)))
    rng = np.random.default_rng(seed)
    y_train, y_test = y_train.reshape(-1), y_test.reshape(-1)
    if limit is not None:
        keep_train = per_class_sample(y_train, limit, rng)
        x_train, y_train = x_train[keep_train], y_train[keep_train]
        keep_test = per_class_sample(y_test, limit, rng)
        x_test, y_test = x_test[keep_test], y_test[keep_test]
    x_train, x_test = (_convert(x, cfg) for x in (x_train, x_test))
    x_train, x_val, y_train, y_val = holdout(
        x_train, y_train.astype(np.int32), float(cfg.val_fraction), seed, "data.val_fraction"
    )
    return ImageData(
        Split(x_train, y_train),
        Split(x_val, y_val),
        Split(x_test, y_test.astype(np.int32)),
        class_names,
        source="keras",
        info={"name": name, "path": str(keras_home().resolve() / "datasets")},
    )


def _convert(x: np.ndarray, cfg: DictConfig) -> np.ndarray:
    """(N, H, W[, C]) uint8 to the configured channels and size, still uint8."""
    if x.ndim == 3:
        x = x[..., None]
    channels = cfg.get("channels") or x.shape[-1]
    if channels not in (1, 3):
        raise UserInputError(f"data.channels={channels!r}; accepted: 1, 3 or null (native).")
    if channels == 1 and x.shape[-1] == 3:
        gray = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        x = np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    elif channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if cfg.get("image_size") is None:
        return x
    hw = image_hw(cfg.image_size)
    if hw == x.shape[1:3]:
        return x
    import tensorflow as tf

    chunks = [
        tf.image.resize(x[i : i + 4096], hw, method="bilinear", antialias=True).numpy()
        for i in range(0, len(x), 4096)
    ]
    return np.clip(np.rint(np.concatenate(chunks)), 0, 255).astype(np.uint8)
