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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Before:
    """What existed before a sweep start: which watched paths, and the output folder's entries."""

    existed: dict[Path, bool]
    entries: frozenset[Path] | None  # None: the output folder did not exist

    @classmethod
    def now(cls, cfg: DictConfig) -> Before:
        watched = _watched(cfg)
        output_dir = watched[0]
        entries = frozenset(output_dir.iterdir()) if output_dir.is_dir() else None
        return cls({path: path.exists() for path in watched}, entries)


@contextmanager
def removed_on_error(cfg: DictConfig, since: Before | None = None) -> Iterator[None]:
    """Run the sweep start; on `UserInputError`, delete the watched paths it created.

    Inside an output folder that existed before, only its entries that are new are deleted.
    `since`: what existed when the start began, where it began before this block (the sweep's
    output folder lock, `search.execution.output_lock`, is taken before the stores are opened:
    a new folder and its lock file are this start's too).
    """
    before = since or Before.now(cfg)
    output_dir = Path(str(cfg.output_dir))
    try:
        yield
    except UserInputError:
        created = [path for path, was in before.existed.items() if not was and path.exists()]
        if before.entries is not None and output_dir.is_dir():
            created += [entry for entry in output_dir.iterdir() if entry not in before.entries]
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            _remove(path)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def scratch_folder(cfg: DictConfig) -> Path:
    """Where this process hands data and model files to its workers, and where it and its
    workers keep temporary files; removed when the sweep ends (by the next start after a kill)."""
    import os

    return Path(str(cfg.output_dir)) / ".workers" / str(os.getpid())


def _pid_is_gone(name: str) -> bool:
    """Whether the process named by a scratch folder's name (its pid) no longer exists."""
    import os

    if not name.isdigit():
        return False  # not a scratch folder: not ours to remove
    try:
        os.kill(int(name), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's: kept
        return False
    return False


def remove_dead_scratch(output_dir: str | Path) -> list[Path]:
    """Remove OUTPUT_DIR/.workers/<pid>/ folders whose sweep process is gone; returns them.

    A sweep removes its own scratch folder (decoded data handed to its workers, often hundreds
    of MB) when it ends, but a kill -9 gives it no chance: the next start in the same output
    folder removes it. Folders of live pids (another sweep sharing the folder) are kept; a pid
    reused by another process keeps its folder until that process ends too.
    """
    root = Path(output_dir) / ".workers"
    if not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if p.is_dir() and _pid_is_gone(p.name)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
