"""Top-k re-evaluation before the final test: k x s re-trainings on new seeds, the best mean
crowned, the spread logged on the parent run, and the crowned config's model tested.
Real training (tiny CNN on real digits), a real MLflow store and Optuna storage."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from test_sweep import runs_of

import experiments.training.trial as trial_module
from experiments.data.load import load_data
from experiments.errors import UserInputError
from search.checks import check_config
from search.sweep import sweep
from search.trials.budget import Budget

NO_MODELS = "tracking.log_models=false"


def test_top_k_reevaluation_trains_k_times_s_and_crowns_the_best_mean(
    make_config, monkeypatch
) -> None:
    trainings: list[dict] = []
    original = trial_module.run_trial

    def counted(cfg, data, callbacks=None):
        result = original(cfg, data, callbacks)
        if callbacks:  # a search trial (MLflow's epoch logger): not a re-training
            return result
        trainings.append({"seed": int(cfg.seed), "lr": cfg.optimizer.learning_rate, "r": result})
        return result

    monkeypatch.setattr(trial_module, "run_trial", counted)
    cfg = make_config(
        "search.n_trials=3", NO_MODELS, "final.top_k=2", "final.seeds=2", "final.contender_se=null"
    )
    summary = sweep(cfg)

    assert len(trainings) == 2 * 2
    assert [t["seed"] for t in trainings] == [cfg.seed + 1, cfg.seed + 2] * 2
    study = optuna.load_study(study_name=summary.study_name, storage=cfg.search.storage)
    ranked = sorted(study.trials, key=lambda t: -t.value)[:2]

    (parent,) = runs_of(cfg, "sweep")
    client = MlflowClient(cfg.tracking.tracking_uri)
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "reevaluation.json")).read_text()
    )
    assert [c["trial"] for c in logged["candidates"]] == [t.number for t in ranked]
    for candidate, trial, pair in zip(
        logged["candidates"], ranked, (trainings[:2], trainings[2:]), strict=True
    ):
        scores = [float(t["r"].metrics["val_accuracy"]) for t in pair]
        assert candidate["scores"] == pytest.approx(scores)
        assert candidate["search_score"] == pytest.approx(trial.value)
        assert all(t["lr"] == pytest.approx(trial.params["optimizer.learning_rate"]) for t in pair)
        every = [trial.value, *scores]  # the search's training and the new seeds'
        assert candidate["mean"] == pytest.approx(statistics.fmean(every))
        assert candidate["std"] == pytest.approx(statistics.stdev(every))
        metrics = parent.data.metrics
        assert metrics[f"reeval_trial{trial.number}_mean"] == pytest.approx(candidate["mean"])
        assert metrics[f"reeval_trial{trial.number}_std"] == pytest.approx(candidate["std"])

    means = [c["mean"] for c in logged["candidates"]]
    crowned = logged["candidates"][int(np.argmax(means))]
    assert logged["crowned_trial"] == crowned["trial"]
    assert parent.data.tags["sweeplab.final.crowned_trial"] == str(crowned["trial"])
    assert summary.final.source == "reevaluated_seed"

    # The tested model is the crowned config's re-trained model with its best validation score.
    pair = trainings[:2] if crowned is logged["candidates"][0] else trainings[2:]
    chosen = max(pair, key=lambda t: t["r"].metrics["val_accuracy"])["r"].model
    data = load_data(cfg.data, int(cfg.seed))
    predicted = chosen.predict(data.test.x, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == data.test.y))
    assert summary.final.metrics["test_accuracy"] == pytest.approx(accuracy)


def test_a_contender_skipped_for_time_competes_with_its_search_score(
    make_config, monkeypatch, capsys
) -> None:
    """The budget fits the best contender's re-training, then nothing more: the second contender
    is skipped, yet competes with its search score; the crown is the best mean over every
    training, and the tested model is the crowned config's own (re-trained, or the trial's)."""
    answers = iter([True])
    monkeypatch.setattr(Budget, "fits", lambda self, seconds: next(answers, False))
    cfg = make_config(
        "search.n_trials=3", "final.top_k=2", "final.seeds=1", "final.contender_se=null"
    )
    summary = sweep(cfg)

    out = capsys.readouterr().out
    (parent,) = runs_of(cfg, "sweep")
    client = MlflowClient(cfg.tracking.tracking_uri)
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "reevaluation.json")).read_text()
    )
    first, skipped = logged["candidates"]
    assert len(first["scores"]) == 1 and skipped["scores"] == []
    assert f"re-evaluation of trial {skipped['trial']} skipped" in out
    assert first["mean"] == pytest.approx((first["search_score"] + first["scores"][0]) / 2)
    # Skipped says "skipped": no mean over its one score with a std of 0.0, in the json or as
    # metrics; it competes with its search score.
    assert skipped["skipped"] is True and skipped["mean"] is None and skipped["std"] is None
    n = skipped["trial"]
    assert f"reeval_trial{n}_std" not in parent.data.metrics
    assert f"reeval_trial{n}_mean" not in parent.data.metrics
    assert f"reeval_trial{first['trial']}_std" in parent.data.metrics
    assert parent.data.tags[f"sweeplab.final.reeval_trial{n}"] == "skipped"
    crowned = first if first["mean"] >= skipped["search_score"] else skipped
    assert logged["crowned_trial"] == crowned["trial"]
    expected = "reevaluated_seed" if crowned is first else "trial_model"
    assert summary.final is not None and summary.final.source == expected


@pytest.mark.parametrize(
    ("override", "mention"),
    [
        ("final.top_k=-1", "final.top_k=-1 must be a whole number of 0 or more"),
        ("final.seeds=0", "final.seeds=0 must be a whole number of 1 or more"),
        ("final.top_k=two", "final.top_k='two'"),
        ("final.contender_se=-1", "final.contender_se=-1 must be a number of 0 or more"),
    ],
)
def test_bad_reevaluation_settings_are_refused(make_config, override, mention) -> None:
    cfg = make_config("final.top_k=2", override)
    with pytest.raises(UserInputError, match=mention.replace("(", r"\(")):
        check_config(cfg, models=False)


def test_only_the_models_the_final_stage_may_use_are_kept(make_config, monkeypatch) -> None:
    """final.ensemble=1: of the 2 x 2 re-trained models only the crowned config's best seed
    stays in memory when the re-evaluation ends (every one was kept before); with
    final.ensemble=n, the n - 1 best-scored others beside it."""
    import gc
    import weakref

    import search.final.reevaluate as reevaluate_module

    alive: list[weakref.ref] = []
    original, train = reevaluate_module.reevaluate, trial_module.run_trial
    seen: dict[str, object] = {}

    def spied_training(cfg, data, callbacks=None):
        result = train(cfg, data, callbacks)
        if not callbacks:
            alive.append(weakref.ref(result.model))
        return result

    def spied(*args, **kwargs):
        result = original(*args, **kwargs)
        gc.collect()
        seen["alive"] = sum(ref() is not None for ref in alive)
        seen["trained"] = [(m.trial, m.score) for m in result.trained]
        seen["model"] = result.model
        return result

    monkeypatch.setattr(trial_module, "run_trial", spied_training)
    monkeypatch.setattr(reevaluate_module, "reevaluate", spied)
    cfg = make_config(
        "search.n_trials=2", NO_MODELS, "final.top_k=2", "final.seeds=2",
        "final.contender_se=null", "final.register=false",
    )  # fmt: skip
    summary = sweep(cfg)
    assert len(alive) == 4
    (parent,) = runs_of(cfg, "sweep")
    crowned = int(parent.data.tags["sweeplab.final.crowned_trial"])
    ((trial, _),) = seen["trained"]
    assert trial == crowned and summary.final.source == "reevaluated_seed"
    assert seen["alive"] == 1  # the tested model only


def test_needed_keeps_the_crowned_best_seed_and_the_ensembles_best_others() -> None:
    from search.final.ensemble import Member
    from search.final.reevaluate import Candidate, models_needed
    from search.trials.types import Best

    def member(trial: int, score: float) -> Member:
        return Member(f"trial {trial} {score}", trial, score, lambda: None)

    a, b, c = (Candidate(Best(v, n, {}, f"run{n}")) for n, v in ((0, 0.9), (1, 0.8), (2, 0.85)))
    a.scores, b.scores, c.scores = [0.7, 0.6], [0.85, 0.5], [0.95, 0.4]
    trained = [member(0, 0.7), member(0, 0.6), member(1, 0.85), member(1, 0.5)]
    trained += [member(2, 0.95), member(2, 0.4)]
    images = {0: "digits", 1: "digits", 2: "digits-flipped"}

    def labels(kept):
        return [m.label for m in kept]

    # While trial 1 is re-evaluated: its best so far and the leader's (trial 0's) best seed.
    assert labels(models_needed(trained[:4], [a, b], 1, True, images)) == [
        "trial 0 0.7",
        "trial 1 0.85",
    ]
    # Crowned: its best seed alone; with final.ensemble=3, the 2 best of its images beside it.
    assert labels(models_needed(trained, [b], 1, True, images, crowned=b)) == ["trial 1 0.85"]
    kept = models_needed(trained, [b], 3, True, images, crowned=b)
    assert labels(kept) == ["trial 0 0.7", "trial 1 0.85"]  # trial 2 reads other images
    kept = models_needed(trained, [a], 2, True, images, crowned=a)
    assert labels(kept) == ["trial 0 0.7", "trial 1 0.85"]
