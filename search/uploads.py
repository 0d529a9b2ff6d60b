"""Log trained models in the background, off the trial's critical path.

A worker saves its trained model to a file and goes on to the next trial at once; the trial's
MLflow run, complete with metrics and state, stays open until one background thread of the
sweep process has loaded that file and logged it as the run's MLflow model, then ends the run.
The sweep drains the queue before its summary and final stage (which read the best model) and
on Ctrl-C; a kill -9 mid-upload leaves the run RUNNING with state complete, which the next start
ends FINISHED (`tracking.recovery`), so no completed trial is lost.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class ModelUploads:
    """One background thread that logs models in the order trials completed."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-upload")
        self._pending: list[Future] = []

    def submit(self, record, model_file: str, sample: np.ndarray) -> None:
        """Log `model_file` as `record`'s model, then end the run (a `TrialRun`, deferred)."""
        self._pending.append(self._pool.submit(_upload, record, model_file, sample))

    def drain(self) -> None:
        """Wait until every submitted model is logged and its run ended."""
        while self._pending:
            self._pending.pop(0).result()


def _upload(record, model_file: str, sample: np.ndarray) -> None:
    import keras

    # Without STORE_LOCK: holding it for the whole upload (load, predict, serialize) made the
    # next trial's first MLflow writes wait for it, which put the upload back on the critical
    # path. MLflow's own SQLite sessions wait up to 20 s for the few short write transactions
    # an upload makes, so the two threads still never see "database is locked".
    try:
        model = keras.models.load_model(model_file, compile=False)
        record.log_model(model, sample)
    except Exception as err:  # the trial's result stands; say what is missing
        print(f"warning: the model of run {record.run_id} was not logged: {err}", file=sys.stderr)
        record.set_tags({"sweeplab.model_error": f"{type(err).__name__}: {err}"[:5000]})
    finally:
        record.finish()
        if os.path.exists(model_file):
            os.unlink(model_file)
        keras.backend.clear_session()  # the loaded model's state: this thread is Keras's only user
