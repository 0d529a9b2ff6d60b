"""sweeplab's own cache folder, shared by what it keeps between sweeps: `data.cache=file`'s
decoded images (experiments/data/directory.py) and the empty MLflow store that new stores are
copied from (tracking.mlflow_tracker.store_template)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/sweeplab`, else `~/.cache/sweeplab` (an empty variable counts as unset,
    as the XDG base directory specification says)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "sweeplab"
