"""One MLflow parent run per sweep invocation, one nested child run per trial.

The search code sees three things: `SweepTracker.sweep_run` (a context for the parent run),
`SweepTracker.trial_run` (a context for a child run) and `TrialRun.callback()` (what writes
per-epoch curves). Each context ends its run with the right status even when the
body raises or the user presses Ctrl-C, so no run is left RUNNING by this process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from experiments.cache_home import cache_home
from experiments.outcome import TrialOutcome
from tracking.liveness import this_worker
from tracking.relocate import relocate
from tracking.run_tags import failed_tags, pruned_tags, who_and_where
from tracking.secrets import mask

if TYPE_CHECKING:
    from experiments.serving.keras_files import KerasFiles

TAG = "sweeplab."


def _model_requirements() -> list[str]:
    """Fixed requirements for logged models: MLflow would otherwise spend ~10 s inferring them.

    Read from the installed distributions, not from the modules: the sweep process does not
    import TensorFlow (its workers train).
    """
    from importlib.metadata import PackageNotFoundError, version

    requirements = [f"keras=={version('keras')}"]
    for dist in ("tensorflow-cpu", "tensorflow"):  # whichever TensorFlow is installed
        with suppress(PackageNotFoundError):
            requirements.append(f"{dist}=={version(dist)}")
            break
    return [*requirements, "pillow"]


def model_policy(value: Any) -> str:
    """`tracking.log_models` as one word: "all", "best" or "none" (true / false accepted)."""
    if isinstance(value, bool):
        return "all" if value else "none"
    return str(value)


def git_commit() -> str:
    """The checked-out commit of the project, or 'unknown' outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


CURVES_EVERY_S = 2.0  # epoch curves are written at most this often while a trial trains


