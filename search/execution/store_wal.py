"""Write-ahead logging for the sweep's own SQLite stores (the default optuna.db and mlflow.db).

In SQLite's default rollback-journal mode every commit writes and syncs a journal, the database
and its folder: about 4 ms a commit on this project's machines, and a trial makes about 45 of
them (its MLflow run, each epoch's report to Optuna, the tell and the next ask). With
search.workers=N those writes are serialized (`search.execution.store_lock`), so the time they take is
time another worker waits. With write-ahead logging and synchronous=NORMAL a commit appends to
the `-wal` file without a sync: a kill -9 of any process loses nothing (the operating system
holds the write), a power cut leaves a consistent store that may lack its last commits (the
trials they belonged to run again), and a reader (`mlflow ui`) no longer blocks the writer.

Only the files a sweep names here are switched, by a SQLAlchemy connect hook, so a store
MLflow is building aside (`tracking.mlflow_tracker.create_sqlite_store`) stays a plain file
that can be copied. When the sweep ends, `finish` closes this process's connections to them
and switches them back to the rollback journal: a finished store is one self-contained file
again, which can be copied alone and opened read-only (a write-ahead store cannot be, on a
read-only mount). Where another process still has the store open (`mlflow ui`) it stays in
write-ahead mode, its log folded into the file. SQLite's write-ahead log needs every process
on one host, as the SQLite stores already do: clusters use PostgreSQL and an MLflow server.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry

from search.config.stores import sqlite_path

_FILES: set[str] = set()  # real paths of the stores that write ahead in this process
# The pooled connections switched, to close when the sweep ends: (pool entry, DBAPI connection).
_OPENED: dict[str, list[tuple[ConnectionPoolEntry, sqlite3.Connection]]] = {}


def sqlite_file(uri: str) -> str | None:
    """The real path of a `sqlite:///` URI's file; None for any other URI or an in-memory one."""
    path = sqlite_path(uri)
    return str(path) if path is not None and path.name != ":memory:" else None


def write_ahead(*uris: str) -> None:
    """From now on, every connection this process opens to these SQLite stores writes ahead."""
    files = {f for f in map(sqlite_file, uris) if f is not None}
    if files and not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)
    _FILES.update(files)


def _on_connect(connection: Any, entry: ConnectionPoolEntry) -> None:
    if not isinstance(connection, sqlite3.Connection) or not _FILES:
        return
    cursor = connection.cursor()
    try:
        for row in cursor.execute("PRAGMA database_list").fetchall():
            file = os.path.realpath(row[2]) if row[2] else None
            if file in _FILES:
                cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file; a no-op when set
                cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
                _OPENED.setdefault(file, []).append((entry, connection))
    finally:
        cursor.close()


def finish(*uris: str) -> None:
    """Make these stores plain files again (best effort; see the module's docstring).

    The pooled connections this process opened to them are closed (SQLAlchemy reconnects on
    their next use, in rollback-journal mode), then the journal mode is switched back.
    """
    for file in filter(None, map(sqlite_file, uris)):
        if file not in _FILES:
            continue
        _FILES.discard(file)
        for entry, connection in _OPENED.pop(file, []):
            # The sqlite3 connection is the entry's DBAPI connection: their stubs do not overlap.
            if entry.dbapi_connection is connection:  # type: ignore[comparison-overlap]
                entry.invalidate()
        if not os.path.exists(file):  # never created: connecting would create it
            continue
        with suppress(sqlite3.Error), closing(sqlite3.connect(file, timeout=1)) as db:
            with suppress(sqlite3.Error):  # "database is locked": another process has it open
                db.execute("PRAGMA journal_mode=DELETE")
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
