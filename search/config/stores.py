"""Check every place a sweep writes before anything is created there.

The output folder, the Optuna storage, the MLflow store and its artifact folder, the Keras cache,
the transfer models' feature cache (`model.feature_cache.dir`):
each must be a folder (or a healthy SQLite file) this user can write, or a path that can be
created without inventing folders far from where the user meant. A tracking server must answer
within seconds. All checks only read: a bad value fails with one paragraph and nothing on disk
has changed.

The folder rule: `output_dir` may be created with any missing parents (as `mkdir -p`); a store or
folder outside `output_dir` is created only when its parent folder exists, so a mistyped absolute
path (sqlite:////dtaa/x.db) is refused instead of creating /dtaa at the root of the file system.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from tracking.secrets import mask

SQLITE_HEADER = b"SQLite format 3\x00"
PROBE_SECONDS = 5.0


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///` URL (absolute, without query), or None for other URLs."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser().resolve()


def check_output_dir(path: Path) -> None:
    """`output_dir` is a writable folder, or can be created (its nearest existing parent is a
    writable folder)."""
    where = f"output_dir={str(path)!r}"
    if path.exists() and not path.is_dir():
        raise UserInputError(
            f"{where} is a file, not a folder; output_dir is the folder a sweep writes its "
            "stores into: give a folder path (it is created if missing)."
        )
    if path.is_dir():
        _check_writable(where, path)
        return
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UserInputError(
            f"{where} cannot be created: {existing} is a file, not a folder. Give a folder path."
        )
    _check_writable(where, existing, f"cannot be created in {existing}")


def create_output_dir(path: Path) -> None:
    """Create `output_dir` (checked by `check_output_dir`); a refusal the permission bits did not
    predict (a read-only or virtual file system, root's own limits) is a user error too."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(
            f"output_dir={str(path)!r} cannot be created ({err.strerror or err}); give a folder "
            "on a writable file system."
        ) from err


def check_sqlite_store(
    key: str, url: str, output_dir: Path, *, must_exist: bool = False, write: bool = True
) -> None:
    """A SQLite store: a healthy (and, to `write`, writable) SQLite file, or a new file in an
    allowed folder; with `must_exist`, a missing file is an error instead (predict, rerun)."""
    path = sqlite_path(url)
    if path is None:
        return
    where = f"{key}={mask(url)!r}"
    if not path.exists():
        if must_exist:
            raise UserInputError(
                f"{where}: there is no store at {path}; give the store of your sweeps "
                "(sqlite:///OUTPUT_DIR/mlflow.db) or run a sweep first."
            )
        _check_new_location(where, path, output_dir)
        return
    if not path.is_file():
        raise UserInputError(f"{where}: {path} is a folder, not a SQLite file; name a .db file.")
    _check_sqlite_file(where, path)
    if not write:
        return
    _check_writable(where, path)
    _check_writable(where, path.parent, "is in a read-only folder (SQLite writes a journal there)")


def check_local_folder(key: str, value: str | None, output_dir: Path) -> None:
    """A local folder setting (artifact location, Keras cache): a writable folder, or one that
    can be created under the folder rule."""
    if not value or ("://" in str(value) and not str(value).startswith("file://")):
        return  # unset, or a remote location (s3://, a server's own)
    path = Path(str(value).removeprefix("file://")).expanduser().resolve()
    where = f"{key}={str(value)!r}"
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{where} is a file, not a folder; give a folder path.")
        _check_writable(where, path)
        return
    _check_new_location(where, path, output_dir)