class EpochLogger:
    """Writes every epoch's logs (loss, accuracy, val_*) to a run, with step = epoch.

    Called with each epoch's logs: from a worker's messages, or as a Keras callback's
    `on_epoch_end` where the trial trains in this process (not a Keras class itself, so this
    module imports no TensorFlow). A second training phase (fine-tuning) passes `initial_epoch`
    to `fit`, so Keras numbers its epochs on from the first phase and the curve stays one axis.

    Epochs are written together at most every `CURVES_EVERY_S` seconds (and when the trial's run
    closes: `flush`): an epoch as long as that is written as it ends, as live as before, while
    sub-second epochs no longer cost a store write each (20 ms of the sweep's CPU apiece, which
    the workers' training needs).
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self._client, self._run_id = client, run_id
        self.last_step: int | None = None  # the logged model links this step's metrics
        self.last_metrics: list = []  # ... which are these
        self.epochs = 0  # epochs seen
        self._pending: list = []
        self._written_at = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, epoch)
            for name, value in (logs or {}).items()
            if np.isscalar(value) or np.ndim(value) == 0
        ]
        self._pending += metrics
        self.last_step, self.last_metrics, self.epochs = epoch, metrics, self.epochs + 1
        if time.monotonic() - self._written_at >= CURVES_EVERY_S:
            self.flush()

    @property
    def pending(self) -> int:
        """Metrics seen and not written yet."""
        return len(self._pending)

    def take(self) -> list:
        """The epochs not written yet, for the caller to write (they are no longer pending)."""
        pending, self._pending = self._pending, []
        self._written_at = time.monotonic()
        return pending

    def flush(self) -> None:
        """Write the epochs not written yet (MLflow takes 1,000 metrics a call)."""
        pending = self.take()
        for start in range(0, len(pending), 1000):
            self._client.log_batch(
                self._run_id, metrics=pending[start : start + 1000], synchronous=True
            )


class TrialRun:
    """The child run of one trial."""

    def __init__(
        self, client: MlflowClient, run_id: str, run_name: str = "", model_name: str = "model"
    ) -> None:
        self.client, self.run_id = client, run_id
        self.state = TrialOutcome.COMPLETE
        self.tags: dict[str, str] = {}
        self.run_name, self.model_name = run_name, model_name  # names a user reads
        self._loggers: list[EpochLogger] = []

    def callback(self) -> EpochLogger:
        logger = EpochLogger(self.client, self.run_id)
        self._loggers.append(logger)
        return logger

    def flush_curves(self) -> None:
        """Write every epoch seen so far (the loggers write at most every CURVES_EVERY_S)."""
        for logger in self._loggers:
            logger.flush()

    @property
    def epochs_logged(self) -> int:
        """Epochs recorded on this run's curves (written, or about to be at its close)."""
        return max((lg.epochs for lg in self._loggers), default=0)

    @property
    def last_step(self) -> int:
        """The last epoch step logged (0 when none): the step of the trial's final metrics."""
        return max((lg.last_step for lg in self._loggers if lg.last_step is not None), default=0)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_batch(self, metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
        """Metrics (step 0) and tags in one store call: a trial's closing figures at once, with
        the last epochs of its curves when they fit (MLflow takes 1,000 metrics a call)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        closing = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        if sum(logger.pending for logger in self._loggers) + len(closing) > 1000:
            self.flush_curves()  # too many for one call: the curves go first, on their own
        curves = [m for logger in self._loggers for m in logger.take()]
        self.client.log_batch(
            self.run_id,
            metrics=[*curves, *closing],
            tags=[mlflow.entities.RunTag(k, mask(str(v))) for k, v in tags.items()],
            synchronous=True,
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(
            self.run_id, tags=[mlflow.entities.RunTag(k, mask(str(v))) for k, v in tags.items()]
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, mask(text), artifact_file)

    def log_dataset(self, info: Mapping[str, Any]) -> None:
        """Record the data a trial used (`ImageData.describe()`).

        As MLflow dataset inputs (one per split, context train / validation / test, digest = the
        content fingerprint, so the UI shows which runs shared data) and as `dataset.json` with
        class names, counts per class per split and any skipped files; its tags for search and
        filtering (`dataset_tags`) are set with the run's own, in the call that creates it.
        """
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.types import Schema, TensorSpec

        where = info.get("path")
        if where:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": both local
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(str(where))
        else:
            source = CodeDatasetSource({"sweeplab.source": str(info.get("source"))})
        name = str(info.get("name") or info.get("source"))
        if where and info.get("source") == "directory":
            name = Path(str(where)).name
        schema = Schema([TensorSpec(np.dtype("float32"), (-1, *info["image_shape"]), "image")])
        contexts = {"train": "train", "val": "validation", "test": "test"}
        inputs = [
            DatasetInput(
                # MLflow's Dataset is no ABC: its `profile` is abstract in the stubs only.
                MetaDataset(  # type: ignore[abstract]
                    source, f"{name}-{split}", str(info["fingerprint"]), schema
                )._to_mlflow_entity(),
                [InputTag("mlflow.data.context", context)],
            )
            for split, context in contexts.items()
        ]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                break
            except mlflow.exceptions.MlflowException as err:
                # Workers sharing an experiment start their first trials together and log the
                # same dataset at once. MLflow's store looks the dataset up, then inserts it,
                # so the later of two such requests violates the dataset key (HTTP 400, never
                # retried by the client) and failed that trial. The refused request wrote
                # nothing (one transaction) and the dataset now exists: again only links it.
                if attempt == 2 or not _is_duplicate_key(err):
                    raise
                time.sleep(0.2 * (attempt + 1))
        self.log_text(json.dumps(dict(info), indent=2, default=str), "dataset.json")

    def log_model(self, model: Any, sample: np.ndarray) -> str:  # a keras.Model
        """Log the trained model as an MLflow Keras model; returns its model URI."""
        from tracking.model_files import keras_signature

        signature = keras_signature(model, sample)
        with mlflow.start_run(run_id=self.run_id, nested=True):
            # link the final epoch's metrics (step), not epoch 0's; a readable name.
            info = mlflow.keras.log_model(
                model,
                name=self.model_name,
                signature=signature,
                pip_requirements=_model_requirements(),
                step=self.last_step,
            )
        self.set_tags({TAG + "model_uri": info.model_uri})
        return info.model_uri

    def log_model_files(self, folder: str, files: KerasFiles) -> str:
        """Log the Keras files a worker saved in `folder` as this run's MLflow Keras model.

        The MLflow half of the folder is written here (`tracking.model_files`), then store calls
        and a file copy, no TensorFlow: the sweep process records what its workers trained
        without loading their models. Returns the model URI.
        """
        from mlflow.entities import LoggedModelOutput, Metric

        from tracking.model_files import complete_model_folder

        complete_model_folder(folder, files, _model_requirements())
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        logged = self.client.create_logged_model(
            experiment_id, name=self.model_name, source_run_id=self.run_id
        )
        self.client.log_model_artifacts(logged.model_id, folder)
        self.client.finalize_logged_model(logged.model_id, "READY")
        # linked to the final epoch's metrics (step), as log_model does (the Models tab)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, self.last_step)])
        final = max(self._loggers, key=lambda lg: lg.last_step or 0, default=None)
        if final is not None and final.last_metrics:
            linked = [
                Metric(m.key, m.value, m.timestamp, m.step, run_id=self.run_id,
                       model_id=logged.model_id)
                for m in final.last_metrics
            ]  # fmt: skip
            self.client.log_batch(self.run_id, metrics=linked, synchronous=True)
        uri = f"models:/{logged.model_id}"
        self.set_tags({TAG + "model_uri": uri})
        return uri

    def mark(self, state: TrialOutcome, reason: str | None = None, **extra: Any) -> None:
        """Record how the trial ended: complete, pruned or failed (with a reason)."""
        self.state = state
        tags = {TAG + "state": state.value, **{TAG + k: v for k, v in extra.items()}}
        if reason:
            tags[TAG + "failure_reason"] = reason[:5000]
        # say pruned / failed where a user looks (run name, description).
        if state is TrialOutcome.PRUNED:
            tags.update(
                pruned_tags(
                    self.run_name,
                    extra.get("epochs_trained", 0),
                    extra.get("stopped_by"),
                    extra.get("epochs_planned"),
                )
            )
        elif state is TrialOutcome.FAILED and reason:
            tags.update(failed_tags(reason))
        self.set_tags(tags)


def dataset_tags(info: Mapping[str, Any]) -> dict[str, Any]:
    """The tags (without their `sweeplab.` prefix) that say which data a run used
    (`ImageData.describe()`), for searching and filtering runs in the UI."""
    return {
        "data_fingerprint": info.get("fingerprint"),
        "data_source": info.get("source"),
        "data_path": info.get("path") or "",
        "data_sizes": json.dumps(info.get("sizes", {})),
        "class_names": json.dumps(info.get("class_names", []))[:5000],
        "data_skipped": info.get("skipped_count", 0),
    }


def create_sqlite_store(uri: str) -> None:
    """Create a new SQLite MLflow store under a temporary name, then link it into place.

    MLflow creates a store's schema with dozens of migrations, none of them guarded against
    another process doing the same: `mlflow ui`, a second worker or a reader that opens the new
    file meanwhile runs them too, and a migration cut short by the other's leaves a temporary
    table behind that fails every later start ("table _alembic_tmp_... already exists"). Built
    aside and linked (`os.link` never replaces an existing file), the store appears complete or
    not at all; when two processes race, the first link wins and the other uses that store.

    The migrations take 1-2 s, a sweep's largest start-up cost after its imports, so the first
    store this MLflow version creates is kept as a template (`store_template`) that later
    sweeps copy in milliseconds.
    """
    if not uri.startswith("sqlite:///"):
        return
    final = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if final.exists():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    building = final.with_name(f".{final.name}.building-{os.getpid()}")
    ready = final.with_name(f".{final.name}.ready-{os.getpid()}")
    try:
        if not _from_template(ready):
            MlflowClient(f"sqlite:///{building}").search_experiments(max_results=1)
            # A fresh copy: the file MLflow's cached engine keeps open is never the one linked.
            shutil.copyfile(building, ready)
            _keep_as_template(building)
        with suppress(FileExistsError):  # another process linked its store first
            os.link(ready, final)
    finally:
        for leftover in (building, ready, Path(f"{building}-journal")):
            leftover.unlink(missing_ok=True)


def store_template() -> Path:
    """Where a new, empty SQLite store of this MLflow version is kept for copying: beside the
    folder cache of data=directory (`experiments.cache_home`)."""
    return cache_home() / "stores" / f"mlflow-{mlflow.__version__}.db"


def _from_template(target: Path) -> bool:
    """Copy the template to `target`, with its Default experiment stamped as MLflow would have
    made it here and now; False (nothing copied) when there is no usable template."""
    import sqlite3

    template = store_template()
    if not template.is_file():
        return False
    try:
        shutil.copyfile(template, target)
        from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

        location = str(Path(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH).resolve() / "0")
        now = int(time.time() * 1000)
        with closing(sqlite3.connect(target)) as db, db:
            updated = db.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                "last_update_time = ? WHERE experiment_id = 0",
                (location, now, now),
            ).rowcount
            (runs,) = db.execute("SELECT COUNT(*) FROM runs").fetchone()
        if updated != 1 or runs != 0:
            raise sqlite3.DatabaseError("not an empty store")
        return True
    except (OSError, sqlite3.Error):  # unreadable or damaged: build a new store, replace it
        target.unlink(missing_ok=True)
        with suppress(OSError):
            template.unlink()
        return False


def _keep_as_template(store: Path) -> None:
    """Keep a just-built empty store as the template (written aside, then renamed: atomic)."""
    template = store_template()
    part = template.with_name(f".{template.name}.part-{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store, part)
        os.replace(part, template)
    except OSError:  # a read-only cache: every new store is built, as without a template
        part.unlink(missing_ok=True)


def _opened(first_call: Callable[[], Any], attempts: int = 6) -> Any:
    """The first call into a store, retried while another process creates the same schema.

    Opening a new SQLite store creates its schema outside MLflow's sessions (which wait 20 s for
    a lock), with SQLite's 5 s default: another process opening or reading the same new file at
    that moment (a second worker, `mlflow ui`, a test polling the store) makes it fail with
    "database is locked", "table ... already exists" or, while both run MLflow's migrations,
    "duplicate column name" (the other process's schema). Once the other one is done, the
    retry finds the schema complete.
    """
    races = ("database is locked", "already exists", "duplicate column")
    for attempt in range(attempts):
        try:
            return first_call()
        except Exception as err:
            text = str(err).lower()
            racing = any(race in text for race in races)
            if attempt == attempts - 1 or not racing:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _is_duplicate_key(err: Exception) -> bool:
    """A unique-key violation in the store (PostgreSQL, SQLite and MySQL wordings)."""
    text = str(err).lower()
    return "unique" in text or "duplicate" in text


class SweepTracker:
    """Opens the MLflow store named by `tracking` config and hands out parent and child runs."""

    def __init__(self, cfg: DictConfig) -> None:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        relocate(str(cfg.tracking_uri))  # a moved output_dir's artifact links
        create_sqlite_store(str(cfg.tracking_uri))  # whole, or not at all: see its doc
        mlflow.set_tracking_uri(str(cfg.tracking_uri))
        # MlflowClient creates a new store's schema (one another program may be creating).
        self.client = _opened(lambda: MlflowClient(str(cfg.tracking_uri)))
        self.tracking_uri = str(cfg.tracking_uri)
        self.log_models = model_policy(cfg.log_models)
        name = str(cfg.experiment_name)
        experiment = _opened(lambda: self.client.get_experiment_by_name(name))
        if experiment is None:
            # A tracking server stores artifacts itself; a local store keeps them beside it.
            is_server = str(cfg.tracking_uri).startswith(("http://", "https://"))
            location = None if is_server else cfg.get("artifact_location")
            if location and "://" not in str(location):
                location = Path(str(location)).resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(name, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                # Another worker created it a moment ago.
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        self.parent_id: str | None = None

    @contextmanager
    def sweep_run(
        self, run_name: str, tags: Mapping[str, Any], artifacts: Mapping[str, str]
    ) -> Iterator[str]:
        """The parent run of one sweep invocation; `artifacts` maps file names to text."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                **{TAG + k: mask(str(v)) for k, v in tags.items()},
                TAG + "git_commit": git_commit(),
                TAG + "kind": "sweep",
                **{TAG + k: v for k, v in this_worker().items()},
                **who_and_where(git_commit()),  # user and source in the UI
            },
        )
        self.parent_id = run.info.run_id
        for file_name, text in artifacts.items():
            self.client.log_text(self.parent_id, mask(text), file_name)
        with _ends_run(self.client, self.parent_id):
            yield self.parent_id

    @contextmanager
    def stage_run(self, run_name: str, tags: Mapping[str, Any]) -> Iterator[str]:
        """A child run of the sweep run under which the trial runs of one stage nest (the screen
        of search.staged: hundreds of runs folded under one row of the MLflow UI)."""
        parent = self.parent_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                **({"mlflow.parentRunId": parent} if parent else {}),
                TAG + "kind": "stage",
                **{TAG + k: v for k, v in this_worker().items()},
                **{TAG + k: mask(str(v)) for k, v in tags.items()},
            },
        )
        self.parent_id = run.info.run_id
        try:
            with _ends_run(self.client, run.info.run_id):
                yield run.info.run_id
        finally:
            self.parent_id = parent

    @contextmanager
    def trial_run(
        self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> Iterator[TrialRun]:
        """A child run under the current sweep run, ended FINISHED, FAILED or KILLED.

        Outside a sweep run (`search.rerun`) it is a top-level run.
        """
        parent = {"mlflow.parentRunId": self.parent_id} if self.parent_id else {}
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                **parent,
                TAG + "kind": "trial",
                **{TAG + k: v for k, v in this_worker().items()},
                **{TAG + k: mask(str(v)) for k, v in tags.items()},
                **who_and_where(git_commit()),  # user and source in the UI
            },
        )
        # the logged model is named after its study and trial, not "model".
        study = tags.get("study")
        model_name = f"{study}-{run_name}" if study else run_name
        trial = TrialRun(self.client, run.info.run_id, run_name, model_name)
        if params:
            self.client.log_batch(
                trial.run_id,
                params=[mlflow.entities.Param(k, mask(str(v))) for k, v in params.items()],
            )
        with _ends_run(self.client, trial.run_id, lambda: trial.state):
            try:
                yield trial
            finally:  # the curve up to the end, whatever ended the trial
                with suppress(Exception):  # best effort after Ctrl-C: a write may be cut short
                    trial.flush_curves()

    def log_best(
        self, objective: str, value: float | None, params: Mapping[str, Any], best_run: str | None
    ) -> None:
        """Summarize the study on the parent run: best value, its params and its child run."""
        assert self.parent_id is not None
        if value is not None:
            self.client.log_metric(self.parent_id, f"best_{objective}", float(value))
        self.client.log_text(
            self.parent_id, json.dumps(dict(params), indent=2, default=str), "best_params.json"
        )
        tags = {TAG + "best." + k: str(v) for k, v in params.items()}
        if best_run:
            tags[TAG + "best_run_id"] = best_run
        # the best params are the parent's params too (the run list's Params columns).
        self.client.log_batch(
            self.parent_id,
            tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
            params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()],
        )


