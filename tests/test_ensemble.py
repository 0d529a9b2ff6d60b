"""`final.ensemble`: the shipped model averages the models the sweep trained for its best configs.
Real training (tiny CNN on real digits), a real MLflow store, registry and Optuna storage."""

from __future__ import annotations

import html
from pathlib import Path

import mlflow
import numpy as np
import pytest
from test_sweep import runs_of

import experiments.training.trial as trial_module
from experiments.data.load import load_data
from experiments.errors import UserInputError
from experiments.models.ensemble import average_model
from experiments.serving.export import export_model
from experiments.serving.predictors import load_predictor
from search.checks import check_config
from search.final.ensemble import Member, gather, ranked
from search.sweep import sweep


def test_the_shipped_model_averages_the_retrained_reevaluated_and_trial_models(
    make_config, monkeypatch, capsys
) -> None:
    """Two contenders, each re-trained once, and the crowned one retrained on train +
    validation: 5 models in hand, 4 shipped. The members are the retrained model first, then
    the others by validation score; the test accuracy and the registered champion are the
    average of exactly those members."""
    retrained: dict[tuple, object] = {}  # (what, learning rate) -> model trained after the search
    original = trial_module.run_trial

    def kept(cfg, data, callbacks=None):
        result = original(cfg, data, callbacks)
        if not callbacks:  # the final stage's trainings (the search's log epochs to MLflow)
            on_val = len(data.train) > len(load_data(cfg.data, int(cfg.seed)).train)
            what = "retrained" if on_val else f"seed {cfg.seed}"
            retrained[what, float(cfg.optimizer.learning_rate)] = result.model
        return result

    monkeypatch.setattr(trial_module, "run_trial", kept)
    cfg = make_config(
        "search.n_trials=3",
        "final.top_k=2",
        "final.seeds=1",
        "final.contender_se=null",
        "final.retrain=true",
        "final.ensemble=4",
    )
    summary = sweep(cfg)
    out = capsys.readouterr().out

    (parent,) = runs_of(cfg, "sweep")
    assert summary.final is not None and summary.final.source == "ensemble"
    labels = parent.data.tags["sweeplab.final.ensemble_members"].split("; ")
    assert len(labels) == 4 and f"averages 4 models: {'; '.join(labels)}" in out
    crowned = parent.data.tags["sweeplab.final.crowned_trial"]
    assert labels[0] == f"trial {crowned} retrained on train + validation"
    scores = [float(label.rsplit(" ", 1)[1].rstrip(")")) for label in labels[1:]]
    assert scores == sorted(scores, reverse=True)  # best validation score first
    # The card: the ensemble, each member with its score, the test accuracy with its 95%
    # interval beside the best single model's.
    card = parent.data.tags["sweeplab.final.card"].splitlines()
    assert card[0] == "Shipped: the ensemble of 4 models"
    assert card[1:5] == [f"  member: {label}" for label in labels]
    assert "(Wilson); best single model 0." in card[-1]

    # Rebuild the average from the members themselves: the retrained model, the re-evaluation
    # models (by seed) and the trial models in the store (by trial number).
    trials = {int(r.data.tags["sweeplab.trial_number"]): r for r in runs_of(cfg, "trial")}

    def model_of(label: str):
        words = label.split(" (")[0].split()  # trial N [seed S | retrained on ...]
        run = trials[int(words[1])]
        rate = float(run.data.params["optimizer.learning_rate"])
        if "retrained" in words:
            return retrained["retrained", rate]
        if "seed" in words:
            return retrained[f"seed {words[-1]}", rate]
        return mlflow.keras.load_model(run.data.tags["sweeplab.model_uri"])

    data = load_data(cfg.data, int(cfg.seed))
    probabilities = np.mean([model_of(lb).predict(data.test.x, verbose=0) for lb in labels], 0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == data.test.y))
    assert summary.final.metrics["test_accuracy"] == pytest.approx(accuracy)

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    champion = mlflow.pyfunc.load_model(summary.final.registered_uri)
    served = np.stack(champion.predict(data.test.x)["probabilities"])
    np.testing.assert_allclose(served, probabilities, atol=1e-5)

    # The sweep's report says which model to ship: the average, its members, its test accuracy.
    page = (Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html").read_text()
    shipped = f"the average of 4 models: {'; '.join(labels)}; test accuracy {accuracy:.4f}"
    assert html.escape(shipped) in page


def test_without_other_models_in_hand_the_single_model_is_shipped(make_config) -> None:
    """final.ensemble=3 with no re-evaluation and no retraining: the best trial is the only
    contender, so its own model is shipped, as with final.ensemble=1."""
    cfg = make_config("search.n_trials=2", "final.ensemble=3")
    summary = sweep(cfg)
    assert summary.final is not None and summary.final.source == "trial_model"
    (parent,) = runs_of(cfg, "sweep")
    assert "sweeplab.final.ensemble_members" not in parent.data.tags


def test_keras_tuner_sweeps_ship_an_ensemble_too(make_config) -> None:
    """The final stage is the engines' own: a Keras Tuner sweep (random search) with the same
    final settings ships the average of its contenders' models."""
    cfg = make_config(
        "search=keras_tuner",
        "search.tuner=random",
        "search.n_trials=2",
        "final.top_k=2",
        "final.seeds=1",
        "final.contender_se=null",
        "final.ensemble=3",
    )
    summary = sweep(cfg)
    assert summary.final is not None and summary.final.source == "ensemble"
    (parent,) = runs_of(cfg, "sweep")
    labels = parent.data.tags["sweeplab.final.ensemble_members"].split("; ")
    assert len(labels) == 3 and "seed" in labels[0]  # the crowned config's re-trained model first


def test_a_champion_rule_limits_the_reevaluation_and_ships_its_trial_alone(
    make_config, monkeypatch, capsys
) -> None:
    """final.select judges a trial by its own metrics (here its latency). The objective's best
    (trial 0) breaks the latency limit: the re-evaluation may crown only trials the rule admits
    (it used to crown from the engine's top k by objective, trial 0 here, and ship it). An
    average of models would change the metrics, so the champion is shipped alone, said why.

    The scores and latencies are set (the trainings are real): trial 0 scores 0.9 at 100 ms,
    trial 1 0.5 at 1 ms, trial 2 0.7 at 1 ms, and a re-training scores what its config's trial
    scored, so the crown is certain."""
    import experiments.evaluation.cost as cost_module

    scores, latencies = [0.9, 0.5, 0.7], [100.0, 1.0, 1.0]
    by_rate: dict[float, float] = {}
    original, costs = trial_module.run_trial, cost_module.model_costs

    def scored(cfg, data, callbacks=None):
        result = original(cfg, data, callbacks)
        rate = float(cfg.optimizer.learning_rate)
        if callbacks:  # a search trial: the next designed score
            by_rate[rate] = scores[len(by_rate)]
        result.metrics["val_accuracy"] = by_rate[rate]
        return result

    measured: list[float] = []

    def timed(model, image, which):
        found = costs(model, image, which)
        if "latency_ms" in which:
            found["latency_ms"] = latencies[len(measured)]
            measured.append(found["latency_ms"])
        return found

    monkeypatch.setattr(trial_module, "run_trial", scored)
    monkeypatch.setattr(cost_module, "model_costs", timed)
    cfg = make_config(
        "search.n_trials=3",
        "final.top_k=2",
        "final.seeds=1",
        "final.contender_se=null",
        "final.ensemble=3",
        "final.select={maximize:val_accuracy,where:{latency_ms:{max:50}}}",
    )
    summary = sweep(cfg)
    out = capsys.readouterr().out
    assert "champion by rule (maximize val_accuracy where latency_ms <= 50): trial 2" in out

    (parent,) = runs_of(cfg, "sweep")
    trials = {int(r.data.tags["sweeplab.trial_number"]): r for r in runs_of(cfg, "trial")}
    assert [trials[n].data.metrics["latency_ms"] for n in (0, 1, 2)] == latencies
    crowned = int(parent.data.tags["sweeplab.final.crowned_trial"])
    assert crowned == 2  # the best mean the rule admits; trial 0 (0.9) is over the limit
    tested = parent.data.tags["sweeplab.final.best_run_id"]
    assert tested == trials[2].info.run_id and trials[2].data.metrics["latency_ms"] <= 50
    assert summary.final is not None and summary.final.source == "reevaluated_seed"
    assert "final.ensemble is not applied" in out


def _classifier(size: int, classes: int, seed: int, channels: int = 1):
    import keras

    keras.utils.set_random_seed(seed)
    images = keras.Input((size, size, channels))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(images))
    return keras.Model(images, keras.layers.Dense(classes, activation="softmax")(x), name="cnn")


