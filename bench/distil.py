"""Distillation (issue 26): does one student keep the ensemble's gain at one model's latency?

    python bench/distil.py [--sets sign cifar] [--per-class N] [--size 96] [--epochs 10]
                           [--head-epochs 6] [--settings 2:0.5 4:0.5 8:0.5 4:0.25 8:0.25]
                           [--student-seeds 45 46] [--quick]

On each set (sign-language-digits, every photo; cifar10-test, 300 per class, as
bench/anytime.py; or `--per-class` per class; seed 42's split, as bench/ensemble.py), MobileNet 0.25 ImageNet at `--size` px (the transfer model's default input
size, conf/model/transfer.yaml) is trained as `sweep=transfer`'s base config (no augmentation,
label smoothing 0.1, two phases on cached activations, its 10 epochs of which 6 head) at member
seeds 42, 43, 44, on the training split. Their average (experiments/models/ensemble.py) is the
teacher. At each student seed the same config is trained plainly (the paired control: one more
single model) and as a student of the average for each `T:alpha` setting
(experiments/training/distil.py). Everything is tested on the test split once.

Reported: test accuracy of each member, their mean, the ensemble, the plain models and each
student (mean over the student seeds); the share of the ensemble's gain over the members' mean
that a student keeps (target: at least half); and milliseconds per image at batch 1 (median of
single-image calls of a compiled forward pass, after warm-up) of one member, the ensemble and
the student (target: student at most 1.2x one member). A setting `T:alpha:E` trains its
students E epochs instead of `--epochs` (the extra ones fine-tune; the head's stay `--head-epochs`).

--quick: 12 images per class, 3 epochs, one setting: a smoke run, not figures.
Everything is written to a temporary folder; results go to bench/results/distil.json, one entry
per set.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED_DATA, parse_args, print_table, verdict, write_result
from transfer_vs_recipe import SETS, compose, keras_home, require_sets

SPLIT_SEED = 42
MEMBER_SEEDS = (42, 43, 44)
STUDENT_SEEDS = [45, 46]
ROUNDS, CALLS_PER_ROUND = 10, 20  # batch-1 timing: 200 single images per model, interleaved


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def batch1_ms(models: dict[str, Any], x: np.ndarray, rounds: int = ROUNDS) -> dict[str, float]:
    """Median milliseconds of one image through each model's compiled forward pass (no Keras
    predict loop, whose per-call overhead would hide the model's own cost). The models take
    turns, `rounds` rounds of `CALLS_PER_ROUND` images each, so that load from other processes
    on a shared machine falls on all of them alike rather than on whichever ran last."""
    import tensorflow as tf

    images = [tf.constant(x[i : i + 1], tf.float32) for i in range(min(len(x), 20))]
    forwards = {}
    for name, model in models.items():
        forwards[name] = tf.function(lambda image, m=model: m(image, training=False))
        for image in images[:5]:
            forwards[name](image).numpy()  # trace and warm up
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds):
        for name, forward in forwards.items():
            for i in range(CALLS_PER_ROUND):
                started = time.perf_counter()
                forward(images[(round_ + i) % len(images)]).numpy()
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sets", {"nargs": "+", "choices": list(SETS), "default": ["sign", "cifar"]}),
            ("--per-class", {"type": int, "default": None}),
            ("--size", {"type": int, "default": 96}),
            ("--epochs", {"type": int, "default": 10}),
            ("--head-epochs", {"type": int, "default": 6}),
            (
                "--settings",
                {"nargs": "+", "default": ["2:0.5", "4:0.5", "8:0.5", "4:0.25", "8:0.25"]},
            ),
            ("--student-seeds", {"nargs": "+", "type": int, "default": STUDENT_SEEDS}),
        ],
    )
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings]
    if args.quick:
        args.per_class, args.epochs, args.head_epochs, settings = 12, 3, 2, settings[:1]
        args.student_seeds = args.student_seeds[:1]
    require_sets(args.sets, "distil")
    results: dict[str, Any] = {}
    for name in args.sets:  # written after each set: a run cut short keeps what it measured
        results[name] = one_set(name, args, settings)
        write_result("distil", {"sets": results}, args.quick)


def one_set(name: str, args: Any, settings: list[tuple[float, ...]]) -> dict[str, Any]:
    """Members, ensemble, plain models and students on set `name`: its table and figures."""
    folder, set_per_class = SETS[name]
    per_class = args.per_class or set_per_class
    epochs, head = args.epochs, args.head_epochs
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    from omegaconf import open_dict

    from experiments.data.load import load_data
    from experiments.models.ensemble import average_model
    from experiments.training.distil import distil
    from experiments.training.trial import run_trial
    from search.sweep import prepare

    with tempfile.TemporaryDirectory(prefix="distil-") as tmp:
        overrides = [
            "sweep=transfer",
            "data=directory",
            f"data.path={SHARED_DATA / folder}",
            *([f"data.max_per_class={per_class}"] if per_class else []),
            f"data.image_size={args.size}",
            f"model.input_size={args.size}",
            f"train.epochs={epochs}",
            f"model.fine_tune.head_epochs={head}",
            f"keras_home={keras_home(Path(tmp))}",
            f"output_dir={Path(tmp) / 'runs'}",
            f"seed={SPLIT_SEED}",
        ]
        cfg = prepare(compose(overrides))
        data = load_data(cfg.data, SPLIT_SEED)
        print(f"split {len(data.train)} / {len(data.val)} / {len(data.test)}", flush=True)

        def seeded(seed: int):
            c = cfg.copy()
            with open_dict(c):
                c.seed = seed  # initialization, shuffling; not the split (data is loaded once)
            return c

        def test(model) -> float:
            return accuracy(model.predict(data.test.x, verbose=0), data.test.y)

        rows: dict[str, dict[str, Any]] = {}
        members = []
        for seed in MEMBER_SEEDS:
            result = run_trial(seeded(seed), data)
            members.append(result.model)
            rows[f"member {seed}"] = {"test": test(result.model), "seconds": result.seconds}
            print(f"  member {seed}: test {rows[f'member {seed}']['test']:.4f}", flush=True)
        teacher = average_model(members)
        ensemble_test = test(teacher)
        train_teacher = accuracy(teacher.predict(data.train.x, verbose=0), data.train.y)
        member_mean = statistics.fmean(rows[f"member {s}"]["test"] for s in MEMBER_SEEDS)
        gain = ensemble_test - member_mean

        def kept(score: float) -> float:
            """The share of the ensemble's gain over the members' mean that `score` keeps."""
            return (score - member_mean) / gain if gain > 0 else float("nan")

        plain_tests = []
        for seed in args.student_seeds:
            plain = run_trial(seeded(seed), data)
            rows[f"plain {seed}"] = {"test": test(plain.model), "seconds": plain.seconds}
            plain_tests.append(rows[f"plain {seed}"]["test"])
        plain_mean = statistics.fmean(plain_tests)
        print(f"  ensemble {ensemble_test:.4f}; plain {plain_tests}", flush=True)

        students: dict[str, dict[str, Any]] = {}
        student = None
        for temperature, alpha, *more in settings:
            student_epochs = int(more[0]) if more else epochs
            tests, vals, seconds = [], [], []
            for seed in args.student_seeds:
                student_cfg = seeded(seed)
                with open_dict(student_cfg):
                    student_cfg.train.epochs = student_epochs  # the fine-tuning phase grows
                result = distil(student_cfg, data, teacher, temperature=temperature, alpha=alpha)
                tests.append(test(result.model))
                vals.append(result.metrics["val_accuracy"])
                seconds.append(result.seconds)
                student = student or result.model  # one of them: they share the architecture
            score = statistics.fmean(tests)
            label = f"T={temperature:g} alpha={alpha:g}" + (
                f" {student_epochs} epochs" if more else ""
            )
            students[label] = {
                "temperature": temperature,
                "alpha": alpha,
                "epochs": student_epochs,
                "test": score,
                "tests": tests,
                "vals": vals,
                "gain_kept": kept(score),
                "seconds": statistics.fmean(seconds),
            }
            print(f"  student {label}: test {tests}", flush=True)

        latency = batch1_ms(
            {"member_ms": members[0], "ensemble_ms": teacher, "student_ms": student}, data.test.x
        )
    single_ms, ensemble_ms, student_ms = latency.values()
    print_table(
        f"{folder} {per_class or 'all'}/class, {args.size} px, {epochs} epochs ({head} head): test",
        ["model", "test", "gain kept", "half kept", "seconds"],
        [[name, r["test"], "", "", r["seconds"]] for name, r in rows.items()]
        + [
            ["members' mean", member_mean, 0.0, "", ""],
            ["ensemble of 3", ensemble_test, 1.0, "", ""],
            ["plain models' mean", plain_mean, kept(plain_mean), "", ""],
        ]
        + [
            [
                f"student {name} (mean)",
                r["test"],
                r["gain_kept"],
                verdict(r["gain_kept"] >= 0.5),
                r["seconds"],
            ]
            for name, r in students.items()
        ],
    )
    ratio = student_ms / single_ms
    print(
        f"batch-1 latency: member {single_ms:.2f} ms, ensemble {ensemble_ms:.2f} ms "
        f"({ensemble_ms / single_ms:.2f}x), student {student_ms:.2f} ms ({ratio:.2f}x: "
        f"{verdict(ratio <= 1.2)} <= 1.2x); the teacher's accuracy on its own training images "
        f"{train_teacher:.4f}"
    )
    return {
        "data": folder,
        "per_class": per_class,
        "split": [len(data.train), len(data.val), len(data.test)],
        "size": args.size,
        "epochs": epochs,
        "head_epochs": head,
        "member_seeds": list(MEMBER_SEEDS),
        "student_seeds": args.student_seeds,
        "plain_mean_test": plain_mean,
        "models": rows,
        "members_mean_test": member_mean,
        "ensemble_test": ensemble_test,
        "teacher_train_accuracy": train_teacher,
        "students": students,
        "latency_batch1": latency,
        "student_latency_ratio": ratio,
    }


if __name__ == "__main__":
    main()
