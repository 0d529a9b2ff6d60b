"""The final stage of a sweep: test the best model once, register it, export it.

Runs inside the sweep's parent run after the search. The best trial (by the validation
objective) is either reloaded from MLflow or, with `final.retrain=true`, its config is retrained
on train + validation; then it is evaluated on the test split (never read by the search), the
report and plots go to the parent run, the model is registered with an alias and exported.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.errors import UserInputError
from search.final.card import card_text, validation_words
from search.final.ensemble import Member, ensemble_size, in_memory, shipped_model, with_crowned
from search.final.faults import fault_point
from search.final.registry import Decision, data_label, decide, registered_name

if TYPE_CHECKING:  # mlflow and TensorFlow load only when the final stage runs
    from experiments.data.splits import ImageData
    from experiments.evaluation.metrics import TestReport
    from search.final.reevaluate import Reevaluation
    from search.trials.budget import Budget
    from search.trials.runner import TrialRunner
    from search.trials.types import Best
    from tracking.champion import FinalRecorder
    from tracking.mlflow_tracker import SweepTracker

INPUT_EXAMPLE_IMAGES = 2


@dataclass
class FinalResult:
    """What the final stage produced."""

    metrics: dict[str, float]
    # trial_model | reevaluated_seed | retrained_train_val | retrained_train | ensemble |
    # distilled_student
    source: str
    registered_uri: str | None  # models:/NAME@ALIAS
    registered_version: str | None
    exports: dict[str, Path]
    # Each export measured on the test split from its own file (experiments.serving.measure).
    export_measures: list[dict[str, Any]] = field(default_factory=list)


def check_final_config(cfg: DictConfig) -> None:
    """Fail before any training on final.* settings that are not one key's value (those are
    rows of search/config/rules.py): export formats, the re-evaluation's seeds, the alias."""
    from experiments.serving.export import check_formats

    final = cfg.get("final")
    if final is None or not final.enabled:
        return
    formats = check_formats(export_formats(cfg))
    target = final.get("export_target")
    if target is not None and target not in formats:
        raise UserInputError(
            f"final.export_target={target} is not among the exported formats (final.export="
            f"{formats}): the trials would be chosen by the size and latency of a file the sweep "
            f"does not ship; add it, e.g. final.export=[{','.join([*formats, str(target)])}], or "
            "set final.export_target=null."
        )
    from search.final.reevaluate import settings

    settings(cfg)  # final.seeds for final.top_k
    retrain_seeds(cfg)
    if final.register and not str(final.get("alias") or "").strip():
        raise UserInputError("final.alias is empty; give the registry alias, e.g. champion.")


def export_formats(cfg: DictConfig) -> list[str]:
    """`final.export` as a list: [keras,tflite], or a single name / comma-separated text."""
    export = cfg.final.get("export") or []
    if isinstance(export, str):
        return [f.strip() for f in export.split(",") if f.strip()]
    if not (OmegaConf.is_list(export) or isinstance(export, list)):
        raise UserInputError(
            f"final.export={export!r} must be a list of formats, e.g. final.export=[keras,tflite]."
        )
    return [str(f) for f in export]