@contextmanager
def _ends_run(
    client: MlflowClient,
    run_id: str,
    state: Callable[[], TrialOutcome] = lambda: TrialOutcome.COMPLETE,
) -> Iterator[None]:
    """End the run FINISHED on success, KILLED on Ctrl-C / SIGTERM, FAILED on any other error.

    A trial stopped early on purpose (pruned, or stopped by the budget: tag sweeplab.state=pruned
    with sweeplab.stopped_by) ends KILLED, not FINISHED: MLflow's green FINISHED would say it ran
    to its end. Its run name and description say which (docs/search.md, "Trial states").
    """
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        # Best effort: the interrupt may have cut a store write short; if closing fails here,
        # the next start closes the run (its process is gone), and Ctrl-C stays Ctrl-C.
        with suppress(Exception):
            client.log_batch(
                run_id,
                tags=[
                    mlflow.entities.RunTag(TAG + "state", TrialOutcome.INTERRUPTED.value),
                    mlflow.entities.RunTag(
                        TAG + "failure_reason", "interrupted (Ctrl-C or SIGTERM)"
                    ),
                ],
            )
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        status = RunStatus.KILLED if state() is TrialOutcome.PRUNED else RunStatus.FAILED
        client.set_terminated(run_id, RunStatus.to_string(status))
        raise
    else:
        status = RunStatus.FAILED if state() is TrialOutcome.FAILED else RunStatus.FINISHED
        client.set_terminated(run_id, RunStatus.to_string(status))
