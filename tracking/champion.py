"""MLflow side of the final stage: the test report on the parent run, the registry, model fetch.

`FinalRecorder` writes to the sweep's parent run (test metrics, report, plots, exports) and
registers the champion; `fetch_model` resolves a models:/ or runs:/ URI to a local folder for
`search.predict`, turning "no such model or alias" into a UserInputError that lists what exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.errors import UserInputError
from tracking.filters import quoted
from tracking.mlflow_tracker import TAG, SweepTracker, _is_duplicate_key, _model_requirements

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from experiments.evaluation.metrics import TestReport

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
PYFUNC_CODE = Path(__file__).with_name("champion_pyfunc.py")
TAG_LIMIT = 5000  # MLflow's longest tag value


@dataclass(frozen=True)
class Registered:
    """A registered model version and the URI that loads it through its alias."""

    name: str
    version: str
    alias: str
    model_uri: str  # the logged model (models:/m-...)
    # False when a concurrent worker's champion, registered at the same moment, scored at
    # least as well: this version exists but the alias points at the other one.
    aliased: bool = True

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


class FinalRecorder:
    """Records the final stage on the sweep's parent run (which must be open)."""

    def __init__(self, tracker: SweepTracker) -> None:
        assert tracker.parent_id is not None, "FinalRecorder outside sweep_run"
        self.client: MlflowClient = tracker.client
        self.run_id: str = tracker.parent_id
        self.steps: list[str] = []  # the final stage's completed steps, in order

    def trial_model(self, trial_run_id: str) -> Any:
        """The Keras model the trial logged, or None when models were not logged."""
        uri = self.client.get_run(trial_run_id).data.tags.get(TAG + "model_uri")
        return mlflow.keras.load_model(uri) if uri else None

    def log_test_report(
        self, report: TestReport, figures: dict[str, Any], tags: dict[str, Any]
    ) -> None:
        """Test metrics, the per-class report (text and JSON) and the figures under test/."""
        self.client.log_batch(
            self.run_id,
            metrics=[
                mlflow.entities.Metric(k, float(v), _now(), 0) for k, v in report.metrics.items()
            ],
            tags=[mlflow.entities.RunTag(TAG + "final." + k, str(v)) for k, v in tags.items()],
        )
        if tags.get("card"):  # the shipped-model card, also the registered version's description
            self.client.log_text(self.run_id, str(tags["card"]) + "\n", "shipped_model.md")
        self.client.log_text(self.run_id, report.report_text, "test/classification_report.txt")
        self.client.log_dict(self.run_id, report.report, "test/classification_report.json")
        self.client.log_dict(
            self.run_id, {"confusion_matrix": report.confusion.tolist()}, "test/confusion.json"
        )
        for file_name, figure in figures.items():
            self.client.log_figure(self.run_id, figure, f"test/{file_name}")

    def log_exports(self, paths: dict[str, Path]) -> None:
        """Each exported file or folder under exports/ on the parent run."""
        for path in paths.values():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), f"exports/{path.name}")
            else:
                self.client.log_artifact(self.run_id, str(path), "exports")
        folders = {p.parent for p in paths.values()}
        for folder in folders:
            names = folder / "class_names.json"
            if names.exists():
                self.client.log_artifact(self.run_id, str(names), "exports")

    def champion(self, name: str, alias: str) -> dict[str, str] | None:
        """The sweeplab tags (prefix removed) and `version` of the model version `alias` points
        at, or None when the registered model or the alias does not exist yet."""
        try:
            version = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        tags = {k.removeprefix(TAG): v for k, v in version.tags.items() if k.startswith(TAG)}
        return {**tags, "version": str(version.version)}

    def done_step(self, step: str) -> None:
        """Tag the parent run with the final stage's steps done so far (final.done_steps)."""
        self.steps.append(step)
        self.tag({"done_steps": ",".join(self.steps)})

    def registered_by(self, name: str, sweep_run_id: str) -> str | None:
        """The version of `name` that the sweep run `sweep_run_id` registered, or None.

        A sweep killed after registering resumes its final stage in a new parent run; it asks
        this first, so that one sweep never registers its model twice."""
        try:
            versions = self.client.search_model_versions(f"name = {quoted(name)}")
        except MlflowException:  # no such registered model yet
            return None
        for version in versions:
            if version.tags.get(TAG + "sweep_run_id") == sweep_run_id:
                return str(version.version)
        return None

    def log_reevaluation(self, candidates: list[dict[str, Any]], crowned: int) -> None:
        """The top-k re-evaluation on the parent run: reevaluation.json (every seed's score),
        per re-trained candidate `reeval_trial<N>_mean` / `_std` metrics (a skipped one: tag
        `sweeplab.final.reeval_trial<N>=skipped`, no metric), and the crowned trial's tags."""
        metrics = []
        skipped = {}
        for c in candidates:
            if c.get("skipped"):
                skipped[f"reeval_trial{c['trial']}"] = "skipped"
                continue
            for stat in ("mean", "std"):
                metrics.append(
                    mlflow.entities.Metric(f"reeval_trial{c['trial']}_{stat}", c[stat], _now(), 0)
                )
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        self.client.log_dict(
            self.run_id, {"crowned_trial": crowned, "candidates": candidates}, "reevaluation.json"
        )
        reevaluated = len(candidates) - len(skipped)
        self.tag({"crowned_trial": crowned, "reevaluated_trials": reevaluated, **skipped})

    def log_export_measures(self, table: list[dict[str, Any]]) -> None:
        """Each export's test accuracy, size and batch-1 latency, measured from its own file:
        exports/measures.json, and the table as a tag the HTML report reads back."""
        if not table:
            return
        self.client.log_dict(self.run_id, {"exports": table}, "exports/measures.json")
        self.tag({"exports": json.dumps(table)})

    def tag(self, tags: dict[str, Any]) -> None:
        """Set sweeplab.final.* tags on the parent run (e.g. why nothing was registered)."""
        self.client.log_batch(
            self.run_id,
            tags=[mlflow.entities.RunTag(TAG + "final." + k, str(v)) for k, v in tags.items()],
        )

    def register(
        self,
        keras_file: Path,
        class_names: list[str],
        sample: np.ndarray,
        image_shape: tuple[int | None, ...],
        name: str,
        alias: str,
        tags: dict[str, Any],
        still_wins: Callable[[dict[str, str] | None], bool],
    ) -> Registered:
        """Log the champion pyfunc on the parent run, register it and point `alias` at it.

        `still_wins(current)` says whether this model still beats the champion `current` (the
        tags `champion()` returns); it decides when another worker moved the alias meanwhile.
        """
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # MLflow warns about type hints and integer columns: neither applies to tensors.
            warnings.simplefilter("ignore")
            names_file = Path(tmp) / "class_names.json"
            names_file.write_text(json.dumps(list(class_names)))
            # MLflow re-enables its "add type hints to predict" warning inside log_model
            # (simplefilter "once"); image tensors have no such hints, the signature says it all.
            quiet = contextlib.redirect_stderr(io.StringIO())
            with mlflow.start_run(run_id=self.run_id, nested=True), quiet:
                info = mlflow.pyfunc.log_model(
                    # not "champion", the alias word: the study's final, tested model.
                    name=f"{tags.get('study', name)}-final",
                    python_model=str(PYFUNC_CODE),
                    artifacts={"keras_model": str(keras_file), "class_names": str(names_file)},
                    signature=champion_signature(image_shape),
                    input_example=sample.astype("float32"),
                    pip_requirements=_model_requirements(),
                )
        # Leaving mlflow.start_run ended the parent run FINISHED, while the final stage goes on
        # (a kill now must leave it RUNNING, closed KILLED by the next start): open it again.
        self.client.update_run(self.run_id, status="RUNNING")
        # register_model prints "Successfully registered..." itself; the sweep prints its own line.
        with contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(
                info.model_uri, name, tags=_registry_tags(tags, class_names)
            )
        # The registry's Description: what shipped, how it tested, from which study.
        self.client.update_model_version(
            name, str(version.version), description=version_description(tags)
        )
        aliased = self._point_alias(name, alias, str(version.version), still_wins)
        self.client.log_batch(
            self.run_id,
            tags=[
                mlflow.entities.RunTag(TAG + "final.registered_model", name),
                mlflow.entities.RunTag(TAG + "final.registered_version", str(version.version)),
                mlflow.entities.RunTag(TAG + "final.model_uri", info.model_uri),
            ],
        )
        return Registered(name, str(version.version), alias, info.model_uri, aliased)

    def _point_alias(
        self,
        name: str,
        alias: str,
        version: str,
        still_wins: Callable[[dict[str, str] | None], bool],
        attempts: int = 6,
    ) -> bool:
        """Point `alias` at `version` unless a better champion got there first; True if it did.

        Workers of one study finish together and register together. MLflow sets an alias by
        reading it, then inserting or updating, so two first champions collide on the alias's
        unique key; and a later writer would silently replace a better model. So: set, then
        read back; while the alias points elsewhere, set it again only if this model still wins.
        """
        for attempt in range(attempts):
            current = self.champion(name, alias)
            if current is not None and current["version"] == version:
                return True
            if not still_wins(current):
                return False
            try:
                self.client.set_registered_model_alias(name, alias, version)
            except MlflowException as err:
                if not _is_duplicate_key(err):
                    raise
                time.sleep(0.2 * (attempt + 1))  # the other worker's insert: read it again
        current = self.champion(name, alias)
        return current is not None and current["version"] == version