def finalize(
    cfg: DictConfig,
    runner: TrialRunner,
    tracker: SweepTracker,
    best: Best | None,
    study: str,
    top: list[Best] | None = None,
    resumed_from: str | None = None,
) -> FinalResult | None:
    """Evaluate, register and export the best trial of the sweep; None when disabled or no best.

    `runner` is the sweep's TrialRunner (its cached data split is reused), `tracker` the
    SweepTracker with the parent run open, `best` the engine's best trial, `top` its best trials
    (best first) for the top-k re-evaluation (search/final/reevaluate.py, final.top_k > 0),
    `resumed_from` the parent run whose final stage a kill cut short (its registration counts).
    Each completed step is recorded on the parent run (tag sweeplab.final.done_steps).
    """
    final = cfg.get("final")
    if final is None or not final.enabled or best is None:
        return None
    if best.run_id is None:
        print(no_run_id(cfg, best), flush=True)
        return None
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()  # with worker processes, the first TensorFlow import of this process
    from experiments.evaluation.plots import confusion_matrix_figure, misclassified_figure
    from experiments.serving.export import export_model
    from search.final.champion import within_rule
    from search.final.reevaluate import settings
    from search.space.apply import apply_params
    from tracking.champion import FinalRecorder

    trial_cfg = apply_params(cfg, best.params)
    data = runner.data_for(trial_cfg)
    if len(data.test) == 0:
        print("final: the test split is empty; nothing to evaluate, register or export")
        return None
    recorder = FinalRecorder(tracker)
    # The rule the search reserved time for (search/trials/budget.py): re-evaluated, then averaged.
    # Only trials the champion rule admits (final.select's limits) may be crowned.
    contenders = (
        runner.budget.contenders(within_rule(cfg, tracker, top or [best], best))
        if settings(cfg)[0]
        else []
    )
    reevaluated = _reevaluate(cfg, runner, recorder, contenders)
    if reevaluated is not None:  # the crowned config, scored by its mean over its trainings
        best = dataclasses.replace(reevaluated.crowned.trial, value=reevaluated.crowned.mean)
        trial_cfg = apply_params(cfg, best.params)
        data = runner.data_for(trial_cfg)
    # Trained on train + validation (final.retrain); each training runs where trials do (in a
    # worker with search.workers >= 1, which grows its own copy of the images).
    grown = bool(final.retrain) and _retrain_fits(runner.budget, best)
    began = time.perf_counter()
    if grown:
        fault_point("retraining")
    model, source = _retrained(runner, trial_cfg, data, best) if grown else (None, None)
    seeds: list[Member] = []
    if model is not None:
        done_step(recorder, "retrained")
        # Its measured time prices the next seeds (final.retrain_seeds).
        seeds = _more_seeds(cfg, trial_cfg, runner, data, best, time.perf_counter() - began)
    if model is None:  # no retraining asked, fitting or succeeding
        grown = False
        if reevaluated is not None and reevaluated.model is not None:
            model, source = reevaluated.model, "reevaluated_seed"
        else:
            model, source = _final_model(runner, trial_cfg, data, recorder, best)
    if model is None:
        print(
            f"final stage skipped: trial {best.number}'s model was not logged and training its "
            "config again failed (above); the search's results and the champion choice stand, "
            "nothing is tested, registered or exported.",
            flush=True,
        )
        return None
    assert source is not None  # every model above comes with its source
    members: list[str] = []
    single_model = model  # the best single model, tested beside an ensemble (the card)
    if ensemble_size(cfg) > 1:
        model, source, members = shipped_model(
            cfg, recorder, (model, source), best, with_crowned(contenders, best), reevaluated,
            seeds,
        )  # fmt: skip
        fault_point("ensemble")  # the shipped model built (an average), not yet tested

    report = score_on_test(model, data, int(cfg.seed))
    if source == "ensemble" and bool(final.get("distil")):  # one model's latency, if it holds up
        model, source, report, shipped_why = _student_or_ensemble(
            cfg, trial_cfg, runner, grown, data, model, report, runner.budget, best
        )
    else:
        shipped_why = ""
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(report, data.class_names),
        "misclassified.png": misclassified_figure(
            report, _test_pixels(data), data.class_names, int(final.max_misclassified)
        ),
    }
    single = None
    if members:  # an average of models: the best single one's test accuracy beside it
        single = float(score_on_test(single_model, data, int(cfg.seed)).metrics["test_accuracy"])
    card = card_text(
        source,
        members,
        validation_words(str(cfg.train.objective), best, reevaluated, bool(contenders)),
        float(report.metrics["test_accuracy"]),
        len(data.test),
        single,
    )
    recorder.log_test_report(
        report,
        figures,
        {
            "card": card,
            "source": source,
            "best_run_id": best.run_id,
            "test_images": len(data.test),
            # The images the tested model trained on (final.retrain: train + validation).
            **({} if members else {"train_images": len(data.train) + grown * len(data.val)}),
            **({"ensemble_members": "; ".join(members)} if members else {}),
            **({"shipped_why": shipped_why} if shipped_why else {}),
        },
    )
    result = FinalResult(report.metrics, source, None, None, {})
    done_step(recorder, "tested")

    if export_formats(cfg):
        out = Path(cfg.output_dir) / "exports" / study
        result.exports = export_model(
            model, export_formats(cfg), out, data.class_names, _calibration(data)
        )
        recorder.log_exports(result.exports)
        result.export_measures = _measured(result.exports, data)
        recorder.log_export_measures(result.export_measures)
        done_step(recorder, "exported")

    if final.register:
        _register(
            cfg,
            model,
            data,
            report,
            recorder,
            result,
            best,
            study,
            tracker.parent_id,
            card,
            resumed_from,
        )
        done_step(recorder, "registered")
    _print(result, report)
    return result