def test_average_model_is_the_mean_of_its_members_on_real_digits(make_config, tmp_path) -> None:
    """The average is exact, and it exports like a single model (every format agrees)."""
    digits = load_data(make_config().data, 0)
    size, channels = digits.train.x.shape[1], digits.train.x.shape[3]
    members = [_classifier(size, 10, seed, channels) for seed in range(3)]
    for member in members:  # trained a little, so that they disagree for reasons, not noise
        member.compile("adam", "sparse_categorical_crossentropy")
        member.fit(digits.train.x, digits.train.y, epochs=1, verbose=0)
    expected = np.mean([m.predict(digits.test.x, verbose=0) for m in members], 0)
    ensemble = average_model(members)
    np.testing.assert_allclose(ensemble.predict(digits.test.x, verbose=0), expected, atol=1e-6)
    assert len(set(expected.argmax(axis=1))) > 1, "a constant model would make this vacuous"
    formats = ["keras", "saved_model", "tflite"]
    paths = export_model(ensemble, formats, tmp_path / "export", digits.class_names)
    for kind in formats:
        got = load_predictor(paths[kind]).predict(digits.test.x)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=kind)
    with pytest.raises(ValueError, match="at least 2"):
        average_model(members[:1])


def test_gather_passes_over_missing_and_mismatched_models(capsys) -> None:
    """The single model first; a trial without a logged model and one with another input size
    are passed over (the latter said), and the next best fills the place."""
    reference, other_size, same = (
        _classifier(8, 10, 0),
        _classifier(6, 10, 1),
        _classifier(8, 10, 2),
    )
    candidates = ranked(
        Member("single", 0, None, lambda: reference),
        [
            Member("not logged", 1, 0.9, lambda: None),
            Member("small input", 2, 0.8, lambda: other_size),
            Member("same input", 3, 0.7, lambda: same),
            Member("worst", 4, 0.1, lambda: same),
        ],
        maximize=True,
    )
    chosen = gather(candidates, 2)
    assert [m.label for m, _ in chosen] == ["single", "same input"]
    assert "small input is left out of the ensemble" in capsys.readouterr().out
    loss_ranked = ranked(
        Member("single", 0, None, lambda: reference),
        [Member("high", 1, 0.9, lambda: same), Member("low", 2, 0.2, lambda: same)],
        maximize=False,
    )
    assert [m.label for m in loss_ranked] == ["single", "low", "high"]


@pytest.mark.parametrize("value", ["0", "-2", "two", "true", "1.5"])
def test_bad_ensemble_sizes_are_refused(make_config, value) -> None:
    cfg = make_config(f"final.ensemble={value}")
    with pytest.raises(UserInputError, match=r"final\.ensemble=.* must be a whole number of 1"):
        check_config(cfg, models=False)
