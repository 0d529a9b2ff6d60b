"""Transfer backbones: building, preprocessing, ImageNet weights from the Keras cache, clear errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from conftest import run_cli, shared_data
from omegaconf import OmegaConf
from transfer_helpers import (
    WEIGHTS_FILE,
    make_keras_home,
    offline,  # noqa: F401  (a fixture, used by name)
    transfer_config,
)

from experiments.errors import UserInputError
from experiments.models.backbones import BACKBONES
from experiments.models.transfer import build_transfer, preprocess_layer
from experiments.training.schedule import unfreeze_count, unfreeze_top
from search.sweep import sweep

SMALL = {
    "mobilenet": 32,
    "mobilenet_v2": 32,
    "efficientnetb0": 32,
    "resnet50v2": 32,
    "inceptionv3": 75,
}
MODEL_CFG = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/transfer.yaml")


def model_cfg(**changes):
    return OmegaConf.merge(MODEL_CFG, changes)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_builds_at_a_small_size_without_weights(name: str) -> None:
    alpha = 0.5 if name == "mobilenet_v2" else 0.25
    cfg = model_cfg(backbone=name, weights=None, input_size=SMALL[name], alpha=alpha)
    model = build_transfer(cfg, (16, 16, 1), 10)  # grayscale 16x16 in, resized inside
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("backbone").input_shape == (None, SMALL[name], SMALL[name], 3)

    # The preprocessing inside the model equals the backbone's own preprocess_input.
    rgb = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    module = importlib.import_module(f"keras.applications.{BACKBONES[name].module}")
    expected = module.preprocess_input(rgb.copy())
    layer = preprocess_layer(BACKBONES[name])
    got = rgb if layer is None else keras.ops.convert_to_numpy(layer(rgb))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_unfreeze_layers_counts_weighted_layers_and_keeps_batch_norm_frozen() -> None:
    """`unfreeze_layers=N` opens exactly N weighted, non-BatchNormalization layers: the top N."""
    cfg = model_cfg(backbone="mobilenet", weights=None, input_size=32, alpha=0.25)
    backbone = build_transfer(cfg, (32, 32, 3), 3).get_layer("backbone")
    tunable = [
        layer.name
        for layer in backbone.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    opened = unfreeze_top(backbone, 5)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert opened == trainable == tunable[-5:]
    assert not [
        layer.name
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    assert unfreeze_count(OmegaConf.create({"unfreeze_layers": 10_000}), len(tunable)) == len(
        tunable
    )


def test_frozen_efficientnet_backbone_runs_without_dropout_in_training_mode() -> None:
    """EfficientNet's internal dropout stays off: the backbone is called with training=False."""
    cfg = model_cfg(backbone="efficientnetb0", weights=None, input_size=32, dropout=0.0)
    model = build_transfer(cfg, (32, 32, 3), 3)
    model.get_layer("backbone").trainable = False
    features = keras.Model(model.inputs, model.get_layer("pool").output)
    # 8 images: EfficientNet drops whole residual branches per image, so with 8 a pass without
    # one dropped branch that differs between the passes is practically impossible.
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    first = keras.ops.convert_to_numpy(features(images, training=True))
    second = keras.ops.convert_to_numpy(features(images, training=True))
    np.testing.assert_array_equal(first, second)


@pytest.mark.usefixtures("offline")
def test_imagenet_weights_load_from_keras_home_without_network(tmp_path, monkeypatch) -> None:
    keras_home = make_keras_home(tmp_path, monkeypatch)
    model = build_transfer(model_cfg(input_size=32), (16, 16, 1), 10)
    backbone = model.get_layer("backbone")
    with h5py.File(keras_home / "models" / WEIGHTS_FILE) as stored:
        for layer in ("conv1", "conv_dw_7", "conv_pw_13", "conv_pw_13_bn"):
            saved = [np.asarray(stored[layer][layer][n]) for n in stored[layer][layer]]
            loaded = backbone.get_layer(layer).get_weights()
            assert len(saved) == len(loaded) > 0
            for value in saved:  # h5 order is alphabetical; match by value
                assert any(v.shape == value.shape and np.array_equal(v, value) for v in loaded)


