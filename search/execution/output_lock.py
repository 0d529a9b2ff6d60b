"""One sweep at a time in an output folder: an OS advisory lock held for the sweep's whole life.

Two sweeps started at once on one output folder both queued and trained the base config, then one
crashed on the other's trial (`Cannot tell a COMPLETE trial`); on a new folder both died creating
the same SQLite stores. Local stores (the default optuna.db and mlflow.db, Keras Tuner's project
folder) have one writing sweep, so a second one is refused, naming the first.

The lock is `fcntl.flock` on OUTPUT_DIR/.sweep.lock, taken before the sweep opens or creates any
store and held until it has ended (its final stage and clean-up included). The kernel drops it
when the process ends, however it ends: a kill -9 never leaves a stale lock, and the next start
resumes with no manual step. The file itself stays and means nothing on its own: while a sweep
runs it holds the holder's pid, host, start time, study and command line, which a refused start
prints; a sweep that ends empties it (one refused for bad input puts back what it found).

A refused start removes nothing, not even an output folder that did not exist when it began: the
sweep that holds the lock made it. Who takes the lock, and who does not:
- a sweep with any store local to this machine takes it; its worker processes (search.workers)
  are spawned children that do not inherit the descriptor and take none: they only train;
- a sweep whose study is a database server and whose runs go to an MLflow server (a cluster
  worker, docs/clusters.md) takes none: such sweeps share one study as designed, in one shared
  output folder as often as not, and each keeps its own scratch folder (`.workers/<pid>`);
- readers (`search.report`, `search.rerun`, `search.predict`, `make ui`) never take it, so they
  work while a sweep runs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from experiments.errors import UserInputError
from search.execution.resume import resume_command
from tracking.secrets import mask

LOCK_NAME = ".sweep.lock"
READ_TRIES = 20  # a holder writes its details just after it takes the lock: wait up to ~1 s
SERVER_STUDY = ("postgresql", "mysql")
SERVER_TRACKING = ("http://", "https://")


def needs_lock(cfg: DictConfig) -> bool:
    """Whether the sweep `cfg` writes a store only one sweep may write: anything but an Optuna
    study in a database server with its runs in an MLflow server (what cluster workers share)."""
    shared = (
        str(cfg.search.engine) == "optuna"
        and str(cfg.search.get("storage") or "").startswith(SERVER_STUDY)
        and str(cfg.tracking.tracking_uri).startswith(SERVER_TRACKING)
    )
    return not shared


@dataclass
class OutputLock:
    """The held lock (`file` is None where the sweep needs none); `release` ends it."""

    file: IO[str] | None
    previous: str = ""  # the file's text before this sweep wrote its own
    restored: bool = False

    def restore(self) -> None:
        """Put back what the file said before: a start refused for bad input changes nothing
        in an output folder that existed, not even this file."""
        self._write(self.previous)
        self.restored = True

    def release(self) -> None:
        """Empty the file (unless restored) and drop the lock: a file that still names a sweep
        whose lock is free tells of a killed one."""
        if self.file is None:
            return
        if not self.restored:
            self._write("")
        self.file.close()  # closing the only descriptor drops the lock
        self.file = None

    def _write(self, text: str) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()
            self.file.write(text)
            self.file.flush()


def hold_output_dir(cfg: DictConfig, study: str) -> OutputLock:
    """Take the output folder's lock for the sweep `cfg` (creating the folder if missing), or
    refuse with one paragraph naming the sweep that holds it."""
    if not needs_lock(cfg):
        return OutputLock(None)
    folder = Path(str(cfg.output_dir))
    existed = folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file = _locked(folder / LOCK_NAME)
    except OSError as err:
        if not existed:  # made for nothing (empty: another sweep's is kept)
            with suppress(OSError):
                folder.rmdir()
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            print(
                f"warning: output_dir={str(folder)!r} is on a file system that cannot lock "
                f"({err.strerror}): nothing stops a second sweep from starting in it.",
                flush=True,
            )
            return OutputLock(None)
        raise UserInputError(
            f"output_dir={str(folder)!r}: its lock file {folder / LOCK_NAME} cannot be opened "
            f"({err.strerror or err}); give a folder on a writable local file system."
        ) from err
    if file is None:
        raise UserInputError(_refusal(folder, study))
    file.seek(0)
    lock = OutputLock(file, file.read())
    lock._write(json.dumps(_details(study)) + "\n")
    return lock


def _locked(path: Path) -> IO[str] | None:
    """The lock file, opened and locked; None when another process holds it.

    A start refused for bad input removes a lock file it created: a process that opened the
    file before that and locked it after would hold a lock on a name no longer in the folder,
    so the lock counts only if the path still names the locked file (otherwise: try again).
    """
    while True:
        file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the sweep
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None
        except BaseException:
            file.close()
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return file
        file.close()


def _details(study: str) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "study": study,
        "command": resume_command() if sys.argv[0].endswith("run.py") else " ".join(sys.argv),
    }


def holder(folder: Path) -> dict[str, object] | None:
    """What the sweep holding `folder`'s lock wrote about itself (None: not written yet)."""
    for _ in range(READ_TRIES):
        try:
            text = (folder / LOCK_NAME).read_text(encoding="utf-8")
            return dict(json.loads(text))
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def _refusal(folder: Path, study: str) -> str:
    first = holder(folder)
    if first is None:
        who = "another sweep (its details are not in the lock file: it is starting or ending)"
    else:
        who = (
            f"another sweep: pid {first.get('pid')} on host {first.get('host')}, started "
            f"{first.get('started')}, study {first.get('study')!r}, command: "
            f"{mask(str(first.get('command')))}"
        )
    return (
        f"output_dir={str(folder)!r} is in use by {who}. Two sweeps cannot write one output "
        f"folder's stores at once (both would train the same trials), so this one (study "
        f"{study!r}) starts nothing. Wait for the first to end or stop it (Ctrl-C; even a "
        "killed sweep leaves no lock behind), then run this command again to continue the "
        "study; or give this sweep another output_dir. To train several trials at once use "
        "search.workers=N in one sweep, or cluster workers on a database study "
        "(docs/clusters.md)."
    )
