"""Run one trial for any engine: sampled params in, tracked result out.

Both engines call `TrialRunner.run`, so the trial config, data, model, MLflow records and the
terminal line are the same whichever engine sampled the parameters.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import DictConfig, OmegaConf

from experiments.data.load import loading_key
from experiments.data.splits import ImageData, train_plus_val
from experiments.errors import TrialFailed, UserInputError
from experiments.outcome import TrialOutcome, stopped_words
from experiments.worker import Trained, resident_mb
from search.execution.data_fit import load_fitted
from search.execution.leftovers import scratch_folder
from search.execution.store_lock import STORE_LOCK, released
from search.space.apply import config_yaml, trial_values
from search.trials.budget import PLAIN, Budget, kind_of
from search.trials.objectives import cost_plan, metric_text, objectives_of
from search.trials.outcomes import FailureStreak, failure_reason, was_interrupted
from search.trials.types import Best
from tracking.mlflow_tracker import EpochLogger, SweepTracker, dataset_tags

if TYPE_CHECKING:  # the sweep process with workers never imports TensorFlow
    import keras

    from experiments.data.shared import SharedData
    from experiments.training.trial import TrialResult
    from search.execution.pool import Worker, WorkerPool


class EpochListener(Protocol):
    """What an engine hands a trial to hear each epoch's logs (the pruner); raising stops it.

    `decides` (optional, default True): whether it can stop the trial, so a worker waits for it
    after each epoch; one that cannot (no pruner) hears the epoch while the worker trains on.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...


@dataclass
class Outcome:
    """A finished trial: what training gave back and the MLflow run that records it."""

    result: Trained
    run_id: str

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics


