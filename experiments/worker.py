"""The worker process: trains trials that the sweep process sends, one at a time.

Started with the *spawn* context (TensorFlow is never forked) by `search.execution.pool`, it imports
TensorFlow once and then serves trials until the sweep ends it (worn out, or the sweep is over).
It never touches a store: it only trains and sends messages over its pipe, so the sweep process
stays the one writer of the Optuna and MLflow stores. It may be started before the sweep's config is composed (slot 0, by
`search.execution.pool.start_early`), so its settings come as the first message, not as arguments:

    sweep -> worker   ("setup", threads)                 TensorFlow's threads (None: its default)
    worker -> sweep   ("ready", pid)                     TensorFlow imported and set up

Per trial:

    sweep -> worker   ("trial", config yaml, SharedData, CostPlan)
    worker -> sweep   ("epoch", epoch, logs)         then waits for "go" or "stop" (pruning)
    worker -> sweep   ("done", Trained)              then waits for the model's fate:
    sweep -> worker   ("save", folder) | ("drop",)   worth keeping (tracking.log_models) or not
    worker -> sweep   ("saved", error, KerasFiles)   after a "save" (error or KerasFiles: None)
                    | ("stopped",)                   after a "stop" verdict
                    | ("error", kind, reason)        the trial failed; kind: "nan" (TrialFailed),
                                                     "input" (UserInputError) or "error"

Once, before trial 0 under search.timeout (the plan's probe, experiments/training/probe.py):

    sweep -> worker   ("probe", config yaml, SharedData, ())
    worker -> sweep   ("probed", Probe) | ("error", kind, reason)

Ctrl-C reaches the whole process group, and a job system's SIGTERM may reach every process of
the job, but only the sweep decides what they mean (the trial interrupted and redone on resume,
not failed by a dead worker): the worker ignores both, and the sweep ends it. A watchdog thread ends the worker as soon as its parent is
gone (kill -9 of the sweep), so no worker outlives its sweep.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from experiments.serving.keras_files import KerasFiles, save_keras_files  # no TensorFlow import

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
    costs: dict[str, float]  # trial_costs of the trained model (experiments/trial_cost.py)
    model_folder: str | None = None  # where the worker saved the model, when it was kept
    model_error: str | None = None  # why saving a kept model failed
    keras_files: KerasFiles | None = None  # what the sweep needs to complete the model folder

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


def serve(conn: Connection, parent: int, keras_home: str | None) -> None:
    """The worker's main loop (the spawn target); returns when the sweep's end of the pipe closes
    (the sweep normally kills a worker it no longer needs).

    A kept model is saved as Keras files only (`experiments.serving.keras_files`): the sweep
    process writes the MLflow half of its folder, so this process never imports MLflow.
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
    from omegaconf import DictConfig, OmegaConf

    from experiments.training.trial import run_trial
    from experiments.trial_cost import CostPlan, trial_costs

    class Reporter(keras.callbacks.Callback):
        """Sends each epoch's logs and waits for the sweep's verdict."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items() if _is_scalar(v)}
            conn.send(("epoch", epoch, logs))
            if conn.recv() == "stop":
                raise StopTraining()

    def serve_trial(config_yaml: str, data: Any, plan: CostPlan) -> None:
        """Train one trial and answer the sweep until the trial's last message."""
        try:
            trial_cfg = cast(DictConfig, OmegaConf.create(config_yaml))  # a mapping's YAML
            result = run_trial(trial_cfg, data, [Reporter()])
            costs = trial_costs(result.model, data, plan)
        except StopTraining:
            conn.send(("stopped",))
            return
        except Exception as err:
            conn.send(("error", *_kind_and_reason(err)))
            return
        trained = Trained(
            result.metrics, result.history, result.seconds, resident_mb(), result.feature_cache,
            costs,
        )  # fmt: skip
        conn.send(("done", trained))
        verdict = conn.recv()
        if verdict[0] == "save":
            try:
                files = save_keras_files(result.model, data.sample(1), verdict[1])
                conn.send(("saved", None, files))
            except Exception as err:  # the trial's result stands; the sweep says what is missing
                conn.send(("saved", f"{type(err).__name__}: {err}", None))

    def probe(config_yaml: str, data: Any) -> None:
        """Time the parts of a trial (search.timeout's plan) and send them back."""
        from experiments.training.probe import probe_trial

        try:
            found = probe_trial(cast(DictConfig, OmegaConf.create(config_yaml)), data)
        except Exception as err:
            conn.send(("error", *_kind_and_reason(err)))
            return
        conn.send(("probed", found))

    opened: dict[str, Any] = {}
    try:
        setup = conn.recv()
    except EOFError:  # started early for a sweep that ended before it needed a worker
        return
    if setup[0] != "setup":
        return
    threads, tmp = setup[1], (setup[2] if len(setup) > 2 else None)
    if threads:  # before TensorFlow runs its first op, which fixes its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            kind, config_yaml, shared, plan = conn.recv()
        except EOFError:  # the sweep closed its end
            return
        if shared.key not in opened:
            opened.clear()
            opened[shared.key] = shared.open()
            # Everything alive now (TensorFlow, the data) lives as long as the worker: frozen,
            # the per-trial gc.collect() (fresh_session) does not re-scan it, 0.3-0.6 s a trial
            # otherwise (the sweep process does the same).
            gc.freeze()
        if tmp:  # made here, at a trial or the probe: removed with the sweep's scratch folder
            os.makedirs(tmp, exist_ok=True)
            tempfile.tempdir = tmp  # TensorFlow's autograph files: removed with the sweep's folder
        if kind == "probe":
            probe(config_yaml, opened[shared.key])
            continue
        serve_trial(config_yaml, opened[shared.key], plan)
        # The trial's graph and model are dropped now, while the sweep records the trial and
        # asks for the next one, not on the next trial's critical path (run_trial's own
        # fresh_session then finds little left to free).
        keras.backend.clear_session()
        gc.collect()


def _is_scalar(value: Any) -> bool:
    import numpy as np

    return bool(np.isscalar(value) or np.ndim(value) == 0)


def _kind_and_reason(err: BaseException) -> tuple[str, str]:
    """How the sweep re-raises a training error, and its text (as `search.trials.outcomes.failure_reason`:
    a TrialFailed's own text, else type and message)."""
    from experiments.errors import TrialFailed, UserInputError

    if isinstance(err, TrialFailed):
        return "nan", str(err)
    if isinstance(err, UserInputError):
        return "input", str(err)
    return "error", f"{type(err).__name__}: {err}"


if __name__ == "__main__":  # pragma: no cover - started by multiprocessing, not by hand
    sys.exit("experiments.worker is started by the sweep (search.execution.pool)")
