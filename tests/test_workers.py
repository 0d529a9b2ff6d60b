"""Many workers, one study: Optuna on a real PostgreSQL server, MLflow on a real tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import optuna
import pytest
from conftest import ROOT, TINY
from mlflow.tracking import MlflowClient
from servers import mlflow_server, postgres_server


@pytest.mark.slow
def test_two_workers_share_one_study_and_stop_at_the_total(tmp_path) -> None:
    with (
        postgres_server() as storage,
        mlflow_server(
            tmp_path / "mlflow", backend_store_uri=storage.replace("/optuna", "/mlflow")
        ) as tracking_uri,
    ):
        args = [
            *TINY,
            "search.n_trials=4",
            "search.study_name=shared",
            "tracking.log_models=true",
            f"search.storage={storage}",
            f"tracking.tracking_uri={tracking_uri}",
        ]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "search.run", *args, f"output_dir={tmp_path}/w{i}"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            for i in range(2)
        ]
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)

        study = optuna.load_study(study_name="shared", storage=storage)
        states = [t.state for t in study.trials]
        why = [(t.number, t.state.name, t.user_attrs) for t in study.trials]
        # The total holds across workers: exactly 4 trials, all COMPLETE (none failed, none
        # overshooting, none left RUNNING).
        assert states == [optuna.trial.TrialState.COMPLETE] * 4, (why, outputs)

        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("sweeplab")
        runs = client.search_runs([experiment.experiment_id])
        parents = {r.info.run_id for r in runs if r.data.tags["sweeplab.kind"] == "sweep"}
        children = [r for r in runs if r.data.tags["sweeplab.kind"] == "trial"]
        assert len(parents) == 2 and len(children) == 4
        assert {c.data.tags["mlflow.parentRunId"] for c in children} <= parents
        statuses = [
            (r.info.run_name, r.info.status, r.data.tags.get("sweeplab.failure_reason"))
            for r in runs
        ]
        assert all(r.info.status == "FINISHED" for r in runs), (statuses, outputs)
        # Both workers really trained: each parent has at least one child.
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == parents
        # The model artifact went through the server and loads back.
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.keras.load_model(children[0].data.tags["sweeplab.model_uri"])
        assert model.output_shape[-1] == 10


@pytest.mark.slow
def test_workers_logging_the_same_dataset_at_once_both_record_it(tmp_path) -> None:
    """Two workers' first trials log one dataset at the same moment; neither trial may fail.

    The MLflow server looks a dataset up, then inserts it: the later of two simultaneous
    requests violated the dataset key, and that trial ended FAIL (the workers test's failure).
    """
    from omegaconf import OmegaConf

    from tracking.mlflow_tracker import SweepTracker, TrialRun

    with (
        postgres_server() as storage,
        mlflow_server(
            tmp_path / "mlflow", backend_store_uri=storage.replace("/optuna", "/mlflow")
        ) as tracking_uri,
    ):
        cfg = {"tracking_uri": tracking_uri, "log_models": False, "experiment_name": "race"}
        workers = [SweepTracker(OmegaConf.create(cfg)) for _ in range(2)]
        for round_ in range(6):  # without the fix, most rounds fail (16 of 20 measured)
            info = {
                "source": "digits",
                "image_shape": [8, 8, 1],
                "class_names": ["0", "1"],
                "sizes": {"train": 2, "val": 1, "test": 1},
                "fingerprint": f"round-{round_}",  # a dataset new to the experiment each round
            }
            runs = [
                TrialRun(w.client, w.client.create_run(w.experiment_id).info.run_id)
                for w in workers
            ]
            errors = _log_at_once(runs, info)
            assert not errors, (round_, errors)
            for run in runs:
                logged = workers[0].client.get_run(run.run_id).inputs.dataset_inputs
                assert sorted(d.dataset.name for d in logged) == [
                    f"digits-{split}" for split in ("test", "train", "val")
                ]
                assert {d.dataset.digest for d in logged} == {f"round-{round_}"}


def _log_at_once(runs: list, info: dict) -> list[BaseException]:
    """Each run logs `info` in its own thread, released together; the errors raised."""
    together, errors = threading.Barrier(len(runs)), []

    def log(run) -> None:
        together.wait()
        try:
            run.log_dataset(info)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=log, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
