"""Sweeps: the command-line entry points, the search space and the search engines.

The environment is set here, before any `search.*` module (entry point or `search.sweep` called
from a test or a notebook) can import TensorFlow or MLflow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no background threads in sweeps