def done_step(recorder: FinalRecorder, step: str) -> None:
    """Record on the parent run that `step` of the final stage completed, then pass the fault
    point named after it: a resumed final stage and the MLflow UI see how far it got."""
    recorder.done_step(step)
    fault_point(step)


def no_run_id(cfg: DictConfig, best: Any) -> str:
    """Why the final stage is skipped when the best trial has no MLflow run id."""
    why = (
        "Keras Tuner keeps each trial's run id in sweeplab_run_ids.json in its project folder, "
        "which was missing or unreadable when this sweep started (said above when unreadable)"
        if str(cfg.search.get("engine")) == "keras_tuner"
        else "the engine kept none for it"
    )
    return (
        f"final stage skipped: the best trial ({best.number}) has no MLflow run id ({why}), so "
        "its model cannot be read back to test, register or export."
    )


def _register(
    cfg: DictConfig,
    model: Any,
    data: ImageData,
    report: TestReport,
    recorder: FinalRecorder,
    result: FinalResult,
    best: Best,
    study: str,
    parent_id: str | None,
    card: str = "",
    resumed_from: str | None = None,
) -> None:
    """Register the tested model when it beats the current champion on the same data; not when
    `resumed_from` (the killed run this final stage resumes) registered it already. `card`: the
    shipped-model card, the version's description."""
    from experiments.serving.export import serving_model

    final = cfg.final
    fingerprint = data.fingerprint()
    name = registered_name(cfg, data_label(data.source, data.info), fingerprint)
    alias = str(final.alias)
    earlier = recorder.registered_by(name, resumed_from) if resumed_from else None
    if earlier is not None:
        print(
            f"final: already registered as version {earlier} of {name} by the interrupted run "
            f"{resumed_from}: not registered again",
            flush=True,
        )
        recorder.tag(
            {"registered": False, "not_registered_reason": f"registered by {resumed_from}"}
        )
        result.registered_uri, result.registered_version = f"models:/{name}/{earlier}", earlier
        return
    metric = str(final.get("champion_metric", "test_accuracy"))
    current = recorder.champion(name, alias)
    where = f"models:/{name}@{alias}" + (f" (version {current['version']})" if current else "")
    decision: Decision = decide(metric, report.metrics[metric], fingerprint, current, where)
    if not decision.register:
        print(f"final: not registered: {decision.reason}", flush=True)
        recorder.tag({"registered": False, "not_registered_reason": decision.reason})
        return
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "model.keras"
        serving = serving_model(model)  # takes raw images of any size, like the exports
        serving.save(keras_file)
        registered = recorder.register(
            keras_file,
            data.class_names,
            data.sample(INPUT_EXAMPLE_IMAGES, "test"),
            tuple(serving.input_shape[1:]),
            name,
            alias,
            {
                "study": study,
                "sweep_run_id": parent_id,
                "best_run_id": best.run_id,
                "source": result.source,
                "data_fingerprint": fingerprint,
                "champion_metric": metric,
                cfg.train.objective: f"{best.value:.6g}",
                "card": card,
                **{k: f"{v:.6g}" for k, v in report.metrics.items()},
            },
            still_wins=lambda now: (
                decide(
                    metric, report.metrics[metric], fingerprint, now, f"models:/{name}@{alias}"
                ).register
            ),
        )
    if not registered.aliased:
        reason = (
            f"version {registered.version} of {name} is registered, but another worker's "
            f"champion, registered at the same moment, scores at least as well: {alias} stays "
            "on that one."
        )
        print(f"final: {reason}", flush=True)
        recorder.tag({"registered": False, "not_registered_reason": reason})
        return
    print(f"final: registered: {decision.reason}", flush=True)
    result.registered_uri, result.registered_version = registered.alias_uri, registered.version