class TrialRunner:
    """Trains trials of one sweep, caching the data split between trials that share it."""

    def __init__(
        self,
        base: DictConfig,
        tracker: SweepTracker,
        tags: Mapping[str, Any],
        is_pruned: Callable[[BaseException], bool] = lambda err: False,
        data: ImageData | None = None,
        pool: WorkerPool | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.base, self.tracker, self.tags, self.is_pruned = base, tracker, dict(tags), is_pruned
        # With a pool, trials train in worker processes; without one (search.workers=0,
        # search.rerun), in this process.
        self.pool = pool
        self.scratch = scratch_folder(base)
        self._shared: dict[str, SharedData] = {}
        self.objective = str(base.train.objective)
        # Several objectives: each trial line shows them all, and no "best so far" (a front).
        self.objectives = [o.metric for o in objectives_of(base)]
        self.maximize = base.train.direction == "maximize"
        self.best: Best | None = None
        self._data: dict[str, ImageData] = {}
        self._grown: tuple[ImageData, ImageData] | None = None  # (data, train + val), no pool
        if data is not None:  # already loaded (and checked) for the base config
            self._data[loading_key(base.data, int(base.seed))] = data
        limit = base.search.get("max_consecutive_failures")
        # Engines check it after each trial: `failures.raise_if_exceeded()`.
        self.failures = FailureStreak(None if limit is None else int(limit))
        self.costs = cost_plan(base)  # cost metrics measured on every trial, and on what
        self.started = 0  # trials this runner started
        self.ended = 0  # trials this runner saw end counted: complete, pruned, failed
        self._local = threading.local()  # search.workers > 1 runs trials in threads
        self._resolved: Any = None  # the base config resolved to dicts, once
        # search.timeout: when the search ends; fed every completed trial (search/trials/budget.py).
        self.budget = budget if budget is not None else Budget(None)

    @property
    def last_run_id(self) -> str | None:
        """The MLflow run of the trial this thread started last."""
        return getattr(self._local, "run_id", None)

    @last_run_id.setter
    def last_run_id(self, run_id: str | None) -> None:
        self._local.run_id = run_id

    def _is_config_failure(self, err: BaseException) -> bool:
        """Whether a failure is one every trial of this config will share, so the sweep stops.

        The rule: no trial of this invocation has ended yet (complete, pruned or failed: this is
        the first to finish, whatever `search.workers` is; one that ended the same way before
        was not counted either), it raised (not a NaN loss, `TrialFailed`, which depends on the
        sampled values), and no trial of the study has ever completed. Failing every trial in
        turn would only end in a "complete" study with no best model.
        """
        return self.ended == 0 and self.best is None and not isinstance(err, TrialFailed)

    def data_for(self, cfg: DictConfig) -> ImageData:
        """The split for this trial's data config, loaded once per distinct data config."""
        return self._loaded(cfg.data, int(cfg.seed))

    def _loaded(self, data_cfg: DictConfig, seed: int) -> ImageData:
        key = loading_key(data_cfg, seed)  # augmentation, class weights: same images
        if key not in self._data:  # in memory only if it fits (search/execution/data_fit.py)
            self._data[key] = load_fitted(data_cfg, seed, self.pool)
        return self._data[key]

    def run(
        self,
        number: int,
        params: Mapping[str, Any],
        callbacks: list[EpochListener] | None = None,
        tags: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Train trial `number` with `params` applied to the base config; record it in MLflow.

        `overrides` are config values the engine sets without sampling them (Hyperband's epochs
        for one round): they reach the trial config, not the MLflow params, so every engine logs
        exactly the space keys. Re-raises what stopped the trial (pruning, failure, interrupt)
        after recording it, so the engine can set its own state; an error caused by Ctrl-C is
        re-raised as KeyboardInterrupt, and failures are counted in `failures`.
        """
        with STORE_LOCK:  # search.workers > 1: other threads write between this one's writes
            return self._run(number, params, callbacks, tags, overrides)

    def _run(
        self,
        number: int,
        params: Mapping[str, Any],
        callbacks: list[EpochListener] | None,
        tags: Mapping[str, Any] | None,
        overrides: Mapping[str, Any] | None,
    ) -> Outcome:
        self.last_run_id = None
        self.started += 1
        values = self._values({**params, **(overrides or {})})
        data_cfg = OmegaConf.create(values["data"])
        data = self._loaded(data_cfg, int(values["seed"]))
        run_tags = {**self.tags, "trial_number": number}
        text = config_yaml(values)
        # The whole config as OmegaConf nodes only where the trial trains here (a worker gets
        # the text): building them costs the sweep process 20-100 ms a trial.
        cfg = OmegaConf.create(values) if self.pool is None else None
        with ExitStack() as hold:
            try:
                worker, failed = self._hand_over(text, data, hold), None  # None: trains here
            except Exception as err:  # no worker could take it: recorded as the trial's failure
                worker, failed = None, err
            if self.pool is not None:  # shared now: the mapped pixels, not the decoded copy
                data = self._loaded(data_cfg, int(values["seed"]))
            planned = int(values.get("train", {}).get("epochs") or 0) or None
            kind = kind_of(values["data"].get("augmentation"))  # its price, for the budget
            return self._record(
                number, params, cfg, text, data, worker, failed, callbacks, run_tags, tags,
                planned, kind,
            )  # fmt: skip

    def _values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trial config of `params`, as plain values."""
        if self._resolved is None:
            self._resolved = OmegaConf.to_container(self.base, resolve=True)
        return trial_values(self._resolved, params)

    def kind(self, params: Mapping[str, Any]) -> str:
        """The budget's kind of a trial with `params` (`search.trials.budget.kind_of`)."""
        return kind_of(self._values(params).get("data", {}).get("augmentation"))

    def _hand_over(self, config_text: str, data: ImageData, hold: ExitStack) -> Worker | None:
        """With a pool, a worker (held by `hold`) that has the trial and starts on it while this
        process records the trial's run: store writes off the trial's critical path."""
        if self.pool is None:
            return None
        shared = self._shared_for(data)
        with released():  # waiting for a free worker: other threads record meanwhile
            worker = hold.enter_context(self.pool.worker())
            worker.send_trial(config_text, shared, self.costs)
        return worker

    def _record(
        self,
        number: int,
        params: Mapping[str, Any],
        cfg: DictConfig | None,
        config_text: str,
        data: ImageData,
        worker: Worker | None,
        failed: Exception | None,
        callbacks: list[EpochListener] | None,
        run_tags: dict[str, Any],
        tags: Mapping[str, Any] | None,
        planned: int | None = None,
        kind: str = PLAIN,
    ) -> Outcome:
        """The trial's MLflow run around its training (here, or followed in `worker`); `failed`:
        why no worker took the trial (a worker that died starting), raised in the run; `planned`:
        the epochs the trial was set to train (train.epochs), for "after epoch 2 of 10"; `kind`:
        its `kind_of`, under which the budget records its time."""
        described = data.describe()
        with self.tracker.trial_run(
            f"trial-{number}", params, {**run_tags, **dataset_tags(described), **(tags or {})}
        ) as record:
            self.last_run_id = record.run_id
            record.log_text(config_text, "trial_config.yaml")
            record.log_dataset(described)
            started = time.perf_counter()
            try:
                if failed is not None:
                    raise failed
                result, model = self._train(cfg, data, record.callback(), callbacks or [], worker)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:
                if was_interrupted(err):  # Ctrl-C inside TensorFlow can surface as another error
                    raise KeyboardInterrupt(str(err)) from err  # KILLED, redone on resume
                if self.is_pruned(err):
                    epochs = record.epochs_logged
                    # Who stopped it (tag sweeplab.stopped_by): the engine's pruner, or the
                    # budget (search.timeout: the time left is the final stage's).
                    stopped_by = "budget" if str(err).startswith("search.timeout") else "pruner"
                    # The time until the stop, as train_seconds of a complete trial, so the
                    # leaderboard's seconds are training time for every trial.
                    seconds = time.perf_counter() - started
                    with suppress(Exception):  # a record, not worth losing the trial's end over
                        record.log_batch({"train_seconds": seconds, "epochs": epochs}, {})
                    record.mark(
                        TrialOutcome.PRUNED,
                        pruned_at_epoch=epochs - 1,  # 0-based: MLflow's step axis
                        epochs_trained=epochs,
                        epochs_planned=planned or "",
                        stopped_by=stopped_by,
                    )
                    self.failures.record(TrialOutcome.PRUNED)
                    self.budget.record_pruned()
                    self.ended += 1
                    self._print(number, params, stopped_words(stopped_by, epochs, planned), None)
                else:
                    reason = failure_reason(err)
                    record.mark(TrialOutcome.FAILED, reason)
                    self._print(number, params, f"failed ({reason.splitlines()[0][:120]})", None)
                    if self._is_config_failure(err):
                        raise first_trial_failed(reason) from err
                    self.failures.record(TrialOutcome.FAILED, reason)
                    self.ended += 1
                raise
            value = result.metrics.get(self.objective, math.nan)
            self.failures.record(TrialOutcome.COMPLETE)
            self.ended += 1
            # One store call: timings, memory, final metrics, and the size (and latency when
            # used) of every trial for the leaderboard and multi-objective search; the feature
            # cache's tags (cached or not, hits and misses).
            record.log_batch(
                {
                    "train_seconds": result.seconds,
                    "epochs": result.epochs,
                    "rss_mb": result.rss_mb,  # of the process that trained it
                    **({"sweep_rss_mb": resident_mb()} if self.pool else {}),
                    **{f"final_{k}": v for k, v in result.metrics.items()},
                    **result.costs,
                },
                result.feature_cache.tags(),
            )
            result.metrics.update(result.costs)  # so an engine can return them as values
            if model is not None:  # trained here and worth keeping
                record.log_model(model, data.sample(8))
            elif result.model_folder:  # saved by its worker: files to log, no TensorFlow
                # A worker that saved the folder sent its keras_files too (search/execution/pool.py).
                record.log_model_files(result.model_folder, result.keras_files)  # type: ignore[arg-type]
                shutil.rmtree(result.model_folder, ignore_errors=True)
            if result.model_error:
                record.set_tags({"sweeplab.model_error": result.model_error[:5000]})
            record.mark(TrialOutcome.COMPLETE)
            self._update_best(value, number, dict(params), record.run_id)
            if not math.isnan(value):
                done = Best(value, number, dict(params), record.run_id)
                build = result.feature_cache.build_seconds
                self.budget.record(done, result.seconds, build, kind)
            shown = " ".join(
                f"{m}={metric_text(m, result.metrics.get(m, math.nan))}" for m in self.objectives
            )
            self._print(number, params, shown, result.seconds)
            if self.budget.limited and len(self.budget.completed) == 1 and not math.isnan(value):
                print(self.budget.plan(done), flush=True)  # the first of this invocation
        return Outcome(result, record.run_id)

    def _worth_keeping(self, metrics: Mapping[str, float]) -> bool:
        """Whether a completed trial's model is logged (`tracking.log_models`).

        "best": only a model that improves on the best so far, which the study's best model
        always did; with several objectives there is no "best so far", so every model.
        """
        policy = self.tracker.log_models
        if policy != "best":
            return policy == "all"
        if len(objectives_of(self.base)) > 1:
            return True
        value = metrics.get(self.objective, math.nan)
        if math.isnan(value):
            return False
        best = self.best
        return best is None or (value > best.value if self.maximize else value < best.value)

    def _train(
        self,
        cfg: DictConfig | None,
        data: ImageData,
        logger: EpochLogger,
        callbacks: list[EpochListener],
        worker: Worker | None,
    ) -> tuple[Trained, keras.Model | None]:
        """Train here (no pool) or in a worker. Returns the result and, when the model is worth
        keeping and was trained here, the model; a worker saves a kept model to files instead
        (`Trained.model_folder`), so this process never loads it."""
        if worker is None:
            assert cfg is not None  # built for trials that train here
            import keras

            from experiments.training.trial import run_trial
            from experiments.trial_cost import trial_costs

            hooks = [keras.callbacks.LambdaCallback(on_epoch_end=hook.on_epoch_end)
                     for hook in (logger, *callbacks)]  # fmt: skip
            r = run_trial(cfg, data, hooks)
            costs = trial_costs(r.model, data, self.costs)
            trained = Trained(
                r.metrics, r.history, r.seconds, resident_mb(), r.feature_cache, costs
            )
            return trained, r.model if self._worth_keeping(r.metrics) else None

        deciding = [c for c in callbacks if getattr(c, "decides", True)]
        hearing = [c for c in callbacks if not getattr(c, "decides", True)]

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            if deciding:
                with STORE_LOCK:  # the engine's callbacks: the pruner's verdict
                    for callback in deciding:
                        callback.on_epoch_end(epoch, logs)

        def after_epoch(epoch: int, logs: dict[str, float]) -> None:
            with STORE_LOCK:  # the epoch's curves (and reports), while the worker trains on
                for callback in hearing:
                    callback.on_epoch_end(epoch, logs)
                logger.on_epoch_end(epoch, logs)

        def keep(trained: Trained) -> str | None:
            if not self._worth_keeping(trained.metrics):
                return None
            return str(self.scratch / "models" / uuid.uuid4().hex)

        with released():
            return worker.train(on_epoch, keep, after_epoch), None

    def _shared_for(self, data: ImageData) -> SharedData:
        """`data` written once for the workers to map (see `experiments.data.shared`).

        From then on this process holds the pixels as the workers do, mapped from those files:
        it only reads them again for the final test and exports, so its own decoded copy is
        dropped rather than held beside the page cache for the whole sweep.
        """
        from experiments.data.shared import share

        key = data.fingerprint()
        if key not in self._shared:
            (self.scratch / "models").mkdir(parents=True, exist_ok=True)
            self._shared[key] = share(data, self.scratch / "data")
            for loaded, held in self._data.items():
                if held is data:
                    self._data[loaded] = self._shared[key].open()
        return self._shared[key]

    def train_final(
        self,
        cfg: DictConfig,
        data: ImageData,
        grown: bool = False,
        teacher: tuple[Any, float, float] | None = None,
    ) -> TrialResult:
        """The final stage's trainings (re-evaluation seeds, the retraining, the distilled
        student): `cfg` trained on `data` (train + validation when `grown`), against the soft
        targets of `teacher` = (model, temperature, alpha) when given; raises TrialFailed as a
        trial's training would.

        With a pool they train in a worker as trials do, which saves the model to files this
        process loads back: the sweep process keeps its flat memory and a crashed worker is a
        TrialFailed that says how it died. Without one (search.workers=0), here, as before.
        """
        if self.pool is None:
            from experiments.training.distil import distil
            from experiments.training.trial import run_trial

            used = self._train_plus_val(data) if grown else data
            if teacher is None:
                return run_trial(cfg, used)
            model, temperature, alpha = teacher
            return distil(cfg, used, model, temperature=temperature, alpha=alpha)
        if teacher is not None:  # it predicts here, once per image; the student trains there
            from experiments.training.distil import distil_config, soft_targets

            model, temperature, alpha = teacher
            cfg, data = distil_config(cfg, temperature, alpha), soft_targets(data, model)
        return self._trained_in_worker(cfg, data, grown)

    def _train_plus_val(self, data: ImageData) -> ImageData:
        """train + validation of `data`, concatenated once for the retraining and its seeds."""
        if self._grown is None or self._grown[0] is not data:
            self._grown = (data, train_plus_val(data))
        return self._grown[1]

    def _trained_in_worker(self, cfg: DictConfig, data: ImageData, grown: bool) -> TrialResult:
        """A trial's path to a worker (the shared pixel files, `Worker.send_trial`, `train`),
        with the model always kept: saved by the worker, loaded here for the test, the ensemble
        and the exports, its files then removed. No search.trial_timeout: it is no trial."""
        import keras

        from experiments.serving.keras_files import DATA_FOLDER, MODEL_FILE
        from experiments.training.trial import TrialResult
        from experiments.trial_cost import CostPlan

        assert self.pool is not None
        shared = self._shared_for(data).derived(data, grown)
        folder = self.scratch / "models" / uuid.uuid4().hex
        text = config_yaml(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        try:
            with self.pool.worker() as worker:
                worker.send_trial(text, shared, CostPlan(()), timed=False)
                trained = worker.train(_no_hook, lambda done: str(folder), _no_hook)
            if trained.model_error:
                raise TrialFailed(f"its model could not be saved ({trained.model_error})")
            model = keras.saving.load_model(folder / DATA_FOLDER / MODEL_FILE, compile=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        history, fc = trained.history, trained.feature_cache
        return TrialResult(trained.metrics, history, model, trained.seconds, fc)

    def _update_best(self, value: float, number: int, params: dict, run_id: str) -> None:
        if math.isnan(value):
            return
        if self.best is None or (
            value > self.best.value if self.maximize else value < self.best.value
        ):
            self.best = Best(value, number, params, run_id)

    def _print(
        self, number: int, params: Mapping[str, Any], outcome: str, seconds: float | None
    ) -> None:
        shown = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        timing = f"{seconds:6.1f}s" if seconds is not None else " " * 7
        best = f"best {self.best.value:.4f} (#{self.best.number})" if self.best else "best -"
        if len(self.objectives) > 1:  # no single best: the Pareto front, printed at the end
            print(f"trial {number:>3}  {outcome:<24} {timing}  {shown}", flush=True)
            return
        print(f"trial {number:>3}  {outcome:<24} {timing}  {best}  {shown}", flush=True)


def _no_hook(epoch: int, logs: dict[str, float]) -> None:
    """A final-stage training's epochs: no pruner decides, no trial run records the curves."""


def first_trial_failed(reason: str) -> UserInputError:
    """The error that stops a sweep whose first trial failed (`TrialRunner._is_config_failure`)."""
    return UserInputError(
        f"the first trial failed, and no trial of this study has completed: "
        f"{reason.splitlines()[0][:400]}. A failure this early is almost always in the config "
        "or the search space, shared by every trial, so the sweep stops here instead of failing "
        "each trial in turn; the trial is not counted toward search.n_trials. Fix the value "
        "named above and run the same command again (its MLflow run keeps the full reason, tag "
        "sweeplab.failure_reason)."
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
