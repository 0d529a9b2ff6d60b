"""The final stage after a real sweep: test report on the parent run, registry, exports, serving."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import compose_config, shared_data
from mlflow.tracking import MlflowClient
from PIL import Image

from experiments.data.load import load_data
from experiments.errors import UserInputError
from search.predict import main as predict_main
from search.sweep import sweep


@pytest.fixture(scope="module")
def final_sweep(tmp_path_factory):
    """One 2-trial sweep on digits with every export; returns (cfg, summary, client, data)."""
    out = tmp_path_factory.mktemp("final") / "runs"
    cfg = compose_config(["search.n_trials=2", "final.export=[keras,saved_model,tflite]"], out)
    summary = sweep(cfg)
    cfg.output_dir = str(out)  # as sweep() resolved it
    client = MlflowClient(summary_uri(cfg))
    return cfg, summary, client, load_data(cfg.data, int(cfg.seed))


def champion_name(data) -> str:
    """The default registered name: sweep name, data label and data fingerprint."""
    return f"sweeplab-default-digits-{data.fingerprint()[:8]}"


def summary_uri(cfg) -> str:
    return f"sqlite:///{Path(cfg.output_dir) / 'mlflow.db'}"


def best_keras_probabilities(client, summary, x: np.ndarray) -> np.ndarray:
    """What the best trial's own logged Keras model predicts."""
    uri = client.get_run(summary.best_run_id).data.tags["sweeplab.model_uri"]
    return mlflow.keras.load_model(uri).predict(x, verbose=0)


def test_parent_run_holds_test_metrics_report_and_plots(final_sweep, tmp_path) -> None:
    cfg, summary, client, data = final_sweep
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweeplab.final.source"] == "trial_model"
    assert parent.data.tags["sweeplab.final.best_run_id"] == summary.best_run_id
    metrics = parent.data.metrics
    for name in ("precision", "recall", "f1"):
        for average in ("macro", "weighted"):
            assert 0.0 <= metrics[f"test_{name}_{average}"] <= 1.0
    # The logged test accuracy is the best trial's model scored on the untouched test split.
    predicted = best_keras_probabilities(client, summary, data.test.x).argmax(axis=1)
    assert metrics["test_accuracy"] == pytest.approx(float((predicted == data.test.y).mean()))
    assert metrics["test_accuracy"] > 0.3  # 2 epochs on real digits: well above chance (0.1)

    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id, "test")}
    assert {
        "test/confusion_matrix.png",
        "test/misclassified.png",
        "test/classification_report.txt",
        "test/classification_report.json",
    } <= artifacts
    for png in ("confusion_matrix.png", "misclassified.png"):
        local = client.download_artifacts(summary.parent_run_id, f"test/{png}", str(tmp_path))
        with Image.open(local) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200
    report = json.loads(
        Path(
            client.download_artifacts(
                summary.parent_run_id, "test/classification_report.json", str(tmp_path)
            )
        ).read_text()
    )
    assert [report[c]["support"] for c in data.class_names] == list(np.bincount(data.test.y))
    confusion = json.loads(
        Path(
            client.download_artifacts(summary.parent_run_id, "test/confusion.json", str(tmp_path))
        ).read_text()
    )["confusion_matrix"]
    assert np.trace(confusion) == int((predicted == data.test.y).sum())


