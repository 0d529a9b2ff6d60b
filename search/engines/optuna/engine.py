"""The Optuna engine: translate the space to `suggest_*`, drive a persistent study.

The study lives in `search.storage` (SQLite by default, PostgreSQL for many workers) and is
loaded if it exists, so the same command continues it until `search.n_trials` trials have
finished in all.

A trial ends COMPLETE, PRUNED (the pruner stopped it; fed every epoch by `ObjectivePruning`) or
FAIL. A FAIL with user attr `failure_reason` is a genuine failure (NaN loss, an exception) and
counts as finished; a FAIL with `interrupted` (Ctrl-C, SIGTERM) or one failed later because its
process died (SIGKILL: pid gone on this host, or no heartbeat for `search.grace_period`) does not
count, and its parameters are queued again (user attr `retry_of` on the new trial).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, cast

import optuna
import sqlalchemy.exc
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from experiments.errors import UserInputError
from experiments.outcome import TrialOutcome
from search.engines.optuna.algorithms import (
    TrialSeededSampler,
    describe,
    make_pruner,
    make_sampler,
)
from search.engines.optuna.serialized import serialized
from search.engines.optuna.threads import optimize_in_threads
from search.space.baseline import announce, baseline
from search.space.spec import Param
from search.space.variants import announce_variants, variants
from search.trials.budget import Budget
from search.trials.budget_stop import BudgetStop, EpochTimer, OutOfTime, out_of_time
from search.trials.objectives import Direction, Objective, objectives_of
from search.trials.outcomes import failure_reason, forgiven, is_finished
from search.trials.runner import EpochListener, TrialRunner
from search.trials.types import Best
from tracking.liveness import is_alive, this_worker

STORAGE_TRIES = 3  # writes of an interrupted trial's mark (OptunaEngine._note_interrupted)
# Sampled trials in a row too dear for the time left (`Budget.too_long`: not started) that end
# the search. After one, a cheaper draw may still fit (a plain trial after a `light` one: at 3x
# on cifar10-test, a screened head drawn with `light` ended the search with 41 s for one more
# trial); a sampler that keeps drawing dear ones must not fill the study with trials not run.
NOT_STARTED_IN_A_ROW = 3


def outcome_of(trial: FrozenTrial) -> TrialOutcome | None:
    """The shared outcome of an Optuna trial; None while it runs or waits.

    Optuna's FAIL is two outcomes: a genuine failure carries user attr `failure_reason`; any
    other FAIL was cut short (Ctrl-C, SIGTERM, a dead process) and is redone.
    """
    if trial.state == TrialState.COMPLETE:
        return TrialOutcome.COMPLETE
    if trial.state == TrialState.PRUNED:
        return TrialOutcome.PRUNED
    if trial.state == TrialState.FAIL:
        failed = "failure_reason" in trial.user_attrs
        return TrialOutcome.FAILED if failed else TrialOutcome.INTERRUPTED
    return None


def counts_as_finished(trial: FrozenTrial) -> bool:
    """Complete, pruned, or genuinely failed; not a trial cut short by a kill or Ctrl-C."""
    return is_finished(outcome_of(trial))


class MonitorMissing(UserInputError):
    """The objective is not among the metrics training reports: pruning could not work."""


class _Failed(Exception):
    """A genuinely failed trial, re-raised so that Optuna records FAIL and the sweep goes on."""


class ObjectivePruning:
    """Reports the objective to the trial each epoch and stops it when Optuna's pruner says so.

    What `optuna_integration.KerasPruningCallback` does (`trial.report`, `should_prune`), called
    with each epoch's logs from a worker's messages (or by a Keras callback in the runner when
    the trial trains in this process), so the sweep process imports no Keras. Unlike it, a
    missing metric stops the sweep (it would only warn, and pruning would be off silently), and
    epochs whose loss is NaN are not reported, so a diverging trial ends FAIL (with its reason),
    not PRUNED.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str,
        budget: Budget | None = None,
        epochs: int | None = None,
    ) -> None:
        self._trial, self._monitor = trial, monitor
        # The trial's planned epochs: the last one is reported but never pruned (nor stopped by
        # the budget), so a trial that trained all its epochs completes with its model.
        self._last = None if not epochs else int(epochs) - 1
        self._budget = budget if budget is not None else Budget(None)
        # No pruner (search.pruner=none) and no budget: the report is a record, not a verdict
        # to wait for.
        no_pruner = isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        self.decides = not no_pruner or self._budget.limited
        self._timer = EpochTimer()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        last = self._timer.lap()
        if self._monitor not in logs:
            raise MonitorMissing(
                f"train.objective={self._monitor!r} is not among the metrics training reports "
                f"({', '.join(sorted(logs))}), so the pruner would get nothing; use one of the "
                "val_* metrics listed."
            )
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return
        self._trial.report(float(logs[self._monitor]), step=epoch)
        if epoch == self._last:
            return  # trained all its epochs: it completes
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned after epoch {epoch + 1}.")
        if self._budget.stops_running_trial(last):  # the time left is the final stage's
            raise optuna.TrialPruned(out_of_time(epoch))


