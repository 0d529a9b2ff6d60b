"""The frozen-feature cache: cached trials equal uncached ones, entries are reused and rebuilt.

Real Keras models on real photos: 12 sign-language photos per digit (120; 18 validation images),
MobileNet alpha 0.25 with the offline ImageNet file, and MobileNetV2 (residual adds) with random
weights. Equality of the whole raw-pixel model with the cached sub-model is tested to a maximum
absolute difference of probabilities of 1e-5.
"""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import CONF_DIR, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from transfer_helpers import (  # noqa: F401 (offline: a fixture)
    NO_AUGMENTATION,
    WEIGHTS_FILE,
    copy_sign_language_subsample,
    make_keras_home,
    offline,
)

from experiments.data.augment import augmentation_layers
from experiments.data.load import load_data
from experiments.data.splits import Split
from experiments.errors import UserInputError
from experiments.models.cache_settings import cache_settings
from experiments.models.cut import first_trainable, head_model, single_tensor_cuts, upper_model
from experiments.training.feature_cache import CachedPhases, split_digest
from experiments.training.feature_store import SUFFIX, FeatureStore
from experiments.training.settings import trial_settings
from experiments.training.trial import run_trial
from search.config.rules import check_values

TOLERANCE = 1e-5  # max abs difference of class probabilities, whole model vs cached sub-model

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return copy_sign_language_subsample(tmp_path / "photos", per_class=12)


