"""Real servers for multi-worker tests: a throwaway PostgreSQL cluster and an MLflow server.

Both listen on 127.0.0.1 only, live in a temporary folder and are stopped after the test.
PostgreSQL's `initdb` refuses to run as root, so as root the cluster is created and run as the
`postgres` system user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder holding initdb/pg_ctl: on PATH or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL cluster in a fresh temporary folder; yield a SQLAlchemy URL for Optuna."""
    bindir = postgres_bin()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb) are not installed"
        if os.environ.get("SWEEPLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + "; CI requires them (.ci/run installs them)")
        pytest.skip(message)
    # Its own folder under /tmp: the postgres user must be able to reach it (pytest's tmp_path
    # sits below folders only root may enter).
    workdir = Path(tempfile.mkdtemp(prefix="sweeplab-pg-"))
    data, sockets = workdir / "pgdata", workdir / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = lambda cmd: subprocess.run(_as_postgres_user(cmd), check=True, capture_output=True)  # noqa: E731
    run([str(bindir / "initdb"), "-D", str(data), "-U", "sweeplab", "--auth=trust", "-E", "UTF8"])
    run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(workdir / "pg.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {sockets}",
            "start",
        ]
    )
    try:
        createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "sweeplab"]
        for database in ("optuna", "mlflow"):  # one for Optuna's study, one for an MLflow server
            run([*createdb, database])
        yield f"postgresql+psycopg://sweeplab@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            _as_postgres_user(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def http_server(
    module_args: list[str], port: int, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run `python -m MODULE_ARGS` serving on 127.0.0.1:PORT; yield its URI once `/health`
    answers 200 (90 s at most, the log's tail in the error), and stop it afterwards."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{' '.join(module_args[:2])} did not start: {log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.5)
            yield uri
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def mlflow_server(workdir: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """Start `mlflow server` (served artifacts; SQLite backend unless given one); yield its URI.

    Several workers writing at once want a real database behind it: SQLite can answer
    "database is locked" under concurrent writes."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args += ["--backend-store-uri", backend_store_uri or f"sqlite:///{workdir}/server.db"]
    args += ["--artifacts-destination", str(workdir / "artifacts")]
    with http_server(args, port, workdir / "mlflow-server.log") as uri:
        yield uri


# Ray binds to the machine's network address unless told it runs on one machine: this keeps every
# Ray process (head, workers, the driver's connection) on 127.0.0.1, and sends no usage report.
RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def ray_head(workdir: Path, num_cpus: int = 2) -> Iterator[str]:
    """Start a Ray head on 127.0.0.1 (`ray start --head`); yield its address, HOST:PORT.

    Small and quiet: no dashboard, a 100 MB object store. Its processes share one process group,
    which is stopped (SIGTERM, then SIGKILL) when the test ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Ray's socket paths must fit in 107 characters: a short folder of its own under /tmp.
    temp = Path(tempfile.mkdtemp(prefix="sweeplab-ray-"))
    log_path = workdir / "ray-head.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_LOCAL_ENV},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it stops the processes it started), then SIGKILL to
    anything of its process group still there."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
