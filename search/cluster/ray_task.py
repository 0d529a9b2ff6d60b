"""One worker of a Ray launch: `python -m search.run OVERRIDES worker=I` as a child process.

The Ray task only starts and watches the sweep, so a worker is the same process as under Slurm or
on a laptop (its signals, exit statuses, resume), and TensorFlow never runs inside a Ray worker.
`search.cluster.ray_workers` ships this module by value, so a node needs the project folder (to
run the sweep from) but no importable copy of this file.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

TAIL_LINES = 20
MISSING_PROJECT = 127  # as a shell reports a command it cannot find
POLL_S = 2.0  # how often a task asks whether the driver wants the workers stopped
STOP_GRACE_S = 90  # a stopped sweep marks its trial interrupted and ends its MLflow runs first


class StopFlag:
    """Set by the driver on Ctrl-C, read by every task (a Ray actor that holds no CPU).

    Ray's own cancel cannot stop a task gently while it waits on its sweep, and a forced cancel
    kills the sweep with SIGKILL; asking each task to stop lets it send its sweep SIGTERM, the
    sweep's Ctrl-C path (the trial in training is marked interrupted and redone on resume).
    """

    def __init__(self) -> None:
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def stopped(self) -> bool:
        return self._stop


def run_worker(
    index: int, overrides: list[str], project: str, threads: int, flag: Any
) -> tuple[int, str]:
    """Run worker `index` of the sweep in `project`; its exit status and last lines of output.

    Its output goes to this task's stdout, which Ray forwards to the driver. `flag` is the
    driver's StopFlag actor; when it is set, or gone with the driver, the sweep gets SIGTERM.
    """
    if not os.path.isdir(project):
        return MISSING_PROJECT, (
            f"the project folder {project} is not on node {socket.gethostname()}: Ray workers run "
            "the sweep from the same path as the driver (a shared filesystem or the same image)."
        )
    env = dict(os.environ)
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))  # the CPUs Ray reserved for it
    env.setdefault("TF_NUM_INTEROP_THREADS", str(threads))
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", *overrides, f"worker={index}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    relay = threading.Thread(target=_relay, args=(proc.stdout, tail), daemon=True)
    relay.start()
    try:
        while proc.poll() is None:
            if _stop_requested(flag):
                _stop(proc)
                break
            time.sleep(POLL_S)
    except BaseException:  # interrupted in Python (Ray stopping this worker): same as a stop
        _stop(proc)
        raise
    proc.wait()
    relay.join(timeout=10)
    return proc.returncode, "".join(tail)


def _relay(lines: Iterable[str], tail: collections.deque[str]) -> None:
    """Echo the sweep's output (Ray forwards it to the driver) and keep its last lines."""
    for line in lines:
        print(line, end="", flush=True)
        tail.append(line)


def _stop_requested(flag: Any) -> bool:
    import ray

    try:
        return bool(ray.get(flag.stopped.remote(), timeout=30))
    except ray.exceptions.RayError:  # the flag died with the driver: nobody waits for us
        return True


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the sweep's Ctrl-C path), then SIGKILL if it has not ended after the grace."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