def config(tmp_path: Path, photos: Path, *overrides: str) -> DictConfig:
    """sweep=transfer on the photo subset at 48 px, 3 epochs (1 head + 2 fine-tuning), without
    the overlay's augmentation (a trial with augmentation runs uncached: tested on its own)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "sweep=transfer",
                "data=directory",
                f"data.path={photos}",
                "data.image_size=48",
                "model.input_size=48",
                "train.epochs=3",
                "train.batch_size=32",
                "model.fine_tune.head_epochs=1",
                "model.fine_tune.unfreeze_layers=10",
                *NO_AUGMENTATION,
                f"output_dir={tmp_path / 'runs'}",
                *overrides,
            ],
        )


def whole_vs_cached(cfg: DictConfig, data, model) -> tuple[float, float]:
    """Max abs difference of the whole model's validation probabilities from the phase-1 and
    phase-2 sub-models fed from the cache (which `CachedPhases` now loads, all hits)."""
    whole = model.predict(data.val.x.astype("float32"), verbose=0)
    phases = CachedPhases(cfg, data, model, trial_settings(cfg))
    assert phases.report.misses == 0
    diffs = []
    for phase, build in ((1, lambda m, c: head_model(m)), (2, upper_model)):
        cut = phases.cuts[phase]
        cached = build(model, cut).predict(phases.features[("val", cut.name, None)], verbose=0)
        diffs.append(float(np.abs(cached - whole).max()))
    return diffs[0], diffs[1]


def entries(cfg: DictConfig) -> list[Path]:
    return sorted(cache_settings(cfg).folder.glob(f"*{SUFFIX}"))


def test_cached_trial_equals_uncached_and_whole_model_equals_cached(tmp_path, photos, monkeypatch):
    make_keras_home(tmp_path, monkeypatch)
    cfg = config(tmp_path, photos)
    data = load_data(cfg.data, int(cfg.seed))
    cached = run_trial(cfg, data)
    assert cached.feature_cache.used and cached.feature_cache.reason == "cached"
    assert (cached.feature_cache.hits, cached.feature_cache.misses) == (0, 4)  # 2 splits x 2 cuts
    assert len(entries(cfg)) == 4
    uncached = run_trial(config(tmp_path, photos, "model.feature_cache.enabled=false"), data)
    assert not uncached.feature_cache.used
    assert uncached.feature_cache.reason == "uncached: disabled"
    one_image = 1.0 / len(data.val)
    gap = abs(cached.metrics["val_accuracy"] - uncached.metrics["val_accuracy"])
    assert gap <= one_image + 1e-9, (cached.metrics, uncached.metrics)
    assert cached.history["phase"] == uncached.history["phase"] == [1, 2, 2]
    assert cached.history["trainable_params"] == uncached.history["trainable_params"]
    # The phase-2 cut of MobileNet (a chain) is the input of the first unfrozen layer, and the
    # cache key does not depend on which layers the phases left trainable: all hits.
    backbone = cached.model.get_layer("backbone")
    phases = CachedPhases(cfg, data, cached.model, trial_settings(cfg))
    assert (phases.report.hits, phases.report.misses) == (4, 0)
    assert phases.cuts[2].after == first_trainable(backbone) - 1
    head_diff, upper_diff = whole_vs_cached(cfg, data, cached.model)
    assert head_diff > 1e-3  # phase 2 changed the backbone above the head's cut ...
    assert upper_diff <= TOLERANCE  # ... and the whole model is what phase 2 trained


def test_augmentation_without_copies_runs_uncached(tmp_path, photos, monkeypatch):
    make_keras_home(tmp_path, monkeypatch)
    cfg = config(
        tmp_path,
        photos,
        "data.augmentation.preset=null",
        "data.augmentation.flip=horizontal",
        "model.feature_cache.augmented_copies=0",
        "train.epochs=1",
    )
    result = run_trial(cfg, load_data(cfg.data, int(cfg.seed)))
    assert not result.feature_cache.used
    assert "augmentation" in result.feature_cache.reason
    assert entries(cfg) == []


def test_augmented_phase_1_cycles_over_k_cached_copies(tmp_path, photos, monkeypatch):
    """A preset's phase 1 trains on K fixed augmented copies (epoch e: copy e mod K), phase 2
    uncached; validation images are never augmented; a second trial reuses all K copies."""
    make_keras_home(tmp_path, monkeypatch)
    cfg = config(
        tmp_path,
        photos,
        "data.augmentation.preset=light",
        "model.feature_cache.augmented_copies=2",
        "model.fine_tune.head_epochs=2",
    )
    data = load_data(cfg.data, int(cfg.seed))
    first = run_trial(cfg, data)
    report = first.feature_cache
    assert report.used and report.reason == "cached: phase 1 on 2 augmented copies"
    assert (report.hits, report.misses) == (0, 3)  # train copies 0 and 1, val: the head's cut
    assert sorted(p.name.split("-")[0] for p in entries(cfg)) == ["train0", "train1", "val"]
    assert first.history["phase"] == [1, 1, 2]
    again = run_trial(cfg, data)
    assert (again.feature_cache.hits, again.feature_cache.misses) == (3, 0)

    phases = CachedPhases(cfg, data, again.model, trial_settings(cfg))
    cut = phases.cuts[1].name
    assert set(phases.cuts) == {1}  # phase 2 runs uncached, on fresh augmentation
    copies = [phases.features[("train", cut, k)] for k in range(2)]
    assert np.abs(copies[0] - copies[1]).max() > 1e-3  # two different augmented passes
    unaugmented = config(tmp_path, photos)
    plain = CachedPhases(
        unaugmented, data, again.model, trial_settings(unaugmented)
    )  # no augmentation
    np.testing.assert_array_equal(phases.features[("val", cut, None)],
                                  plain.features[("val", cut, None)])  # fmt: skip
    shorter = config(
        tmp_path,
        photos,
        "data.augmentation.preset=light",
        "model.feature_cache.augmented_copies=2",
        "model.fine_tune.head_epochs=1",
    )
    # K is capped at the phase-1 epochs
    one = CachedPhases(shorter, data, again.model, trial_settings(shorter))
    assert (one.copies, one.report.hits, one.report.misses) == (1, 2, 0)
    fit, _ = phases.trainer(1)
    steps = fit.keywords["steps_per_epoch"]
    batches = [x for x, _ in fit.args[0].take(3 * steps).as_numpy_iterator()]
    for epoch, copy in enumerate([0, 1, 0]):  # each epoch reads one copy, every image once
        seen = np.concatenate(batches[epoch * steps : (epoch + 1) * steps])
        want = copies[copy].reshape(len(copies[copy]), -1).sum(axis=1)
        np.testing.assert_allclose(
            np.sort(seen.reshape(len(seen), -1).sum(axis=1)), np.sort(want), rtol=1e-6
        )


def test_augmentation_preset_is_one_setting_not_a_second_one():
    assert [type(layer).__name__ for layer in augmentation_layers({"preset": "light"}, 0)] == [
        "RandomFlip",
        "RandomRotation",
        "RandomTranslation",
        "RandomZoom",
    ]
    assert augmentation_layers({"preset": "none", "flip": "none", "zoom": 0.0}, 0) == []
    with pytest.raises(UserInputError, match="preset=light and data.augmentation.zoom"):
        augmentation_layers({"preset": "light", "zoom": 0.3}, 0)
    with pytest.raises(UserInputError, match="must be one of none, flip, light"):
        check_values(OmegaConf.create({"data": {"augmentation": {"preset": "heavy"}}}), [])


def perturbed_weights(source: Path, target: Path) -> Path:
    """A copy of the ImageNet file with one kernel of the last block changed."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as file:
        names: list[str] = []
        file.visit(lambda name: names.append(name) if "conv_pw_13/" in name else None)
        kernel = next(n for n in names if n.endswith("kernel:0"))
        file[kernel][...] = file[kernel][...] * 1.5
    return target