def suggest(trial: optuna.Trial, space: list[Param]) -> dict[str, Any]:
    """Sample every active parameter (parents first), returning {dotted key: value}."""
    sampled: dict[str, Any] = {}
    for p in space:
        if not p.is_active(sampled):
            continue
        if p.kind == "categorical":
            sampled[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None  # numeric: parse_space sets both
            sampled[p.name] = trial.suggest_int(
                p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        else:
            assert p.low is not None and p.high is not None  # numeric: parse_space sets both
            sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return sampled


def make_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale: Any = None,
) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; a SQLite file's folder is created first. The two
    settings are rows of search/config/rules.py, checked before the sweep."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage_options: dict[str, Any] = dict(
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period if heartbeat_interval else None,
        heartbeat_stale_trial_callback=on_stale if heartbeat_interval else None,
    )
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, **storage_options)
        except Exception as err:  # SQLAlchemy raises many kinds; all mean the URL is unusable
            if attempt < 5 and _lost_schema_race(err):  # another worker created it: find it
                time.sleep(0.5 * (attempt + 1))
                continue
            raise UserInputError(
                f"search.storage={url!r} cannot be opened ({type(err).__name__}: {err}). "
                "Accepted: sqlite:///path/to/file.db or "
                "postgresql+psycopg://user:password@host/database."
            ) from err
    raise AssertionError("unreachable")


def _lost_schema_race(err: Exception) -> bool:
    """Whether creating Optuna's tables failed because another worker, starting at the same
    moment, created them first: on PostgreSQL a unique violation or "relation ... already
    exists" (DuplicateTable, a ProgrammingError), depending on which statement met the other's."""
    if isinstance(err, sqlalchemy.exc.IntegrityError):
        return True
    return isinstance(err, sqlalchemy.exc.ProgrammingError) and "already exists" in str(err)


def best_of(study: optuna.Study) -> Best | None:
    """The study's best complete trial so far, as the runner tracks it: the best finite score
    (Optuna's `best_trial` would crown an infinite one; `OptunaEngine.top` drops those too)."""
    if len(study.directions) > 1:
        return None  # no single best; the champion rule (search.final.champion_rule) chooses
    top = ranked(study, 1)
    return top[0] if top else None