def score_on_test(model: Any, data: ImageData, seed: int) -> TestReport:
    """Score the model on the test split; streamed through the input pipeline when the pixels
    are not held in memory (data.cache=none decodes the files batch by batch)."""
    from experiments.evaluation.metrics import evaluate_model, evaluate_predictions

    if data.test.x is not None:
        return evaluate_model(model, data.test.x, data.test.y, data.class_names)
    from experiments.data.pipeline import dataset

    batches = dataset(data, "test", 256, training=False, seed=seed)
    return evaluate_predictions(model.predict(batches, verbose=0), data.test.y, data.class_names)


class _DecodedImages:
    """Test images decoded on access: the misclassified grid reads a few, not the split."""

    def __init__(self, files: tuple[str, ...], decoder: Callable[[str], np.ndarray]) -> None:
        self.files, self.decoder = files, decoder

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.decoder(self.files[int(index)]), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.files)


def _test_pixels(data: ImageData) -> np.ndarray | _DecodedImages:
    """The test pixels, or (data.cache=none) a view that decodes each image it is asked for."""
    # A split without pixels in memory comes with its decoder (experiments.data.splits).
    return data.test.x if data.test.x is not None else _DecodedImages(data.test.files, data.decoder)  # type: ignore[arg-type]


def _reevaluate(
    cfg: DictConfig, runner: TrialRunner, recorder: FinalRecorder, contenders: list[Best]
) -> Reevaluation | None:
    """The top-k re-evaluation of `contenders` (none when final.top_k is 0), logged on the parent
    run; None when there is nothing to re-evaluate."""
    from search.final.champion_rule import effective_rule
    from search.final.reevaluate import reevaluate, settings

    if not contenders:
        return None
    if len(contenders) == 1 and cfg.final.retrain:
        print(
            f"final: trial {contenders[0].number} is the only contender (final.contender_se): "
            "nothing to re-evaluate; it is retrained on train + validation"
        )
        return None
    keep = 1 if effective_rule(cfg) is not None else ensemble_size(cfg)  # a rule: no ensemble
    result = reevaluate(cfg, runner, contenders, settings(cfg)[1], runner.budget, keep)
    if result is None:  # it said why: nothing fit in search.timeout, or every training failed
        recorder.tag({"reevaluation": "skipped"})  # not a mean with std 0.0
        return None
    recorder.log_reevaluation([c.summary() for c in result.candidates], result.crowned.trial.number)
    return result


def _retrain_fits(budget: Budget, best: Best) -> bool:
    """Whether `final.retrain` fits in what is left of search.timeout; says so when not."""
    needed = budget.retrain_seconds(best)
    if budget.fits(needed):
        return True
    print(
        f"final: retraining on train + validation ({needed:.0f}s) does not fit in the "
        f"{max(budget.left(), 0):.0f}s left of search.timeout; the model trained on train is tested"
    )
    return False


def _final_model(
    runner: TrialRunner, cfg: DictConfig, data, recorder, best
) -> tuple[Any, str | None]:
    """The model to test without retraining on train + validation: the logged trial model, or
    its config trained again on train; (None, None) when that training fails (said)."""
    model = recorder.trial_model(best.run_id)
    if model is not None:
        return model, "trial_model"
    # Not logged (log_models=false, or "best" and a select rule chose a trial that never led
    # when it finished): the seeded trial is reproduced.
    print("final: the best trial's model was not logged; retraining its config on train")
    what = f"training trial {best.number}'s config on train"
    model = _trained(runner, cfg, data, False, what, "there is no model to test")
    return model, "retrained_train"


def _retrained(runner: TrialRunner, cfg: DictConfig, data, best) -> tuple[Any, str | None]:
    """The best config retrained on train + validation of `data`; (None, None) when that
    training fails (said: the final stage goes on with the trial's own model)."""
    print("final: retraining the best config on train + validation")
    then = "the model trained on train is tested instead"
    what = f"retraining trial {best.number}'s config on train + validation"
    model = _trained(runner, cfg, data, True, what, then)
    return (model, "retrained_train_val") if model is not None else (None, None)