def test_entries_reused_across_invocations_and_rebuilt_on_new_weights_or_data(
    tmp_path, photos, monkeypatch
):
    home = make_keras_home(tmp_path, monkeypatch)
    cfg = config(tmp_path, photos, "train.epochs=2")
    data = load_data(cfg.data, int(cfg.seed))
    first = run_trial(cfg, data)
    assert (first.feature_cache.hits, first.feature_cache.misses) == (0, 4)
    built = {path.name: path.read_bytes() for path in entries(cfg)}
    again = run_trial(cfg, load_data(cfg.data, int(cfg.seed)))  # a second invocation
    assert (again.feature_cache.hits, again.feature_cache.misses) == (4, 0)
    assert again.metrics == first.metrics
    assert {p.name: p.read_bytes() for p in entries(cfg)} == built  # read, not rewritten

    other = perturbed_weights(home / "models" / WEIGHTS_FILE, tmp_path / "changed.h5")
    new_weights = run_trial(
        config(tmp_path, photos, "train.epochs=2", f"model.weights={other}"), data
    )
    assert (new_weights.feature_cache.hits, new_weights.feature_cache.misses) == (0, 4)
    assert len(entries(cfg)) == 8

    victim = next((photos / "3").iterdir())
    victim.unlink()  # the data changed: one photo fewer
    fewer = load_data(cfg.data, int(cfg.seed))
    assert fewer.fingerprint() != data.fingerprint()
    changed = run_trial(cfg, fewer)
    assert (changed.feature_cache.hits, changed.feature_cache.misses) == (0, 4)


