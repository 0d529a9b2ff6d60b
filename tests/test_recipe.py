"""sweep=recipe is the seed's Example 1 (one frozen MobileNet trial), with the backbone's own
preprocessing; the benchmark's overrides compose, and both of its sweeps start from trial 0."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir

from experiments.models.build import build_model
from search.cli.overrides import normalize_overrides
from search.space.baseline import baseline
from search.space.spec import parse_space


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=normalize_overrides(list(overrides)))


def test_recipe_is_the_seeds_example_1_as_one_trial() -> None:
    cfg = composed("sweep=recipe")
    model, aug = cfg.model, cfg.data.augmentation
    assert (model.backbone, model.alpha, model.weights, model.input_size) == (
        "mobilenet", 0.25, "imagenet", 224,
    )  # fmt: skip
    assert cfg.data.image_size == 224  # target_size=(224, 224)
    # Frozen throughout: every epoch is phase 1.
    assert model.fine_tune.head_epochs == cfg.train.epochs == 10
    assert (model.pooling, model.dense_units, model.dropout) == ("avg", 1024, 0.0)
    assert aug.flip == "horizontal" and aug.translation == 0.2 and aug.fill_mode == "nearest"
    assert aug.rotation * 360 == pytest.approx(20, abs=0.01)  # rotation_range=20 (degrees)
    assert aug.zoom == aug.crop == aug.contrast == 0 and aug.preset is None
    assert model.feature_cache.augmented_copies == 0  # fresh augmentation every epoch, uncached
    assert cfg.optimizer.name == "adam" and cfg.optimizer.learning_rate == 0.001
    assert cfg.optimizer.weight_decay is None and cfg.train.label_smoothing == 0
    assert cfg.train.batch_size == 32 and cfg.search.n_trials == 1
    space = parse_space(cfg.space, cfg)
    assert baseline(space, cfg).usable  # its one trial is trial 0: the recipe itself


def test_recipe_model_uses_the_backbones_own_preprocessing_not_1_over_255() -> None:
    cfg = composed("sweep=recipe", "model.weights=null")
    model = build_model(cfg.model, (224, 224, 3), 10)
    preprocess = model.get_layer("preprocess")
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(preprocess(pixels)), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)
    assert model.get_layer("head_dense").units == 1024
    assert model.get_layer("head_dropout").rate == 0.0


def test_benchmark_overrides_compose_and_start_from_the_base_config() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import transfer_vs_recipe as bench

    for overlay, extra in (("recipe", bench.QUICK_RECIPE), ("transfer", bench.QUICK_SWEEP)):
        for quick in ([], extra):
            cfg = composed(f"sweep={overlay}", "data=directory", "data.path=/photos", *quick)
            assert baseline(parse_space(cfg.space, cfg), cfg).usable, (overlay, quick)


def test_augmentation_benchmark_arms_compose_and_start_from_the_base_config() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import transfer_augmentation as bench

    searched = {}
    for arm, overrides in bench.ARMS.items():
        cfg = composed("sweep=transfer", "data=directory", "data.path=/photos", *overrides)
        assert baseline(parse_space(cfg.space, cfg), cfg).usable, arm
        searched[arm] = sorted(cfg.space.get("data", {}).get("augmentation", {}))
    assert searched == {
        "augmented": ["flip", "rotation", "translation", "zoom"],
        "none": [],
        "preset": ["preset"],
        "preset_light": ["preset"],
        "kcopies": [],
    }
