"""Helpers shared by the transfer-learning tests: config, Keras cache, offline mode, photos."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from conftest import CONF_DIR, shared_data
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"


# The transfer overlay augments its base config (preset light); these tests are about the two
# phases and the frozen-feature cache of un-augmented images (augmented copies: tested apart).
NO_AUGMENTATION = (
    "data.augmentation.preset=none",
    "data.augmentation.flip=none",
    "data.augmentation.rotation=0.0",
    "data.augmentation.zoom=0.0",
    "data.augmentation.translation=0.0",
)


def transfer_config(tmp_path: Path, *overrides: str) -> DictConfig:
    """`sweep=transfer` at tiny sizes, without augmentation (conftest's TINY sets CNN-only keys,
    so not used here)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "sweep=transfer",
                *NO_AUGMENTATION,
                "data.image_size=16",
                "model.input_size=32",
                "train.batch_size=64",
                f"output_dir={tmp_path / 'runs'}",
                *overrides,
            ],
        )


def make_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh KERAS_HOME whose models/ holds the real MobileNet(alpha=0.25) ImageNet file."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    shutil.copy(shared_data("keras-weights") / WEIGHTS_FILE, home / "models" / WEIGHTS_FILE)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network for this test: every name lookup and connection fails, as on a machine without
    internet, so a test that passes cannot have downloaded anything."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def copy_sign_language_subsample(target: Path, per_class: int) -> Path:
    """A class-folder copy of `per_class` photos per digit, for data=directory."""
    root = shared_data("sign-language-digits")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        files = sorted(f for f in folder.iterdir() if f.stat().st_size < 200_000)
        for file in files[:per_class]:
            shutil.copy(file, target / folder.name / file.name)
    return target