def test_corrupt_or_partial_entries_are_rebuilt_never_trained_on(tmp_path, photos, monkeypatch):
    make_keras_home(tmp_path, monkeypatch)
    cfg = config(tmp_path, photos, "train.epochs=2")
    data = load_data(cfg.data, int(cfg.seed))
    first = run_trial(cfg, data)
    good = {path.name: path.read_bytes() for path in entries(cfg)}
    paths = entries(cfg)
    partial = paths[0].read_bytes()
    paths[0].write_bytes(partial[: len(partial) // 2])  # a writer killed half-way
    flipped = bytearray(paths[1].read_bytes())
    flipped[-100] ^= 0xFF  # one damaged byte in the payload
    paths[1].write_bytes(bytes(flipped))
    again = run_trial(cfg, data)
    report = again.feature_cache
    assert (report.corrupt, report.misses, report.hits) == (2, 2, 2)
    assert {path.name: path.read_bytes() for path in entries(cfg)} == good  # rebuilt exactly
    assert again.metrics == first.metrics  # trained on the rebuilt activations, as the first


@pytest.mark.slow
def test_phase_two_from_a_residual_cut_of_mobilenet_v2(tmp_path, photos):
    overrides = (
        "model.backbone=mobilenet_v2",
        "model.alpha=0.35",
        "model.weights=null",
        "data.image_size=32",
        "model.input_size=32",
        "model.fine_tune.unfreeze_layers=8",  # from block_14_project: inside a residual block
    )
    cfg = config(tmp_path, photos, *overrides)
    data = load_data(cfg.data, int(cfg.seed))
    cached = run_trial(cfg, data)
    assert cached.feature_cache.used
    backbone = cached.model.get_layer("backbone")
    phases = CachedPhases(cfg, data, cached.model, trial_settings(cfg))
    first_open = first_trainable(backbone)
    cut = phases.cuts[2]
    assert backbone.layers[first_open].name == "block_14_project"
    # The input of the first unfrozen layer is no cut (block 14's shortcut bypasses it): the cut
    # is the output of block 13, which feeds both block 14's branch and its shortcut.
    assert first_open - 1 not in {c.after for c in single_tensor_cuts(backbone)}
    assert cut.name == "block_13_project_BN" and cut.after < first_open - 1
    uncached = run_trial(
        config(tmp_path, photos, *overrides, "model.feature_cache.enabled=false"), data
    )
    gap = abs(cached.metrics["val_accuracy"] - uncached.metrics["val_accuracy"])
    assert gap <= 1.0 / len(data.val) + 1e-9, (cached.metrics, uncached.metrics)
    _, upper_diff = whole_vs_cached(cfg, data, cached.model)
    assert upper_diff <= TOLERANCE


def test_split_digest_sees_content_not_the_loaders_fingerprint():
    """The final retrain swaps train for train + validation in a copy that keeps the loader's
    fingerprint; the entry key must still change (and must not for an equal copy)."""
    x = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    y = np.array([0, 1, 0, 1])
    train = Split(x, y)
    assert split_digest(Split(x.copy(), y.copy())) == split_digest(train)
    merged = Split(np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]))
    assert split_digest(merged) != split_digest(train)
    assert split_digest(Split(x, y[::-1].copy())) != split_digest(train)


# The store on its own: verified reads, atomic writes, least-recently-used eviction.


def test_store_rejects_truncated_foreign_and_altered_entries(tmp_path):
    store = FeatureStore(tmp_path, max_bytes=10**9)
    array = np.arange(600, dtype=np.float32).reshape(20, 30)
    store.save("a", array)
    np.testing.assert_array_equal(store.load("a"), array)
    raw = store.path("a").read_bytes()
    store.path("a").write_bytes(raw[:-1])
    assert store.load("a") is None and not store.path("a").exists()
    store.path("b").write_bytes(raw)  # a's bytes under b's name
    assert store.load("b") is None
    assert store.corrupt == ["a", "b"]
    assert store.load("missing") is None


def test_store_evicts_least_recently_used_beyond_its_limit(tmp_path):
    array = np.zeros(1000, dtype=np.float32)  # 4,000 bytes + header
    store = FeatureStore(tmp_path, max_bytes=9_000)
    store.save("old", array)
    store.save("used", array)
    import os

    os.utime(store.path("old"), (1, 1))
    os.utime(store.path("used"), (2, 2))
    assert store.load("used") is not None  # a hit makes it the most recently used
    store.save("new", array)
    assert not store.path("old").exists()
    assert store.path("used").exists() and store.path("new").exists()


