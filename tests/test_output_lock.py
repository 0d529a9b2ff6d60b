"""Which sweeps take the output folder's lock (search/execution/output_lock.py), and that a
lock held in this process refuses a second one in the same folder, naming it.

The real two-process case (a second `python -m search.run` refused while the first finishes)
is in tests/test_kill_resume.py; the refusal as a user sees it is a row of tests/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from experiments.errors import UserInputError
from search.execution.output_lock import LOCK_NAME, hold_output_dir, needs_lock
from search.sweep import prepare

SERVERS = [
    "search.storage=postgresql+psycopg://sweeplab@127.0.0.1:5432/optuna",
    "tracking.tracking_uri=http://127.0.0.1:5000",
]


@pytest.mark.parametrize(
    ("overrides", "locks"),
    [
        ([], True),  # the default SQLite stores in output_dir
        (SERVERS, False),  # what cluster workers share, often in one output folder
        ([SERVERS[0]], True),  # the study shared, the MLflow store a local file
        ([SERVERS[1]], True),  # the runs shared, the study a local file
        (["search=keras_tuner", SERVERS[1]], True),  # its tuner state is a local folder
    ],
    ids=["sqlite", "cluster", "local-mlflow", "local-study", "keras-tuner"],
)
def test_only_sweeps_with_a_local_store_take_the_lock(make_config, overrides, locks) -> None:
    assert needs_lock(make_config(*overrides)) is locks


def test_a_held_folder_refuses_the_next_and_frees_on_release(make_config, tmp_path) -> None:
    cfg = prepare(make_config())
    first = hold_output_dir(cfg, "first-study")
    details = json.loads((Path(cfg.output_dir) / LOCK_NAME).read_text())
    assert details["pid"] == os.getpid() and details["host"] == socket.gethostname()
    with pytest.raises(UserInputError) as refused:
        hold_output_dir(cfg, "second-study")
    message = str(refused.value)
    assert (
        f"is in use by another sweep: pid {os.getpid()} on host {socket.gethostname()}" in message
    )
    assert "study 'first-study'" in message and "(study 'second-study') starts nothing" in message
    first.release()
    assert (Path(cfg.output_dir) / LOCK_NAME).read_text() == ""  # ended: names no sweep
    hold_output_dir(cfg, "second-study").release()  # free again


def test_a_lock_on_a_removed_file_is_not_trusted(make_config, monkeypatch) -> None:
    """A start refused for bad input removes the lock file it created. A start that opened that
    file just before and locks it just after would hold a lock on a name no longer in the
    folder, beside whoever creates the next one: it tries again, on the file the name holds."""
    import fcntl

    from search.execution import output_lock

    cfg = prepare(make_config())
    path = Path(cfg.output_dir) / LOCK_NAME
    first = hold_output_dir(cfg, "first-study")
    real_flock, calls = fcntl.flock, []  # the files locked (their inode numbers may be reused)

    def flock(fd: int, how: int) -> None:
        if not calls:  # between this start's open and its lock: the holder ends, removing it
            path.unlink()
            first.release()
        calls.append(fd)
        real_flock(fd, how)

    monkeypatch.setattr(output_lock.fcntl, "flock", flock)
    second = hold_output_dir(cfg, "second-study")
    assert len(calls) == 2  # the removed file was locked, not trusted, and the new one locked
    assert second.file is not None and os.fstat(second.file.fileno()).st_ino == path.stat().st_ino
    assert json.loads(path.read_text())["study"] == "second-study"
    second.release()


def test_a_start_that_loses_the_race_for_a_new_folder_leaves_it_to_the_winner(
    make_config, monkeypatch
) -> None:
    """Two starts at once on a new folder: the one refused must not remove the folder the other
    made since it began (a bad-input clean-up around the lock would have)."""
    from search import sweep as sweep_module

    cfg = make_config("search.n_trials=1")
    out = Path(prepare(cfg).output_dir)
    assert not out.exists()
    real, held = sweep_module.hold_output_dir, []

    def the_other_first(c, study: str):  # the other start takes the lock just before this one
        held.append(real(c, "the-first-study"))
        (out / "optuna.db").write_bytes(b"")  # and has begun its stores
        return real(c, study)

    monkeypatch.setattr(sweep_module, "hold_output_dir", the_other_first)
    with pytest.raises(UserInputError, match="study 'the-first-study'"):
        sweep_module.sweep(cfg)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "optuna.db"]
    assert json.loads((out / LOCK_NAME).read_text())["study"] == "the-first-study"
    held[0].release()
