"""Make a moved output folder's MLflow store work again: rewrite its artifact locations.

MLflow records every artifact location as an absolute URI (`file:///old/place/mlartifacts/...`)
and turns a relative one into an absolute one when the experiment is created, so a store cannot
be made relative. Moving or copying `output_dir` (to another disk, a colleague's machine, an
archive) therefore broke every artifact link. `relocate` finds the experiments whose artifact
folder no longer exists but whose folder name does exist beside the store, and rewrites that
prefix in the four places MLflow keeps locations: experiments, runs, logged models and model
versions. It runs before `make ui`, before a sweep opens the store and before the report reads
it, so a moved folder just works. SQLite stores only (a tracking server owns its artifacts).

    python -m tracking.relocate runs        # what make ui runs first
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

# (table, column) pairs that hold artifact locations in MLflow 3's SQL schema.
LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def moves(db: Path) -> dict[str, str]:
    """{old prefix: new prefix} for each experiment whose artifact folder moved beside `db`."""
    try:
        with sqlite3.connect(db, timeout=20) as conn:
            rows = conn.execute("SELECT artifact_location FROM experiments").fetchall()
    except sqlite3.OperationalError:
        # No experiments table yet: another process is creating this store right now, so
        # nothing in it can have moved.
        return {}
    found: dict[str, str] = {}
    for (location,) in rows:
        old = _local_path(location or "")
        if old is None or old.exists():
            continue
        new = db.parent / old.name
        if new.is_dir():
            found[location.rstrip("/")] = (
                new.resolve().as_uri() if location.startswith("file:") else str(new.resolve())
            )
    return found


def relocate(tracking_uri: str) -> dict[str, str]:
    """Rewrite moved artifact locations in a SQLite store; returns what it rewrote."""
    if not tracking_uri.startswith("sqlite:///"):
        return {}
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return {}
    found = moves(db)
    if not found:
        return {}
    with sqlite3.connect(db, timeout=20) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for old, new in found.items():
            for table, column in LOCATIONS:
                if table not in tables:
                    continue
                conn.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                    f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                    (new, len(old) + 1, old, _like_prefix(old) + "/%"),
                )
    return found


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    output_dir = Path(args[0] if args else "runs").resolve()
    for old, new in relocate(f"sqlite:///{output_dir / 'mlflow.db'}").items():
        print(f"the store moved: artifact locations {old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