def ranked(study: optuna.Study, k: int) -> list[Best]:
    """The k best complete trials of a single-objective study with a finite score, best first."""
    done = [
        (float(t.value), t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done.sort(key=lambda pair: (-pair[0] if maximize else pair[0], pair[1].number))
    return [
        Best(value, t.number, dict(t.params), t.user_attrs.get("mlflow_run_id"))
        for value, t in done[:k]
    ]


def name_metrics(study: optuna.Study, objectives: list[Objective]) -> None:
    """Name the study's objectives (optuna-dashboard shows "val_accuracy", not "Objective 0")."""
    names = [o.metric for o in objectives]
    if study.metric_names != names:
        with suppress(Exception):  # another worker naming it at the same moment
            study.set_metric_names(names)


class OptunaEngine:
    """A persistent Optuna study, continued until search.n_trials trials have finished in all."""

    def __init__(self, cfg: DictConfig, space: list[Param], study_name: str) -> None:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: our own line
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.cfg, self.space, self.study_name = cfg, space, study_name
        self.interrupted: list[int] = []  # trials of this process cut short by Ctrl-C / SIGTERM
        self.recovered: list[int] = []  # trials of dead processes failed and queued again
        self.store = f"Optuna study in {cfg.search.storage}"
        self.tags = {
            "sampler": describe(cfg.search, "sampler"),
            "pruner": describe(cfg.search, "pruner"),
        }
        # One direction per objective (train.objectives); Optuna cannot prune several.
        self.objectives = objectives_of(cfg)
        multi = len(self.objectives) > 1
        # Sampler and pruner first: a bad one fails before the storage file is created.
        sampler, pruner = make_sampler(cfg.search, space), make_pruner(cfg.search)
        if cfg.search.get("seed") is not None:  # never the same random stream twice in a study
            sampler = TrialSeededSampler(sampler, int(cfg.search.seed))
        if multi:
            pruner = optuna.pruners.NopPruner()
        self.study = optuna.create_study(
            study_name=study_name,
            storage=serialized(
                make_storage(
                    str(cfg.search.storage),
                    cfg.search.get("heartbeat_interval"),
                    cfg.search.get("grace_period"),
                    self._on_stale,
                )
            ),
            sampler=sampler,
            pruner=pruner,
            # Objective.direction is checked to be maximize | minimize (search/trials/objectives.py)
            directions=[cast(Direction, o.direction) for o in self.objectives],
            load_if_exists=True,
        )
        name_metrics(self.study, self.objectives)  # optuna-dashboard shows the names
        self._enqueue_baseline(cfg)

    def _enqueue_baseline(self, cfg: DictConfig) -> None:
        """Baseline first (search/space/baseline.py): a new study's trial 0 is the base config's values,
        and the next ones `search.variants` of it (search/space/variants.py).

        Only a study without any trial gets them, so a continued study never runs them again.
        """
        if self.study.get_trials(deepcopy=False):
            return
        base = baseline(self.space, cfg)
        announce(base)
        if base.usable:
            # skip_if_exists: workers starting a new study together queue the baseline once.
            self.study.enqueue_trial(
                base.values, user_attrs={"baseline": True}, skip_if_exists=True
            )
        points = variants(self.space, cfg)
        announce_variants(points)
        for words, point in points:
            if point.usable:
                self.study.enqueue_trial(
                    point.values, user_attrs={"variant": words}, skip_if_exists=True
                )

    def finished(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        return sum(counts_as_finished(t) for t in trials) - self._forgiven(trials)

    @staticmethod
    def _forgiven(trials: list[FrozenTrial]) -> int:
        """Timed-out trials that do not count, as no trial completed (trials/outcomes.py)."""
        return forgiven(
            [(outcome_of(t), str(t.user_attrs.get("failure_reason", ""))) for t in trials]
        )

    def best(self) -> Best | None:
        return best_of(self.study)

    def top(self, k: int) -> list[Best]:
        """The k best complete trials by the objective, best first (the final stage re-trains
        them with more seeds: search/final/reevaluate.py); a non-finite score ranks nowhere."""
        if len(self.study.directions) > 1:
            return []  # several objectives: the champion rule chooses, no single ranking
        return ranked(self.study, k)

    def recover(self) -> list[int]:
        """Fail the RUNNING trials of dead processes and queue their parameters again.

        A dead process of this host is found by its pid at once; one of another host when its
        heartbeat is older than search.grace_period (Optuna's fail_stale_trials).
        """
        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if is_alive(trial.user_attrs.get("worker")) is not False:
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, "interrupted", "process gone")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker recovered it first
            self._on_stale(self.study, trial)
        optuna.storages.fail_stale_trials(self.study)
        return list(self.recovered)

    def trial_alive(self, tags: Mapping[str, str]) -> bool | None:
        """Whether the Optuna trial a trial run's tags name is still RUNNING (for tracking)."""
        number = tags.get("sweeplab.optuna_trial")
        if tags.get("sweeplab.optuna_study") != self.study_name or number is None:
            return None
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        trial = trials.get(int(number))
        return None if trial is None else trial.state == TrialState.RUNNING

    def is_pruned(self, err: BaseException) -> bool:
        return isinstance(err, optuna.TrialPruned | OutOfTime)

    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue a dead trial's parameters again, once, so the interrupted work is redone."""
        self.recovered.append(trial.number)
        self._requeue(study, trial.number, trial.params, trial.user_attrs)

    def _note_interrupted(self, trial: optuna.Trial, params: dict, run_id: str | None) -> None:
        """Mark a trial cut short by Ctrl-C or a signal as interrupted and queue it again.

        The interrupt can land inside a storage call (the trial's per-epoch report), and that
        leaves this thread's storage session broken: the next call fails ("This transaction is
        closed") and only then rolls the session back. So each write is tried again, on a fresh
        session, a few times. Best effort after that: the trial stays FAIL without the mark.
        """
        for _ in range(STORAGE_TRIES):
            try:
                trial.set_user_attr("interrupted", "Ctrl-C or SIGTERM")
                trial.set_user_attr("mlflow_run_id", run_id)
                self._requeue(self.study, trial.number, params, trial.user_attrs)
                return
            except Exception:
                backend = getattr(self.study._storage, "_backend", self.study._storage)
                if isinstance(backend, optuna.storages.RDBStorage):
                    with suppress(Exception):
                        backend.remove_session()  # this thread's next call opens a new one

    @staticmethod
    def _requeue(
        study: optuna.Study, number: int, params: dict[str, Any], attrs: Mapping[str, Any]
    ) -> None:
        """Queue trial `number`'s parameters again, once; the retry stays the baseline or the
        variant the trial was (`attrs`: its user attrs)."""
        if not params:
            return  # killed before sampling: nothing to redo
        for other in study.get_trials(deepcopy=False):
            if other.user_attrs.get("retry_of") == number:
                return
        kept = {k: attrs[k] for k in ("baseline", "variant") if k in attrs}
        study.enqueue_trial(params, user_attrs={"retry_of": number, **kept})

    def optimize(self, runner: TrialRunner, n_trials: int) -> None:
        """Run trials until the study has search.n_trials finished ones, or until the search's
        share of `search.timeout` is spent (`runner.budget`: search/trials/budget.py).

        The stop rule counts the study's finished trials in the storage (not this call's, so
        `n_trials`, this call's share when it started, is only informative): the total stays
        exact across resumes, re-queued trials and several workers sharing the study.
        """
        self._optimize(runner, None)

    def first_trials(self, runner: TrialRunner) -> None:
        """Trial 0 and the `search.variants` queued after it, alone (none is run twice): the
        staged search (search/engines/optuna/staged.py) screens after them, so the screen's
        share is priced with the reserve their kinds bring (a variant with augmentation costs
        more to retrain: run after the screen, it raised the reserve past the time the screen
        had left for its heads' two-phase trials, and a 10x sweep on cifar10-test fine-tuned
        none of them)."""
        queued = sum(
            "baseline" in t.user_attrs or "variant" in t.user_attrs
            for t in self.study.get_trials(deepcopy=False)
        )
        first, done = max(queued, 1), self.finished()
        # Optuna starts a trial before its first stop check: with trial 0 done (a resumed
        # study), the next variant starts only if it fits in the time left.
        if done < first and not (done and runner.budget.search_over(self.next_kind(runner))):
            self._optimize(runner, first)

    def _optimize(self, runner: TrialRunner, upto: int | None) -> None:
        """`optimize`, ending at `upto` claimed trials when that is fewer than search.n_trials."""
        # Trials forgiven when this call starts (all timed out, none completed) are redone; the
        # ones this call ends count, so a timeout every trial hits still ends the call.
        total = int(self.cfg.search.n_trials) + self._forgiven(
            self.study.get_trials(deepcopy=False)
        )
        if upto is not None:
            total = min(total, upto)
        study_name = self.study_name

        too_dear = 0  # sampled trials in a row not started: too dear for the time left

        def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
            nonlocal too_dear
            trial.set_user_attr("worker", this_worker())
            params = suggest(trial, self.space)
            kind = runner.kind(params)
            if runner.budget.too_long(kind):  # drawn now, dearer than the check before it
                too_dear += 1
                last = too_dear >= NOT_STARTED_IN_A_ROW
                raise optuna.TrialPruned(self._not_started(trial, kind, runner.budget, last))
            too_dear = 0  # in a row only
            # Optuna cannot prune a multi-objective trial (no pruning callback then); the budget
            # still stops it at an epoch end (search.timeout: BudgetStop, without the pruner).
            multi = len(self.objectives) > 1
            epochs = int(params.get("train.epochs", self.cfg.train.epochs))
            pruning: list[EpochListener] = (
                [BudgetStop(runner.budget, epochs)]
                if multi
                else [ObjectivePruning(trial, runner.objective, runner.budget, epochs)]
            )
            tags = {"optuna_study": study_name, "optuna_trial": trial.number}
            try:
                outcome = runner.run(trial.number, params, pruning, tags=tags)
            except optuna.TrialPruned as err:
                trial.set_user_attr("mlflow_run_id", runner.last_run_id)
                # Who stopped it, as the MLflow tag sweeplab.stopped_by says: PRUNED either way.
                budget = str(err).startswith("search.timeout")
                trial.set_user_attr("stopped_by", "budget" if budget else "pruner")
                raise
            except OutOfTime as err:  # PRUNED, as the single-objective budget stop
                trial.set_user_attr("mlflow_run_id", runner.last_run_id)
                trial.set_user_attr("stopped_by", "budget")
                raise optuna.TrialPruned(str(err)) from err
            except KeyboardInterrupt:
                self.interrupted.append(trial.number)
                self._note_interrupted(trial, params, runner.last_run_id)
                raise
            except UserInputError:  # a config error (MonitorMissing, a failed first trial):
                # FAIL without failure_reason, not counted; the sweep stops with exit 2, and
                # the same parameters are queued first, as Keras Tuner hands the same trial
                # out again (the engine contract: tests/test_engine_contract.py).
                trial.set_user_attr("config_error", "the sweep stopped on it; redone first")
                trial.set_user_attr("mlflow_run_id", runner.last_run_id)
                self._requeue(self.study, trial.number, params, trial.user_attrs)
                raise
            except Exception as err:
                trial.set_user_attr("failure_reason", failure_reason(err)[:2000])
                trial.set_user_attr("mlflow_run_id", runner.last_run_id)
                raise _Failed(failure_reason(err)) from err
            trial.set_user_attr("mlflow_run_id", outcome.run_id)
            if multi:  # the values in train.objectives order
                return tuple(float(outcome.metrics[o.metric]) for o in self.objectives)
            return outcome.metrics[runner.objective]

        # Other workers sharing the study may be running trials: claim only what is left.
        if total - self.claimed() <= 0:
            print("the remaining trials are running in other workers: nothing to start here.")
            return

        said: list[bool] = []

        def done() -> bool:
            if (
                runner.failures.stop_reason
                or self.claimed() >= total
                or too_dear >= NOT_STARTED_IN_A_ROW
            ):
                return True
            if runner.budget.search_over(self.next_kind(runner)):
                if not said and not runner.budget.plateaued():  # a plateau says so itself
                    said.append(True)
                    print("search.timeout: the time left is the final stage's; no new trial")
                return True
            return False

        def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
            if done():
                study.stop()

        # search.workers > 1: that many threads, each driving its own worker process (storage
        # calls serialized: optuna_serialized), never more than the trials left.
        threads = min(int(self.cfg.search.get("workers") or 1), total - self.claimed())
        if threads > 1:
            optimize_in_threads(
                self.study,
                objective,
                threads,
                done,
                catch=(_Failed,),
            )
        else:
            self.study.optimize(
                objective,
                n_trials=None,
                catch=(_Failed,),
                callbacks=[stop_when_done],
            )
        runner.failures.raise_if_exceeded()

    def next_kind(self, runner: TrialRunner) -> str | None:
        """The budget's kind of the trial Optuna hands out next: the first queued one (a variant,
        a carried head, a retry) when its parameters fix its augmentation; None when it is
        sampled (its kind is known only then: `too_long` checks it)."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return None
        fixed = min(waiting, key=lambda t: t.number).system_attrs.get("fixed_params") or {}
        drawn = [p.name for p in self.space if p.name.startswith("data.augmentation.")]
        if any(name not in fixed for name in drawn):
            return None
        return runner.kind(fixed)

    @staticmethod
    def _not_started(trial: optuna.Trial, kind: str, budget: Budget, last: bool) -> str:
        """Mark a trial sampled too dear for the time left (PRUNED, no run, no model) and say so;
        `last`: the search ends with it (NOT_STARTED_IN_A_ROW)."""
        trial.set_user_attr("stopped_by", "budget")
        trial.set_user_attr("not_started", kind)
        after = "no new trial" if last else "another draw may cost less"
        reason = (
            f"search.timeout: trial {trial.number} not started: a trial with augmentation "
            f"{kind} takes about {budget.price(kind):.0f}s, and {max(budget.left(), 0):.0f}s are "
            f"left of which the final stage's is {budget.reserve():.0f}s; {after}"
        )
        print(reason, flush=True)
        return reason

    def claimed(self) -> int:
        """Trials that count toward n_trials plus those running now (here or in other workers).

        Counting running trials keeps workers sharing a study from overshooting the total.
        """
        trials = self.study.get_trials(deepcopy=False)
        return sum(counts_as_finished(t) or t.state == TrialState.RUNNING for t in trials)