def _write_many(folder: str, seed: int) -> None:
    store = FeatureStore(Path(folder), max_bytes=10**9)
    for _ in range(20):
        store.save("shared", np.full((256, 64), 7, dtype=np.float32))


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), i)) for i in range(2)]
    for worker in workers:
        worker.start()
    reader = FeatureStore(tmp_path, max_bytes=10**9)
    seen = 0
    while any(worker.is_alive() for worker in workers):
        array = reader.load("shared")
        if array is not None:
            seen += 1
            assert (array == 7).all()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert reader.corrupt == []
    assert (reader.load("shared") == 7).all()
    assert [p.name for p in tmp_path.iterdir()] == ["shared.feat"]  # no temporary files left


@pytest.mark.parametrize(
    "override",
    ["model.feature_cache.max_gb=0", "model.feature_cache.enabled=maybe"],
)
def test_bad_cache_settings_are_user_errors(tmp_path, photos, override):
    cfg = config(tmp_path, photos, override)
    with pytest.raises(UserInputError, match="model.feature_cache"):
        check_values(cfg, [])  # rows of the config table


def test_cli_bad_cache_setting_is_one_paragraph_and_exit_2(tmp_path, monkeypatch):
    home = make_keras_home(tmp_path, monkeypatch)
    done = run_cli(
        "search.run",
        "sweep=transfer",
        f"keras_home={home}",
        "model.feature_cache.max_gb=-1",
        f"output_dir={tmp_path / 'runs'}",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "model.feature_cache.max_gb=-1" in done.stderr
    assert not (tmp_path / "runs" / "feature_cache").exists()


def test_the_retrainings_train_plus_val_reads_the_trials_entries(tmp_path, photos, monkeypatch):
    """The retraining's split concatenates train and validation: its activations are those
    entries joined (all hits, nothing built), equal to building them afresh; in a worker too,
    where the grown split is opened from the trials' shared pixel files."""
    import keras

    from experiments.data.shared import share
    from experiments.data.splits import train_plus_val
    from experiments.models.build import build_model

    make_keras_home(tmp_path, monkeypatch)
    cfg = config(tmp_path, photos, "train.epochs=2")
    data = load_data(cfg.data, int(cfg.seed))
    trial = run_trial(cfg, data)
    assert (trial.feature_cache.hits, trial.feature_cache.misses) == (0, 4)
    grown = train_plus_val(data)
    settings = trial_settings(cfg)
    keras.backend.clear_session()  # as a trial starts: the layers' names are in the key
    fresh_model = build_model(cfg.model, data.image_shape, data.num_classes)
    joined = CachedPhases(cfg, grown, fresh_model, settings)
    assert (joined.report.hits, joined.report.misses) == (4, 0)  # train + val from 2 x 2 entries
    assert joined.report.build_seconds == 0.0
    elsewhere = config(tmp_path, photos, "train.epochs=2", f"model.feature_cache.dir={tmp_path}/b")
    built = CachedPhases(elsewhere, grown, fresh_model, trial_settings(elsewhere))
    assert built.report.misses == 4  # a cache without the trials' entries builds them
    for cut in {c.name for c in joined.cuts.values()}:
        ours, fresh = joined.features[("train", cut, None)], built.features[("train", cut, None)]
        assert ours.shape == fresh.shape and ours.shape[0] == len(data.train) + len(data.val)
        np.testing.assert_allclose(ours, fresh, atol=1e-4)
    # In a worker: the grown split opened from the shared files keys its parts as trials do.
    shared = share(data, tmp_path / "shared")
    opened, grown_opened = shared.open(), shared.derived(data, grown=True).open()
    parts = grown_opened.train.parts
    assert [split_digest(p) for p in parts] == [
        split_digest(opened.train),
        split_digest(opened.val),
    ]