def test_registered_champion_loads_as_pyfunc_and_agrees_with_keras(final_sweep) -> None:
    cfg, summary, client, data = final_sweep
    name = champion_name(data)
    version = client.get_model_version_by_alias(name, "champion")
    assert json.loads(version.tags["sweeplab.class_names"]) == data.class_names
    assert version.tags["sweeplab.best_run_id"] == summary.best_run_id
    assert summary.final.registered_uri == f"models:/{name}@champion"

    mlflow.set_tracking_uri(summary_uri(cfg))
    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    (spec,) = champion.metadata.get_input_schema().inputs
    assert spec.shape == (-1, -1, -1, 1) and spec.type == np.dtype("float32")  # any size
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    example = json.loads((local / "input_example.json").read_text())
    assert np.asarray(example["inputs"] if isinstance(example, dict) else example).shape[1:] == (
        8,
        8,
        1,
    )

    x = data.test.x[:40]
    expected = best_keras_probabilities(client, summary, x)
    frame = champion.predict(x)
    assert list(frame["label"]) == [data.class_names[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(np.stack(frame["probabilities"]), expected, rtol=1e-5, atol=1e-6)
    # Raw images of another size are resized inside the champion, as they were for training.
    import tensorflow as tf

    larger = tf.image.resize(x, (20, 20), method="bilinear").numpy()
    back = tf.image.resize(larger, (8, 8), method="bilinear").numpy()
    np.testing.assert_allclose(
        np.stack(champion.predict(larger)["probabilities"]),
        best_keras_probabilities(client, summary, back),
        rtol=1e-4,
        atol=1e-5,
    )


def test_exports_are_written_and_logged(final_sweep) -> None:
    cfg, summary, client, data = final_sweep
    exports = summary.final.exports
    assert set(exports) == {"keras", "saved_model", "tflite"}
    assert exports["keras"].parent == Path(cfg.output_dir) / "exports" / summary.study_name
    assert (exports["saved_model"] / "saved_model.pb").exists()
    assert exports["tflite"].stat().st_size > 1000
    assert json.loads((exports["keras"].parent / "class_names.json").read_text()) == (
        data.class_names
    )
    logged = {a.path for a in client.list_artifacts(summary.parent_run_id, "exports")}
    assert {
        "exports/model.keras",
        "exports/saved_model",
        "exports/model.tflite",
        "exports/class_names.json",
    } <= logged


def test_predict_unknown_model_name_or_alias_fails_clearly(final_sweep, tmp_path, capsys) -> None:
    cfg, _, _, data = final_sweep
    name = champion_name(data)
    image = tmp_path / "digit.png"
    Image.fromarray(data.test.x[0, ..., 0].astype("uint8"), "L").save(image)
    store = summary_uri(cfg)
    for uri, named in (
        ("models:/sweeplab-nosuch@champion", "sweeplab-nosuch"),
        (f"models:/{name}@nosuchalias", "nosuchalias"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            predict_main([uri, str(image), "--tracking-uri", store])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert named in err and f"{name} (aliases: champion)" in err
        assert "Traceback" not in err
    # And the champion itself answers for the same image.
    predict_main([f"models:/{name}@champion", str(image), "--tracking-uri", store])
    assert capsys.readouterr().out.startswith(str(image))


def test_predict_refuses_a_missing_store_without_creating_it(tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)
    with pytest.raises(SystemExit):
        predict_main(["models:/m@champion", str(image), "--tracking-uri", f"sqlite:///{missing}"])
    assert "no MLflow store" in capsys.readouterr().err
    assert not missing.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_right_classes(final_sweep) -> None:
    cfg, summary, client, data = final_sweep
    port, bin_dir = free_port(), Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": summary_uri(cfg),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn lives there
    }
    command = [
        str(bin_dir / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{champion_name(data)}@champion",
    ]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill below reaches uvicorn too
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the model server did not come up in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        x = data.test.x[:12]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
    expected = best_keras_probabilities(client, summary, x).argmax(axis=1)
    assert [p["label"] for p in predictions] == [data.class_names[i] for i in expected]
    assert [p["class_index"] for p in predictions] == expected.tolist()


def test_retrain_on_train_and_validation_then_test(make_config, monkeypatch) -> None:
    """final.retrain trains the best config on train + validation: the final stage's training
    takes every one of those images (counted in the batches fit runs), says so on the parent run
    (sweeplab.final.train_images), and that model is the one tested."""
    import keras

    import experiments.training.trial as trial_module

    original = trial_module.run_trial
    final_trainings: list[dict] = []

    def spied(cfg, data, callbacks=None):
        if callbacks:  # a search trial (MLflow's epoch logger)
            return original(cfg, data, callbacks)
        batches: list[int] = []
        counter = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: batches.append(batch)
        )
        result = original(cfg, data, [counter])
        final_trainings.append(
            {"labels": data.train.y.copy(), "batches": len(batches), "model": result.model}
        )
        return result

    monkeypatch.setattr(trial_module, "run_trial", spied)
    cfg = make_config("search.n_trials=1", "final.retrain=true", "final.register=false")
    summary = sweep(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["sweeplab.final.source"] == "retrained_train_val"

    data = load_data(cfg.data, int(cfg.seed))
    (retrained,) = final_trainings
    seen = len(data.train) + len(data.val)
    np.testing.assert_array_equal(retrained["labels"], np.concatenate([data.train.y, data.val.y]))
    epochs, batch = int(cfg.train.epochs), int(cfg.train.batch_size)
    assert retrained["batches"] == epochs * -(-seen // batch)  # every image, every epoch
    assert retrained["batches"] > epochs * -(-len(data.train) // batch)
    assert parent.data.tags["sweeplab.final.train_images"] == str(seen)
    predicted = retrained["model"].predict(data.test.x, verbose=0).argmax(axis=1)
    assert parent.data.metrics["test_accuracy"] == pytest.approx(
        float(np.mean(predicted == data.test.y))
    )
    assert "sweeplab.final.registered_model" not in parent.data.tags
    assert client.search_registered_models() == []
    assert summary.final.registered_uri is None


def test_a_final_step_that_diverges_is_skipped_and_the_sweep_goes_on(
    make_config, monkeypatch, capsys
) -> None:
    """Every training of the final stage diverges (TrialFailed, a NaN loss): the re-evaluation
    and the retraining are each skipped with their reason, the trial's own model is tested, and
    the search's results, the champion and the report are all there. It used to end the sweep
    with a traceback after the search."""
    import experiments.training.trial as trial_module
    from experiments.errors import TrialFailed

    original = trial_module.run_trial

    def diverging(cfg, data, callbacks=None):
        if callbacks:  # a search trial: trains
            return original(cfg, data, callbacks)
        raise TrialFailed("loss became nan at epoch 1")

    monkeypatch.setattr(trial_module, "run_trial", diverging)
    cfg = make_config(
        "search.n_trials=2", "final.top_k=2", "final.seeds=1", "final.contender_se=null",
        "final.retrain=true", "final.register=false",
    )  # fmt: skip
    summary = sweep(cfg)
    out = capsys.readouterr().out

    assert summary.finished_trials == 2 and summary.best_run_id is not None
    assert "training failed (loss became nan at epoch 1)" in out
    assert "final: every re-evaluation training failed" in out
    client = MlflowClient(cfg.tracking.tracking_uri)
    best = client.get_run(summary.best_run_id).data.tags["sweeplab.trial_number"]
    assert (
        f"final: retraining trial {best}'s config on train + validation failed (loss became "
        "nan at epoch 1): skipped, the model trained on train is tested instead"
    ) in out
    assert summary.final is not None and summary.final.source == "trial_model"
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["sweeplab.best_run_id"] == summary.best_run_id
    assert "test_accuracy" in parent.data.metrics
    assert (Path(cfg.output_dir) / "reports" / f"{summary.study_name}.html").is_file()


def test_unknown_export_format_fails_before_training(make_config) -> None:
    cfg = make_config("final.export=[keras,onnx]")
    with pytest.raises(UserInputError, match=r"onnx.*keras, saved_model, tflite"):
        sweep(cfg)
    assert not (Path(cfg.output_dir) / "mlflow.db").exists()


@pytest.mark.parametrize("retrain", [False, True])
def test_final_stage_with_images_decoded_every_epoch(make_config, tmp_path, retrain) -> None:
    """data.cache=none keeps no pixels in memory (Split.x is None): the final stage still tests,
    plots, registers (with an input example) and, on request, retrains on train + validation."""
    cfg = make_config(
        "data=directory",
        f"data.path={shared_data('sign-language-digits')}",
        "data.max_per_class=12",
        "data.cache=none",
        "search.n_trials=1",
        f"final.retrain={str(retrain).lower()}",
    )
    summary = sweep(cfg)
    data = load_data(cfg.data, int(cfg.seed))
    assert data.test.x is None  # what made the final stage crash
    client = MlflowClient(cfg.tracking.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    source = "retrained_train_val" if retrain else "trial_model"
    assert parent.data.tags["sweeplab.final.source"] == source
    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id, "test")}
    assert {"test/confusion_matrix.png", "test/misclassified.png"} <= artifacts
    name, alias = summary.final.registered_uri.removeprefix("models:/").split("@")
    assert client.get_model_version_by_alias(name, alias).run_id == summary.parent_run_id
    x_test = np.stack([data.decoder(f) for f in data.test.files]).astype("float32")
    if not retrain:  # the logged test accuracy is the trial model on the decoded test images
        predicted = best_keras_probabilities(client, summary, x_test).argmax(axis=1)
        assert parent.data.metrics["test_accuracy"] == pytest.approx(
            float((predicted == data.test.y).mean())
        )
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    champion = mlflow.pyfunc.load_model(summary.final.registered_uri)
    assert list(champion.predict(x_test[:4])["label"])[0] in data.class_names


def test_champion_moves_only_to_a_better_model_of_the_same_data(make_config, capsys) -> None:
    """Four sweeps into one store: a weak first champion, a better one (registered), a weaker one
    (not registered, says so, alias stays), and the better config on other data (its own name)."""
    weak = ["space.optimizer.learning_rate.low=1e-7", "space.optimizer.learning_rate.high=2e-7"]
    common = ["search.n_trials=1", "tracking.log_models=false"]

    def run(*overrides: str):
        cfg = make_config(*common, *overrides)
        capsys.readouterr()
        summary = sweep(cfg)
        return cfg, summary, capsys.readouterr().out

    cfg, first, _ = run(*weak, "train.epochs=1")
    client = MlflowClient(cfg.tracking.tracking_uri)
    data = load_data(cfg.data, int(cfg.seed))
    name = champion_name(data)
    assert first.final.registered_uri == f"models:/{name}@champion"
    assert first.final.registered_version == "1"

    _, better, out = run()
    assert better.final.metrics["test_accuracy"] > first.final.metrics["test_accuracy"]
    assert better.final.registered_version == "2"
    assert f"final: registered: test_accuracy={better.final.metrics['test_accuracy']:.6g} " in out
    assert f"beats the champion models:/{name}@champion (version 1)" in out

    _, worse, out = run(*weak)
    assert worse.final.metrics["test_accuracy"] < better.final.metrics["test_accuracy"]
    assert worse.final.registered_uri is None
    assert "final: not registered: test_accuracy=" in out
    assert f"does not beat the champion models:/{name}@champion (version 2)" in out
    assert "the alias stays" in out
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = client.get_run(worse.parent_run_id).data.tags
    assert tags["sweeplab.final.registered"] == "False"
    assert "does not beat" in tags["sweeplab.final.not_registered_reason"]

    other_cfg, other, _ = run("seed=7")  # another split of the digits: other data
    other_name = champion_name(load_data(other_cfg.data, int(other_cfg.seed)))
    assert other_name != name and other_name.startswith("sweeplab-default-digits-")
    assert other.final.registered_uri == f"models:/{other_name}@champion"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"


def test_champion_decision_refuses_other_data_and_ties() -> None:
    from search.final.registry import decide

    where = "models:/m@champion (version 3)"
    assert decide("test_accuracy", 0.5, "abc", None, where).register
    same = {"data_fingerprint": "abc", "test_accuracy": "0.5", "version": "3"}
    assert not decide("test_accuracy", 0.5, "abc", same, where).register  # a tie is no win
    assert not decide("test_accuracy", 0.5000001, "abc", same, where).register  # as recorded
    assert decide("test_accuracy", 0.51, "abc", same, where).register
    other = decide("test_accuracy", 0.9, "xyz", same, where)
    assert not other.register
    assert "tested on other data (fingerprint abc, this sweep xyz)" in other.reason
    assert "final.registered_name=NAME" in other.reason


def test_unknown_champion_metric_fails_before_training(make_config) -> None:
    cfg = make_config("final.champion_metric=val_accuracy")
    with pytest.raises(
        UserInputError, match=r"final.champion_metric='val_accuracy'.*test_f1_macro"
    ):
        sweep(cfg)
    assert not (Path(cfg.output_dir) / "mlflow.db").exists()


def test_alias_stays_on_a_better_champion_a_concurrent_worker_registered(tmp_path) -> None:
    """Two workers finish together: the one whose alias write comes second keeps its version
    registered but leaves the alias on the other's model when that one scores at least as well."""
    from omegaconf import OmegaConf

    from search.final.registry import decide
    from tracking.champion import FinalRecorder
    from tracking.mlflow_tracker import SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(
        OmegaConf.create({"tracking_uri": uri, "experiment_name": "race", "log_models": False})
    )
    client = tracker.client
    name = "sweeplab-race"
    client.create_registered_model(name)

    def version(accuracy: str) -> str:
        tags = {"sweeplab.data_fingerprint": "f" * 16, "sweeplab.test_accuracy": accuracy}
        return client.create_model_version(name, str(tmp_path), tags=tags).version

    def wins(accuracy: float):
        return lambda now: decide("test_accuracy", accuracy, "f" * 16, now, name).register

    with tracker.sweep_run("sweep", {}, {}):
        recorder = FinalRecorder(tracker)
        first = version("0.9")  # the other worker's champion, aliased a moment ago
        assert recorder._point_alias(name, "champion", str(first), wins(0.9))
        worse = version("0.8")
        assert not recorder._point_alias(name, "champion", str(worse), wins(0.8))
        tie = version("0.9")
        assert not recorder._point_alias(name, "champion", str(tie), wins(0.9))
        assert client.get_model_version_by_alias(name, "champion").version == first
        better = version("0.95")
        assert recorder._point_alias(name, "champion", str(better), wins(0.95))
        assert client.get_model_version_by_alias(name, "champion").version == better


def test_a_best_trial_without_a_run_id_skips_the_final_stage_and_says_why(
    make_config, tmp_path, capsys
) -> None:
    """Keras Tuner keeps the trials' run ids in a file of its project; when that file is
    unreadable its trials have none, and the final stage used to be skipped without a word."""
    from search.engines.keras_tuner.engine import _read_json
    from search.final.stage import finalize
    from search.trials.types import Best

    broken = tmp_path / "sweeplab_run_ids.json"
    broken.write_text("{not json")
    assert _read_json(broken) == {}
    assert f"cannot read the trials' MLflow run ids from {broken}" in capsys.readouterr().out
    assert _read_json(tmp_path / "absent.json") == {}  # a new project: nothing to say
    assert capsys.readouterr().out == ""

    cfg = make_config("search=keras_tuner", "search.tuner=random")
    assert finalize(cfg, None, None, Best(0.9, 3, {}, None), "study") is None
    out = capsys.readouterr().out
    assert out.startswith("final stage skipped: the best trial (3) has no MLflow run id")
    assert "sweeplab_run_ids.json" in out and len(out.strip().splitlines()) == 1


def test_the_wilson_interval_and_the_card_say_what_shipped() -> None:
    from search.final.card import card_text, wilson

    low, high = wilson(0.9556, 270)
    assert (round(low, 4), round(high, 4)) == (0.924, 0.9744)
    assert wilson(1.0, 10)[1] == 1.0 and wilson(1.0, 10)[0] < 1.0
    card = card_text(
        "ensemble", ["trial 3 seed 43", "trial 1"], "val_accuracy 0.9600: ...", 0.9556, 270, 0.95
    )
    assert card.splitlines()[:3] == [
        "Shipped: the ensemble of 2 models",
        "  member: trial 3 seed 43",
        "  member: trial 1",
    ]
    assert "95% CI 0.9240-0.9744 (Wilson); best single model 0.9500" in card