def check_server(key: str, url: str) -> None:
    """An http(s) tracking server or a database server must answer within seconds.

    MLflow's client retries an unreachable server for minutes before it raises; one probe with a
    short timeout turns that into an error naming the URI and what to check.
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        probe = f"{parts.scheme}://{parts.hostname}:{port}{parts.path.rstrip('/')}/health"
        try:
            with urllib.request.urlopen(probe, timeout=PROBE_SECONDS):
                return
        except urllib.error.HTTPError:
            return  # the server answered: MLflow itself will say what it thinks of the request
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            _unreachable(
                key, url, reason, "an MLflow server (mlflow server --host HOST --port PORT)"
            )
    if parts.scheme.startswith(("postgresql", "mysql")) and parts.hostname:
        port = parts.port or (5432 if parts.scheme.startswith("postgresql") else 3306)
        try:
            socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
        except (OSError, ValueError) as err:
            _unreachable(key, url, err, "the database server")
        if parts.scheme.startswith("postgresql"):
            _check_postgres_answers(key, url)


# What PostgreSQL itself says to a client it refuses: the server is PostgreSQL, and the store's
# own error (credentials, a missing database) is clearer than a probe's.
POSTGRES_REFUSALS = ("authentication", "does not exist", "pg_hba.conf", "too many connections")


def _check_postgres_answers(key: str, url: str) -> None:
    """A port that accepts connections but is not PostgreSQL (an HTTP server, say) made the first
    store call hang for 140 s; one handshake with a short timeout tells it in seconds."""
    import psycopg

    plain = url.split("+", 1)[0] + "://" + url.split("://", 1)[1]  # postgresql+psycopg: psycopg's
    try:
        psycopg.connect(plain, connect_timeout=int(PROBE_SECONDS)).close()
    except psycopg.Error as err:
        text = str(err)
        if any(marker in text for marker in POSTGRES_REFUSALS):
            return
        raise UserInputError(
            f"{key}={mask(url)!r}: something listens at that host and port, but it did not "
            f"answer as a PostgreSQL server within {PROBE_SECONDS:.0f} s "
            f"({text.splitlines()[0][:200] if text else type(err).__name__}). Check the port "
            "(PostgreSQL's default is 5432) and the URI, e.g. "
            "postgresql+psycopg://USER[:PASSWORD]@HOST:5432/DATABASE."
        ) from err


def _unreachable(key: str, url: str, reason: object, what: str) -> None:
    raise UserInputError(
        f"{key}={mask(url)!r} cannot be reached within {PROBE_SECONDS:.0f} s ({reason}). Check "
        f"that {what} is running and listening at that host and port, that the URI is spelled "
        "right, and that no firewall or proxy is in the way; or use a local store "
        "(sqlite:///OUTPUT_DIR/...)."
    )


def _check_sqlite_file(where: str, path: Path) -> None:
    """The header says SQLite and a quick structural check passes (read-only, no journal)."""
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise UserInputError(
            f"{where}: {path} is not a SQLite database (its first bytes are {header[:16]!r}). "
            "Point the setting at the right file, or move the damaged file away to start a new "
            "store."
        )
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)) as db:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as err:  # "file is not a database", "malformed", ...
        problems = [str(err)]
    if problems != ["ok"]:
        raise UserInputError(
            f"{where}: {path} is a damaged SQLite database ({_one_line(problems)}). "
            "Restore it from a backup, or move it away to start a new store (sqlite3 FILE "
            "'.recover' may save its content)."
        )


def _one_line(problems: list[str]) -> str:
    """SQLite's report, which spans lines, as part of one paragraph."""
    return " ".join("; ".join(problems).split())[:300]


def _check_new_location(where: str, path: Path, output_dir: Path) -> None:
    """A path to be created: under output_dir anything goes; elsewhere the parent must exist."""
    inside = path == output_dir or output_dir in path.parents
    if inside:
        check_output_dir(output_dir)
        return
    if not path.parent.is_dir():
        raise UserInputError(
            f"{where}: the folder {path.parent} does not exist. A store or folder outside "
            f"output_dir ({output_dir}) is created only in an existing folder, so a mistyped "
            "path creates nothing; check the path or create the folder first."
        )
    _check_writable(where, path.parent, f"cannot be created in {path.parent}")


def _check_writable(where: str, folder: Path, problem: str = "is read-only") -> None:
    if not os.access(folder, os.W_OK | (os.X_OK if folder.is_dir() else 0)):
        raise UserInputError(
            f"{where} {problem}: this user cannot write to {folder}. Fix its permissions or "
            "choose another location."
        )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_stores(cfg: DictConfig) -> None:
    """Every place the sweep `cfg` (already `prepare`d: absolute paths) will write."""
    output_dir = Path(str(cfg.output_dir))
    check_output_dir(output_dir)
    storage = cfg.search.get("storage")
    if storage:
        check_sqlite_store("search.storage", str(storage), output_dir)
        check_server("search.storage", str(storage))
    if cfg.search.get("directory"):  # Keras Tuner's project folder
        check_local_folder("search.directory", str(cfg.search.directory), output_dir)
    uri = str(cfg.tracking.tracking_uri)
    check_sqlite_store("tracking.tracking_uri", uri, output_dir)
    check_server("tracking.tracking_uri", uri)
    check_local_folder(
        "tracking.artifact_location", cfg.tracking.get("artifact_location"), output_dir
    )
    check_local_folder("keras_home", cfg.get("keras_home"), output_dir)
    cache = OmegaConf.select(cfg, "model.feature_cache.dir", default=None)  # null: in output_dir
    check_local_folder("model.feature_cache.dir", cache, output_dir)


PROJECT = Path(__file__).resolve().parents[2]  # where the Makefile is (a source checkout)


def ui_command(cfg: DictConfig) -> str:
    """The command that opens THIS sweep's MLflow store as `make ui` does (one server process,
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false): `make ui` for runs/, `make ui OUT=runs_mo` for
    another output_dir under the project, the full `mlflow ui ...` line anywhere else."""
    out = Path(str(cfg.output_dir)).expanduser().resolve()
    uri = str(cfg.tracking.tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {mask(uri)} (the sweep's MLflow server)"
    artifacts = Path(str(cfg.tracking.get("artifact_location") or out / "mlartifacts"))
    as_make_ui = (
        uri == f"sqlite:///{out / 'mlflow.db'}"
        and artifacts.expanduser().resolve() == out / "mlartifacts"
        and (PROJECT / "Makefile").exists()
        and out.is_relative_to(PROJECT)
    )
    if as_make_ui:
        relative = out.relative_to(PROJECT).as_posix()
        return "make ui" if relative == "runs" else f"make ui OUT={relative}"
    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {mask(uri)} "
        f"--default-artifact-root {artifacts} --host 127.0.0.1 --workers 1"
    )
