"""The sweep's SQLite stores write ahead while it runs and are plain files once it ends
(search/execution/store_wal.py): the speed of unsynced commits during the sweep, and afterwards a store
that is one self-contained file, readable alone and read-only."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from conftest import TINY

from search.execution.store_wal import finish, write_ahead
from search.sweep import prepare, sweep
from search.trials import runner


def journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


def test_stores_write_ahead_during_the_sweep_and_are_whole_files_after(
    make_config, monkeypatch, tmp_path
) -> None:
    cfg = make_config(*TINY, "search.n_trials=3", "search.sampler=random")
    out = Path(prepare(cfg).output_dir)
    seen: list[tuple[str, str]] = []
    run = runner.TrialRunner.run

    def run_and_look(self, number, *args, **kwargs):
        if number == 1:  # the stores exist and have been written by trial 0
            seen.append((journal_mode(out / "mlflow.db"), journal_mode(out / "optuna.db")))
        return run(self, number, *args, **kwargs)

    monkeypatch.setattr(runner.TrialRunner, "run", run_and_look)
    assert sweep(cfg).finished_trials == 3

    assert seen == [("wal", "wal")]
    for store in ("mlflow.db", "optuna.db"):
        assert journal_mode(out / store) == "delete", store
        assert not (out / f"{store}-wal").exists(), store
    # The store file alone holds every run: copied without anything beside it, opened read-only.
    alone = tmp_path / "copied" / "mlflow.db"
    alone.parent.mkdir()
    shutil.copyfile(out / "mlflow.db", alone)
    with closing(sqlite3.connect(f"{alone.as_uri()}?mode=ro", uri=True)) as db:
        (runs,) = db.execute("SELECT COUNT(*) FROM runs WHERE name LIKE 'trial-%'").fetchone()
    assert runs == 3
    # A second sweep on the same stores (resume with more trials) writes ahead again.
    more = make_config(*TINY, "search.n_trials=4", "search.sampler=random")
    assert sweep(more).finished_trials == 4
    assert journal_mode(out / "mlflow.db") == "delete"


def test_a_store_another_process_holds_open_keeps_its_log_folded_in(tmp_path) -> None:
    """`finish` cannot switch a store back while another connection has it open (`mlflow ui`);
    it folds the log into the file instead, so the file alone is complete."""
    from sqlalchemy import create_engine, text

    store = tmp_path / "s.db"
    uri = f"sqlite:///{store}"
    write_ahead(uri)
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1), (2)"))
    assert journal_mode(store) == "wal"
    reader = sqlite3.connect(store)  # another process's connection, opened meanwhile
    reader.execute("SELECT * FROM t").fetchall()
    try:
        finish(uri)
        assert journal_mode(store) == "wal"  # could not switch back: the reader has it open
        copy = tmp_path / "copy.db"
        shutil.copyfile(store, copy)  # the file alone, without its -wal
        with closing(sqlite3.connect(copy)) as db:
            assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2
    finally:
        reader.close()
    with engine.begin() as connection:  # the engine reconnects, now without write-ahead
        assert connection.execute(text("SELECT COUNT(*) FROM t")).scalar() == 2
    engine.dispose()
