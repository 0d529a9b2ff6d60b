"""The worker process: trains trials that the sweep process sends, one at a time.

Started with the *spawn* context (TensorFlow is never forked) by `search.workers`, it imports
TensorFlow once and then serves trials until told to quit or replaced. It never touches a store:
it only trains and sends messages over its pipe, so the sweep process stays the one writer of the
Optuna and MLflow stores. It may be started before the sweep's config is composed (slot 0, by
`search.workers.start_early`), so its settings come as the first message, not as arguments:

    sweep -> worker   ("setup", threads)                 TensorFlow's threads (None: its default)
    worker -> sweep   ("ready", pid)                     TensorFlow imported and set up

Per trial:

    sweep -> worker   ("trial", config yaml, SharedData, cost names)
    worker -> sweep   ("epoch", epoch, logs)         then waits for "go" or "stop" (pruning)
    worker -> sweep   ("done", Trained)              then waits for the model's fate:
    sweep -> worker   ("save", folder) | ("drop",)   worth keeping (tracking.log_models) or not
    worker -> sweep   ("saved", error or None)       after a "save"
                    | ("stopped",)                   after a "stop" verdict
                    | ("error", kind, reason)        the trial failed; kind: "nan" (TrialFailed),
                                                     "input" (UserInputError) or "error"

Ctrl-C reaches the whole process group, and a job system's SIGTERM may reach every process of
the job, but only the sweep decides what they mean (the trial interrupted and redone on resume,
not failed by a dead worker): the worker ignores both, and the sweep ends it. A watchdog thread ends the worker as soon as its parent is
gone (kill -9 of the sweep), so no worker outlives its sweep.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

PARENT_POLL_S = 0.5


@dataclass
class Trained:
    """What a worker sends back for a trained trial (its model stays in the worker, or in the
    file the sweep named)."""

    metrics: dict[str, float]
    history: dict[str, list[float]]
    seconds: float
    rss_mb: float  # the worker's resident memory after the trial
    feature_cache: Any  # experiments.training.cache_report.CacheReport
    costs: dict[str, float]  # model_costs of the trained model
    model_folder: str | None = None  # where the worker saved the model, when it was kept
    model_error: str | None = None  # why saving a kept model failed

    @property
    def epochs(self) -> int:
        return len(next(iter(self.history.values()), []))


class StopTraining(Exception):  # noqa: N818 - a signal, not an error
    """The sweep's verdict after an epoch: stop (the pruner's decision)."""


def resident_mb() -> float:
    """This process's resident memory (RSS) in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)  # the sweep is gone: nothing may train on its behalf
        time.sleep(PARENT_POLL_S)


def serve(conn: Connection, parent: int, keras_home: str | None, save_model_at: str) -> None:
    """The worker's main loop (the spawn target); returns when the sweep says quit.

    `save_model_at` ("module:function") names the function that writes a model the sweep keeps
    as files the sweep logs: the tracker's, named rather than handed over, so that experiments/
    imports no tracker and TensorFlow is first imported here, quietly, not while unpickling.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if keras_home:
        os.environ["KERAS_HOME"] = keras_home
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import tensorflow as tf
    from omegaconf import OmegaConf

    from experiments.evaluation.cost import model_costs
    from experiments.training.trial import run_trial

    module, function = save_model_at.split(":")

    # The saver's module imports MLflow (1-3 s of CPU), needed first when trial 0 ends (it is
    # always kept: nothing to beat yet). Imported beside that trial's training, which leaves a
    # core idle on small models, instead of on its critical path or before "ready"; its
    # `warm_up`, when it has one, does the first save's one-time work there too.
    def import_saver() -> None:
        with contextlib.suppress(BaseException):  # raised where it is used (save_model) instead
            getattr(importlib.import_module(module), "warm_up", lambda: None)()

    preload = threading.Thread(target=import_saver, daemon=True)

    def save_model(model: Any, sample: Any, folder: str) -> None:
        preload.join()  # an import that failed there is raised here, by importing again
        getattr(importlib.import_module(module), function)(model, sample, folder)

    class Reporter(keras.callbacks.Callback):
        """Sends each epoch's logs and waits for the sweep's verdict."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items() if _is_scalar(v)}
            conn.send(("epoch", epoch, logs))
            if conn.recv() == "stop":
                raise StopTraining()

    opened: dict[str, Any] = {}
    try:
        setup = conn.recv()
    except EOFError:  # started early for a sweep that ended before it needed a worker
        return
    if setup[0] != "setup":
        return
    threads = setup[1]
    if threads:  # before TensorFlow runs its first op, which fixes its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    conn.send(("ready", os.getpid()))
    preload.start()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "quit":
            return
        _, config_yaml, shared, cost_names = message
        if shared.key not in opened:
            opened.clear()
            opened[shared.key] = shared.open()
            # Everything alive now (TensorFlow, the data) lives as long as the worker: frozen,
            # the per-trial gc.collect() (fresh_session) does not re-scan it, 0.3-0.6 s a trial
            # otherwise (the sweep process does the same).
            gc.freeze()
        data = opened[shared.key]
        try:
            result = run_trial(OmegaConf.create(config_yaml), data, [Reporter()])
            costs = model_costs(result.model, data.sample(1), tuple(cost_names))
        except StopTraining:
            conn.send(("stopped",))
            continue
        except Exception as err:
            conn.send(("error", *_kind_and_reason(err)))
            continue
        conn.send(
            (
                "done",
                Trained(
                    result.metrics,
                    result.history,
                    result.seconds,
                    resident_mb(),
                    result.feature_cache,
                    costs,
                ),
            )
        )
        verdict = conn.recv()
        if verdict[0] == "save":
            try:
                save_model(result.model, data.sample(8), verdict[1])
                conn.send(("saved", None))
            except Exception as err:  # the trial's result stands; the sweep says what is missing
                conn.send(("saved", f"{type(err).__name__}: {err}"))
        del result


def _is_scalar(value: Any) -> bool:
    import numpy as np

    return bool(np.isscalar(value) or np.ndim(value) == 0)


def _kind_and_reason(err: BaseException) -> tuple[str, str]:
    """How the sweep re-raises a training error, and its text (as `search.trials.failure_reason`:
    a TrialFailed's own text, else type and message)."""
    from experiments.errors import TrialFailed, UserInputError

    if isinstance(err, TrialFailed):
        return "nan", str(err)
    if isinstance(err, UserInputError):
        return "input", str(err)
    return "error", f"{type(err).__name__}: {err}"


if __name__ == "__main__":  # pragma: no cover - started by multiprocessing, not by hand
    sys.exit("experiments.worker is started by the sweep (search.workers)")