@pytest.mark.usefixtures("offline")
def test_missing_weights_file_names_the_file_and_the_folder(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "empty_keras_home"
    monkeypatch.setenv("KERAS_HOME", str(empty))
    cfg = transfer_config(tmp_path, f"keras_home={empty}")
    with pytest.raises(UserInputError) as err:
        sweep(cfg)
    message = str(err.value)
    assert WEIGHTS_FILE in message and f"{empty / 'models'}/" in message
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # failed before any tracking

    # A size with its own file asks for that file.
    with pytest.raises(UserInputError, match="mobilenet_2_5_128_tf_no_top.h5"):
        build_transfer(model_cfg(input_size=128), (16, 16, 1), 10)


@pytest.mark.usefixtures("offline")
def test_every_backbone_the_space_can_sample_is_checked_up_front(tmp_path, monkeypatch) -> None:
    keras_home = make_keras_home(tmp_path, monkeypatch)
    # Only MobileNet alpha=0.25 is cached; the all-backbones space samples others first.
    cfg = transfer_config(tmp_path, "space=transfer_backbones", f"keras_home={keras_home}")
    with pytest.raises(UserInputError, match=r"model\.alpha=0\.5.*mobilenet_5_0_224_tf_no_top\.h5"):
        sweep(cfg)
    assert not (tmp_path / "runs" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"backbone": "inceptionv3", "input_size": 64, "weights": None}, "from 75x75"),
        ({"backbone": "mobilenet", "input_size": 16, "weights": None}, "from 32x32"),
        ({"backbone": "vgg", "weights": None}, "accepted: mobilenet, mobilenet_v2"),
        ({"alpha": 0.3}, "accepted with weights=imagenet: 0.25, 0.5, 0.75, 1.0"),
        ({"weights": "/no/such/file.h5"}, "is not a file"),
        ({"pooling": "sum", "weights": None}, "accepted: avg, max"),
    ],
)
def test_bad_transfer_settings_are_clear_errors(changes, expected) -> None:
    with pytest.raises(UserInputError, match=expected):
        build_transfer(model_cfg(**changes), (16, 16, 1), 10)


def test_a_weights_file_path_is_loaded(tmp_path) -> None:
    path = shared_data("keras-weights") / WEIGHTS_FILE
    model = build_transfer(model_cfg(weights=str(path), input_size=32), (32, 32, 3), 5)
    with h5py.File(path) as stored:
        kernel = np.asarray(stored["conv1"]["conv1"]["kernel:0"])
    np.testing.assert_array_equal(model.get_layer("backbone").get_layer("conv1").kernel, kernel)
    wrong = build_transfer  # the same file does not fit another architecture
    with pytest.raises(UserInputError, match="does not load into resnet50v2"):
        wrong(model_cfg(backbone="resnet50v2", weights=str(path), input_size=32), (32, 32, 3), 5)


def test_cli_offline_error_is_one_paragraph_and_exit_2(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "keras"
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # offline even where there is internet
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    done = run_cli(
        "search.run", "+sweep=transfer", f"keras_home={empty}", f"output_dir={tmp_path / 'runs'}"
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert WEIGHTS_FILE in done.stderr and str(empty / "models") in done.stderr


@pytest.mark.parametrize("space", ["transfer_wide", "transfer_backbones"])
def test_transfer_spaces_search_backbone_head_and_schedule(tmp_path, space) -> None:
    from search.space.spec import parse_space

    cfg = transfer_config(tmp_path, f"space={space}")
    params = {p.name: p for p in parse_space(cfg.space, cfg)}
    assert {
        "model.backbone",
        "model.pooling",
        "model.dropout",
        "model.fine_tune.head_epochs",
    } <= set(params)
    assert "model.fine_tune.lr_multiplier" in params and "optimizer.learning_rate" in params
    alpha = params["model.alpha"]
    assert set(alpha.when) == {"model.backbone"}
    assert "efficientnetb0" not in alpha.when["model.backbone"]
    assert set(alpha.when["model.backbone"]) <= {"mobilenet", "mobilenet_v2"}
