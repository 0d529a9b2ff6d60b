"""Distillation (experiments/training/distil.py): the loss by hand, and a student of real models.

The student tests train real models: tiny CNN trials on the embedded digits, and a transfer
config (MobileNet 0.25, real ImageNet weights) on real sign-language photos through both the
feature cache and the uncached path.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import open_dict
from transfer_helpers import (
    copy_sign_language_subsample,
    make_keras_home,
    offline,  # noqa: F401  (a fixture, used by name)
    transfer_config,
)

from experiments.data.load import load_data
from experiments.errors import UserInputError
from experiments.models.ensemble import average_model
from experiments.models.losses import DistillationLoss, DistilledAccuracy, training_loss
from experiments.training.distil import distil, distil_config, soft_targets
from experiments.training.trial import run_trial

LABELS = np.array([0, 2, 1])
STUDENT = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], dtype=np.float32)
TEACHER = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.05, 0.9, 0.05]], dtype=np.float32)


def packed(labels: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """[label, teacher probabilities] rows, as `Split.targets` feeds them."""
    return np.concatenate([labels[:, None], teacher], axis=1).astype(np.float32)


def softened(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), written out: p^(1/T) renormalized."""
    q = p ** (1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def by_hand(alpha: float, temperature: float, smoothing: float = 0.0) -> float:
    """alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T), mean over the rows."""
    one_hot = np.eye(3)[LABELS] * (1 - smoothing) + smoothing / 3
    ce = -(one_hot * np.log(STUDENT)).sum(axis=1)
    t, s = softened(TEACHER, temperature), softened(STUDENT, temperature)
    kl = (t * np.log(t / s)).sum(axis=1)
    return float(np.mean(alpha * ce + (1 - alpha) * temperature**2 * kl))


def loss_value(alpha: float, temperature: float, smoothing: float = 0.0) -> float:
    loss = DistillationLoss(temperature, alpha, smoothing)
    return float(loss(packed(LABELS, TEACHER), STUDENT))


def test_alpha_one_is_plain_cross_entropy_of_the_labels() -> None:
    expected = -np.mean(np.log(STUDENT[np.arange(3), LABELS]))
    plain = keras.losses.SparseCategoricalCrossentropy()(LABELS, STUDENT)
    assert loss_value(1.0, 4.0) == pytest.approx(expected, rel=1e-5)
    assert loss_value(1.0, 4.0) == pytest.approx(float(plain), rel=1e-5)
    smoothed = training_loss(0.1)(LABELS, STUDENT)
    assert loss_value(1.0, 2.0, smoothing=0.1) == pytest.approx(float(smoothed), rel=1e-5)


@pytest.mark.parametrize(("alpha", "temperature"), [(0.0, 1.0), (0.0, 2.0), (0.5, 4.0)])
def test_the_loss_equals_the_hand_computed_value(alpha: float, temperature: float) -> None:
    assert loss_value(alpha, temperature) == pytest.approx(by_hand(alpha, temperature), rel=1e-4)
    assert loss_value(alpha, temperature, 0.1) == pytest.approx(
        by_hand(alpha, temperature, 0.1), rel=1e-4
    )


def test_temperature_scaling_softens_both_sides_and_scales_by_t_squared() -> None:
    """At T=1 the soft term is KL(teacher || student) itself; at T the softened one times T^2;
    a student equal to its teacher has no soft loss at any T."""
    kl_1 = float(np.mean((TEACHER * np.log(TEACHER / STUDENT)).sum(axis=1)))
    assert loss_value(0.0, 1.0) == pytest.approx(kl_1, rel=1e-4)
    t4, s4 = softened(TEACHER, 4.0), softened(STUDENT, 4.0)
    kl_4 = float(np.mean((t4 * np.log(t4 / s4)).sum(axis=1)))
    assert loss_value(0.0, 4.0) == pytest.approx(16 * kl_4, rel=1e-4)
    assert loss_value(0.0, 4.0) != pytest.approx(loss_value(0.0, 1.0), rel=1e-2)
    same = DistillationLoss(3.0, 0.0)(packed(LABELS, STUDENT), STUDENT)
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_distilled_accuracy_reads_the_label_column() -> None:
    metric = DistilledAccuracy()
    metric.update_state(packed(LABELS, TEACHER), STUDENT)  # argmax 0, 2, 1: all right
    assert metric.name == "accuracy" and float(metric.result()) == 1.0
    metric.reset_state()
    metric.update_state(packed(np.array([1, 2, 0]), TEACHER), STUDENT)
    assert float(metric.result()) == pytest.approx(1 / 3)


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_bad_settings_are_refused(make_config, temperature: float, alpha: float) -> None:
    with pytest.raises(UserInputError, match=r"train\.distil\."):
        distil_config(make_config(), temperature, alpha)


def test_a_student_of_three_real_models_is_no_worse_than_the_weakest(make_config) -> None:
    """Three CNN trials (seeds 0-2) on the real digits, averaged; a student of the same config
    (seed 3) trained against the average reaches at least the weakest member's validation
    accuracy, and its reported val_accuracy is the model's own accuracy on the true labels."""
    cfg = make_config("train.epochs=4")
    data = load_data(cfg.data, int(cfg.seed))
    members = []
    for seed in range(3):
        with open_dict(cfg):
            cfg.seed = seed
        members.append(run_trial(cfg, data))
    weakest = min(m.metrics["val_accuracy"] for m in members)
    teacher = average_model([m.model for m in members])
    with open_dict(cfg):
        cfg.seed = 3
    student = distil(cfg, data, teacher, temperature=2.0, alpha=0.5)

    own = float(np.mean(student.model.predict(data.val.x, verbose=0).argmax(1) == data.val.y))
    assert student.metrics["val_accuracy"] == pytest.approx(own, abs=1e-6)
    assert student.metrics["val_accuracy"] >= weakest, (student.metrics, weakest)
    assert cfg.train.get("distil") is None  # the caller's config is left as it was
    assert student.model.output_shape == members[0].model.output_shape  # one plain model
    assert student.model.count_params() == members[0].model.count_params()


def test_soft_targets_refuse_a_teacher_that_returns_logits(make_config) -> None:
    cfg = make_config()
    data = load_data(cfg.data, int(cfg.seed))
    images = keras.Input(data.image_shape)
    logits = keras.layers.Dense(data.num_classes)(keras.layers.Flatten()(images))
    with pytest.raises(ValueError, match="class probabilities"):
        soft_targets(data, keras.Model(images, logits))


def test_run_trial_refuses_distillation_without_soft_targets(make_config) -> None:
    cfg = distil_config(make_config())
    with pytest.raises(ValueError, match="soft targets"):
        run_trial(cfg, load_data(cfg.data, int(cfg.seed)))


@pytest.mark.usefixtures("offline")
def test_transfer_student_trains_the_same_through_the_feature_cache(tmp_path, monkeypatch) -> None:
    """A two-phase transfer student on real photos: its soft targets travel with the cached
    activations as with the images (validation accuracy within one image of the uncached run,
    the same epoch axis), and the teacher's probabilities are read: alpha=0 (teacher only) with
    a teacher that always says class 0 drives the student to class 0."""
    make_keras_home(tmp_path, monkeypatch)
    photos = copy_sign_language_subsample(tmp_path / "photos", per_class=8)
    base = [
        "data=directory",
        f"data.path={photos}",
        "data.image_size=32",
        "train.epochs=3",
        "model.fine_tune.head_epochs=1",
        "model.fine_tune.unfreeze_layers=4",
    ]
    cfg = transfer_config(tmp_path, *base)
    data = load_data(cfg.data, int(cfg.seed))
    images = keras.Input(data.image_shape)
    flat = keras.layers.Flatten()(images)
    teacher = keras.Model(images, keras.layers.Dense(data.num_classes, activation="softmax")(flat))
    cached = distil(cfg, data, teacher)
    uncached = distil(
        transfer_config(tmp_path, *base, "model.feature_cache.enabled=false"), data, teacher
    )
    assert cached.feature_cache.used and not uncached.feature_cache.used
    assert cached.history["phase"] == uncached.history["phase"] == [1, 2, 2]
    gap = abs(cached.metrics["val_accuracy"] - uncached.metrics["val_accuracy"])
    assert gap <= 1.0 / len(data.val) + 1e-9, (cached.metrics, uncached.metrics)

    class_zero = keras.layers.Dense(
        data.num_classes,
        activation="softmax",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([8.0] + [0.0] * (data.num_classes - 1)),
    )
    always_zero = keras.Model(images, class_zero(flat))
    with open_dict(cfg):
        cfg.optimizer.learning_rate = 0.01
    follower = distil(cfg, data, always_zero, temperature=1.0, alpha=0.0)
    predicted = follower.model.predict(data.val.x, verbose=0).argmax(axis=1)
    assert np.mean(predicted == 0) > 0.9