def _trained(runner: TrialRunner, cfg: DictConfig, data, grown: bool, what: str, then: str) -> Any:
    """`cfg` trained on `data` (train + validation when `grown`), where trials train; None, said
    in one line, when its training fails (TrialFailed: the loss diverged or its worker died;
    WorkerError: it raised in its worker), so a failed final step never ends the sweep after
    its search."""
    from experiments.errors import TrialFailed, WorkerError

    try:
        return runner.train_final(cfg, data, grown).model
    except (TrialFailed, WorkerError) as err:
        print(
            f"final: {what} failed ({str(err).splitlines()[0][:160]}): skipped, {then}",
            flush=True,
        )
        return None


def _student_or_ensemble(
    cfg: DictConfig, trial_cfg: DictConfig, runner: TrialRunner, grown: bool, data: ImageData,
    ensemble: Any, ensemble_report: TestReport, budget: Budget, best: Best,
) -> tuple[Any, str, TestReport, str]:  # fmt: skip
    """`final.distil`: one student of the crowned config trained on the members' images against
    the ensemble's probabilities (experiments/training/distil.py, docs/distil.md), then the
    `final.ship` rule between it and the ensemble, by test accuracy (the test split decides one
    bit here, said on the parent run): fastest ships the student when it is within
    `final.ship_within` of the ensemble, accurate ships the better one (the student on a tie).
    Returns (model, source, its test report, why it shipped); the ensemble when the student does
    not fit in search.timeout or diverges (said)."""
    from experiments.errors import TrialFailed, WorkerError
    from experiments.training.distil import DEFAULT_ALPHA, DEFAULT_TEMPERATURE

    needed = budget.distil_seconds(best)
    if not budget.fits(needed):
        why = (
            f"no student: distillation ({needed:.0f}s) does not fit in the "
            f"{max(budget.left(), 0):.0f}s left of search.timeout; the ensemble ships"
        )
        print(f"final: {why}", flush=True)
        return ensemble, "ensemble", ensemble_report, why
    print("final: distilling the ensemble into one model of the crowned config", flush=True)
    try:
        settings = (
            float(cfg.final.get("distil_temperature", DEFAULT_TEMPERATURE)),
            float(cfg.final.get("distil_alpha", DEFAULT_ALPHA)),
        )
        student = runner.train_final(trial_cfg, data, grown, (ensemble, *settings)).model
    except (TrialFailed, WorkerError) as err:
        why = f"no student: its training diverged ({str(err).splitlines()[0][:200]}); the ensemble ships"
        print(f"final: {why}", flush=True)
        return ensemble, "ensemble", ensemble_report, why
    final = cfg.final
    student_report = score_on_test(student, data, int(cfg.seed))
    a, s = ensemble_report.metrics["test_accuracy"], student_report.metrics["test_accuracy"]
    within = float(final.get("ship_within", 0.01))
    rule = str(final.get("ship", "fastest"))
    student_ships = s >= a - within if rule == "fastest" else s >= a
    figures = f"test accuracy: ensemble {a:.4f}, student {s:.4f}"
    why = (
        f"final.ship={rule}"
        + (f" (within {within:g})" if rule == "fastest" else "")
        + f": the {'student (one model)' if student_ships else 'ensemble'} ships; {figures}"
    )
    print(f"final: {why}", flush=True)
    if student_ships:
        return student, "distilled_student", student_report, why
    return ensemble, "ensemble", ensemble_report, why


def _calibration(data: ImageData) -> Any:
    """Training images for an int8 export's calibration (never test images): the pixels held in
    memory, or (data.cache=none) the first files decoded; None when there are none."""
    from experiments.serving.export import CALIBRATION_LIMIT

    if data.train.x is not None:
        return data.train.x[:CALIBRATION_LIMIT]
    if data.decoder is None or not data.train.files:
        return None
    files = data.train.files[:CALIBRATION_LIMIT]
    return np.stack([np.asarray(data.decoder(f), dtype=np.float32) for f in files])


