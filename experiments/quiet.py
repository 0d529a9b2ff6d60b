"""Import TensorFlow without its start-up noise.

TensorFlow 2.21 prints absl and oneDNN banners from C++ before `TF_CPP_MIN_LOG_LEVEL` takes
effect, so the entry points import it once here with file descriptor 2 pointed at /dev/null.
Python exceptions from the import are unaffected: they are raised after stderr is restored.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


def quiet_tensorflow() -> None:
    """Import tensorflow and keras silently and turn down their Python-side warnings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with silenced_stderr():
            import tensorflow  # noqa: F401
    import keras  # noqa: F401

    quiet_logs()


@contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null inside the block: C++ log lines written there (which
    Python's logging cannot reach) are dropped; exceptions still propagate, after it is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_logs() -> None:
    """Turn down the Python-side warnings of the libraries a sweep uses; imports none of them.

    The sweep process with worker processes never imports TensorFlow (the workers do), and still
    wants MLflow's and alembic's chatter off.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the worker processes
    for name in ("tensorflow", "absl", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    # MLflow asks pyfunc models for type hints it cannot use for image tensors.
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
