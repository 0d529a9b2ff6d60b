"""Remove what a failed sweep start created, so a bad input leaves nothing behind.

`search.config.stores` and the config checks find most bad input before anything is written. What is
found later, while the sweep starts (data that cannot be read, a store MLflow refuses), would
otherwise leave a new output folder, an empty optuna.db or mlflow.db, or a Keras cache folder
with only keras.json in a mistyped keras_home. `removed_on_error` notes which of those paths
exist when the start begins and, when a `UserInputError` ends it, deletes the ones this
invocation created. It is used only around the start, before the first trial: after that, what
was written is a record of the sweep and stays.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from experiments.errors import UserInputError
from search.config.stores import sqlite_path


def _watched(cfg: DictConfig) -> list[Path]:
    """The paths a sweep start may create: the output folder and everything it writes."""
    paths = [Path(str(cfg.output_dir))]
    for url in (cfg.search.get("storage"), cfg.tracking.get("tracking_uri")):
        path = sqlite_path(str(url)) if url else None
        if path is not None:
            paths += [path, path.with_name(path.name + "-journal")]
    for folder in (cfg.search.get("directory"), cfg.tracking.get("artifact_location")):
        if folder and "://" not in str(folder):
            paths.append(Path(str(folder)).expanduser().resolve())
    if cfg.get("keras_home"):
        paths.append(Path(str(cfg.keras_home)))
    return paths


@contextmanager
def removed_on_error(cfg: DictConfig) -> Iterator[None]:
    """Run the sweep start; on `UserInputError`, delete the watched paths it created.

    Inside an output folder that existed before, only its entries that are new are deleted.
    """
    watched = _watched(cfg)
    existed = {path: path.exists() for path in watched}
    output_dir = watched[0]
    before = set(output_dir.iterdir()) if output_dir.is_dir() else None
    try:
        yield
    except UserInputError:
        created = [path for path in watched if not existed[path] and path.exists()]
        if before is not None and output_dir.is_dir():
            created += [entry for entry in output_dir.iterdir() if entry not in before]
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            _remove(path)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