def _measured(exports: dict[str, Path], data: ImageData) -> list[dict[str, Any]]:
    """Each export measured on the test split from its own file: accuracy, size, ms per image
    at batch 1 (experiments.serving.measure), as printed and logged on the parent run."""
    from experiments.serving.measure import measure_exports, measures_table

    pixels = _test_pixels(data)
    images = pixels if isinstance(pixels, np.ndarray) else np.stack(
        [pixels[i] for i in range(len(pixels))]
    )  # fmt: skip
    table = measures_table(measure_exports(exports, images, data.test.y))
    for row in table:
        print(
            f"export {row['format']}: test accuracy {row['accuracy']:.4f} from the file, "
            f"{row['size']}, {row['ms_per_image']:.2f} ms per image at batch 1",
            flush=True,
        )
    return table


def retrain_seeds(cfg: DictConfig) -> int | None:
    """`final.retrain_seeds`, checked: how many models of the crowned config are retrained on
    train + validation; None for auto (as many as search.timeout leaves time for)."""
    final = cfg.get("final") or {}
    value = final.get("retrain_seeds", 1)
    if value == "auto":
        return None
    size = ensemble_size(cfg)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= size:
        raise UserInputError(
            f"final.retrain_seeds={value!r} must be a whole number from 1 to final.ensemble "
            f"({size}): how many models of the crowned config are retrained on train + "
            "validation, each a member of the shipped ensemble; or auto, as many as "
            "search.timeout leaves time for, up to final.ensemble."
        )
    return value


def retrained_models(cfg: DictConfig) -> int | None:
    """How many models of the crowned config the final stage retrains on train + validation, as
    the budget reserves them: 1 when one model ships alone (final.ensemble=1, or a champion
    rule's choice), else final.retrain_seeds (None: auto, as many as search.timeout leaves time
    for, up to final.ensemble)."""
    from search.final.champion_rule import effective_rule

    if ensemble_size(cfg) <= 1 or effective_rule(cfg) is not None:  # a rule's champion: alone
        return 1
    return retrain_seeds(cfg)


def _more_seeds(
    cfg: DictConfig, trial_cfg: DictConfig, runner: TrialRunner, data: ImageData, best: Best,
    first_seconds: float,
) -> list[Member]:  # fmt: skip
    """The crowned config retrained on train + validation of `data` with new training seeds, after the
    first (`first_seconds` long), while `final.retrain_seeds` asks for more and they fit in what
    is left of search.timeout; each joins the shipped ensemble (search/final/ensemble.py).

    Why: more time must buy accuracy, and sampling more configs did not (issue 25) while an
    average of seeds of the best config did (docs/benchmarks.md section 10); a model trained on
    train + validation is the strongest member the sweep can make.
    """
    wanted = retrained_models(cfg)
    limit = ensemble_size(cfg) if wanted is None else wanted
    if limit <= 1:
        return []
    made: list[Member] = []
    budget, seconds = runner.budget, first_seconds
    while 1 + len(made) < limit:
        if not budget.fits(seconds):
            print(
                f"final: {1 + len(made)} of {limit} models retrained on train + validation; the "
                f"next ({seconds:.0f}s) does not fit in the {max(budget.left(), 0):.0f}s left of "
                "search.timeout"
            )
            break
        seeded = trial_cfg.copy()
        with open_dict(seeded):  # init, shuffling, augmentation; never the split
            seeded.seed = int(cfg.seed) + 101 + len(made)
        print(f"final: retraining the best config on train + validation, seed {seeded.seed}")
        label = f"trial {best.number} retrained on train + validation, seed {seeded.seed}"
        began = time.perf_counter()
        model = _trained(runner, seeded, data, True, label, "the ensemble goes on with what it has")
        if model is None:  # a diverged seed (said)
            break
        seconds = time.perf_counter() - began  # its features are cached now: the next costs as much
        made.append(Member(label, best.number, None, in_memory(model)))
    return made


def _print(result: FinalResult, report: TestReport) -> None:
    m = result.metrics
    print(
        f"test ({len(report.y_true)} images, {result.source}): accuracy={m['test_accuracy']:.4f} "
        f"f1_macro={m['test_f1_macro']:.4f} precision_macro={m['test_precision_macro']:.4f} "
        f"recall_macro={m['test_recall_macro']:.4f}",
        flush=True,
    )
    if result.registered_uri:
        print(f"registered {result.registered_uri} (version {result.registered_version})")
    for kind, path in result.exports.items():
        print(f"exported {kind}: {path}")