def champion_signature(image_shape: tuple[int | None, ...]) -> ModelSignature:
    """Raw float32 pixels (N, H, W, C) in (None: any size); one row per image out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema(
            [TensorSpec(np.dtype("float32"), (-1, *(-1 if d is None else d for d in image_shape)))]
        ),
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("long", "class_index"),
                ColSpec("double", "probability"),
                ColSpec(Array("double"), "probabilities"),
            ]
        ),
    )


def version_description(tags: dict[str, Any]) -> str:
    """A registered version's description, from the tags the final stage registers it with:
    the shipped-model card (what shipped, its validation figure, test accuracy with its 95%
    interval) and where it came from."""
    source = str(tags.get("source", "model")).replace("_", " ")
    accuracy = tags.get("test_accuracy")
    tested = f"test accuracy {accuracy}" if accuracy is not None else "not tested"
    card = tags.get("card")
    head = str(card) if card else f"What shipped: the {source}; {tested} on the test split."
    return (
        f"{head}\n\nStudy {tags.get('study', '?')}; best trial run {tags.get('best_run_id', '?')}; "
        f"sweep run {tags.get('sweep_run_id', '?')}, where the HTML report is logged (report/)."
    )


def _registry_tags(tags: dict[str, Any], class_names: list[str]) -> dict[str, str]:
    out = {TAG + k: str(v) for k, v in tags.items()}
    names = json.dumps(list(class_names))
    out[TAG + "num_classes"] = str(len(class_names))
    if len(names) <= TAG_LIMIT:  # the full list is always in the model's class_names.json
        out[TAG + "class_names"] = names
    return out


def _now() -> int:
    import time

    return int(time.time() * 1000)


def fetch_model(uri: str, tracking_uri: str, dst: Path) -> Path:
    """Download the model a models:/ or runs:/ URI names into `dst`; returns its folder."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as err:
        raise UserInputError(
            f"model {uri!r} cannot be found in the MLflow store {tracking_uri} "
            f"({_first_line(err.message)}). {_known_models(tracking_uri, uri)}"
        ) from err
    except OSError as err:
        raise UserInputError(
            f"model {uri!r} names no artifacts that can be read ({err}); a runs:/ URI needs the "
            "artifact path too, e.g. runs:/RUN_ID/model."
        ) from err


def _known_models(tracking_uri: str, uri: str) -> str:
    """One sentence on what the registry holds, to put next to a lookup failure."""
    if not uri.startswith("models:/"):
        return "A runs:/ URI is runs:/RUN_ID/ARTIFACT_PATH, e.g. runs:/RUN_ID/model."
    try:
        models = MlflowClient(tracking_uri).search_registered_models(max_results=50)
    except MlflowException:
        return ""
    if not models:
        return "The registry holds no models yet: run a sweep with final.register=true."
    known = ", ".join(
        f"{m.name} (aliases: {', '.join(sorted(m.aliases)) or 'none'})" for m in models
    )
    return f"Registered models: {known}. Accepted forms: models:/NAME@ALIAS, models:/NAME/VERSION."


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else "not found"
