"""Worker processes that train trials for the sweep process (`search.workers`, `search.worker`).

The engine (sampler, study, pruner) and every store write stay in the sweep process; a trial is
trained in a worker started with the *spawn* context (TensorFlow is never forked) that reports
each epoch and waits for the verdict, so per-epoch pruning works as in one process. A worker is
reused across trials (TensorFlow imported once) and replaced after `search.worker.max_trials`
trials or once its resident memory passes `search.worker.max_rss_mb`, which bounds TensorFlow's
per-trial leak. A worker that dies (segfault, SIGKILL, the OOM killer) or runs past
`search.trial_timeout` fails its trial with a reason that says so; the next trial gets a new one.
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from experiments.errors import TrialFailed, UserInputError, WorkerError
from experiments.worker import Trained
from search.execution.memory import available_mb  # MemAvailable, or a cgroup's limit

if TYPE_CHECKING:
    from experiments.trial_cost import CostPlan

TIMED_OUT = "the trial ran longer than search.trial_timeout"  # how its failure reason starts
READY_TIMEOUT_S = 300  # a worker importing TensorFlow on a loaded machine
_ENV_LOCK = threading.Lock()  # CUDA_VISIBLE_DEVICES is set around one start at a time

EpochHook = Callable[[int, dict[str, float]], None]  # raises to stop the trial (pruning)


@dataclass(frozen=True)
class WorkerSettings:
    """`search.workers`, `search.trial_timeout` and `search.worker.*`, validated."""

    workers: int = 1  # 0: trials train in the sweep process (no pool)
    trial_timeout: float | None = None
    max_trials: int | None = 20
    max_rss_mb: float | None = 2000.0
    # The workers' temporary folder (TensorFlow's __autograph_generated_file*.py land there):
    # under the sweep's scratch folder, removed with it, not left in the system's temp folder.
    tmp: str | None = None

    @property
    def threads(self) -> int | None:
        """TensorFlow threads per worker: the cores split between workers (None: TF's default)."""
        if self.workers <= 1:
            return None
        return max(1, len(os.sched_getaffinity(0)) // self.workers)


def worker_settings(cfg: DictConfig) -> WorkerSettings:
    """The worker settings of a sweep config. Each value is a row of search/config/rules.py;
    what is refused here is a combination (exit 2, one paragraph)."""
    search = cfg.search
    workers = search.get("workers", 1)
    if workers > 1 and str(search.engine) != "optuna":
        raise UserInputError(
            f"search.workers={workers} needs search=optuna: Keras Tuner's oracle proposes one "
            "trial after another, so search=keras_tuner runs with search.workers=1 only."
        )
    timeout = search.get("trial_timeout")
    if timeout is not None and workers == 0:
        raise UserInputError(
            f"search.trial_timeout={timeout!r} needs worker processes: with search.workers=0 "
            "trials train in the sweep process, where a running trial cannot be stopped. Use "
            "search.workers=1 (the default) or more, or search.trial_timeout=null."
        )
    node = search.get("worker") or {}
    limits: dict[str, Any] = {
        key: node.get(key, default) for key, default in (("max_trials", 20), ("max_rss_mb", 2000.0))
    }
    return WorkerSettings(workers, timeout, limits["max_trials"], limits["max_rss_mb"])


WORKER_MB = 400  # one idle worker process with TensorFlow imported holds ~320 MB, a trial more


def capped(settings: WorkerSettings, trials_left: int) -> WorkerSettings:
    """`settings` with no more workers than the trials left, the cores or the memory can use.

    search.workers=64 on 2 cores used to start 64 TensorFlow processes (~320 MB each) for two
    trials and exhausted memory; each worker beyond these limits only waits or swaps. The cap
    is said in one line (why each limit), so the user sees what ran.
    """
    if settings.workers <= 1:
        return settings
    limits = {
        f"{trials_left} trial(s) left to run": max(1, trials_left),
        f"{len(os.sched_getaffinity(0))} core(s)": len(os.sched_getaffinity(0)),
    }
    free = available_mb()
    if free is not None:
        limits[f"{free:.0f} MB available at ~{WORKER_MB} MB a worker"] = max(
            1, int(free // WORKER_MB)
        )
    why, cap = min(limits.items(), key=lambda item: item[1])
    if cap >= settings.workers:
        return settings
    print(
        f"search.workers={settings.workers} capped at {cap}: {why}, so more workers could not "
        "train at once.",
        flush=True,
    )
    return dataclasses.replace(settings, workers=cap)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def died(process: multiprocessing.process.BaseProcess, last_epoch: int | None) -> str:
    """Why a worker is gone, for the trial's failure reason."""
    process.join(2)
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        how = f"killed by {name}"
        if name == "SIGKILL":
            how += " (the kernel's OOM killer or a kill -9)"
    else:
        how = f"exited with code {code}"
    after = f"after epoch {last_epoch}" if last_epoch is not None else "before its first epoch"
    return f"the worker process training this trial died: {how} {after} (exit code {code})"


class Worker:
    """One worker process on one slot (its GPU, its share of the CPU threads).

    Spawned without settings (slot 0 may be spawned before the config exists: `start_early`);
    `set_up` gives it the sweep's, and the worker reports ready once TensorFlow is set up.
    """

    def __init__(self, slot: int, gpus: list[str]) -> None:
        from experiments.worker import serve

        self.slot, self.trials, self.rss_mb = slot, 0, 0.0
        self.settings, self.stopping = WorkerSettings(), threading.Event()  # set_up's, later
        # What the process inherited, so that an early start is adopted only where it matches.
        self.keras_home = os.environ.get("KERAS_HOME")
        self.gpu = gpus[slot % len(gpus)] if gpus else None
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve,
            args=(child, os.getpid(), self.keras_home),
            name=f"sweeplab-worker-{slot}",
            daemon=True,  # ended with the sweep on any normal exit; kill -9: its watchdog
        )
        with _ENV_LOCK:
            saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            if self.gpu is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu
            try:
                self.process.start()
            finally:
                if self.gpu is not None:
                    _restore("CUDA_VISIBLE_DEVICES", saved)
        child.close()
        self._ready = False
        self.busy = False  # a trial was sent and has not ended
        self._deadline: float | None = None  # search.trial_timeout of the trial sent

    def set_up(self, settings: WorkerSettings, stopping: threading.Event) -> Worker:
        """Give the worker the sweep's settings (its TensorFlow threads); it reports ready once
        they are applied. A worker that died meanwhile is found by the next receive."""
        self.settings, self.stopping = settings, stopping
        with suppress(OSError, ValueError):
            self.conn.send(("setup", settings.threads, settings.tmp))
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send_trial(
        self, config_yaml: str, shared: Any, costs: CostPlan, timed: bool = True
    ) -> None:
        """Hand the worker its next trial; `train` then follows it. Sent before the sweep records
        the trial's run, so that the worker builds its model while those store writes happen.
        `timed=False`: no search.trial_timeout (the final stage's trainings, which train on more
        images than a trial and are bounded by search.timeout instead)."""
        if not self._ready:
            self._receive(time.monotonic() + READY_TIMEOUT_S, [None], "start")
            self._ready = True
        timeout = self.settings.trial_timeout if timed else None
        self._deadline = None if timeout is None else time.monotonic() + float(timeout)
        self.busy = True  # until its last message: an error meanwhile kills the worker
        self._send(("trial", config_yaml, shared, costs), [None])

    def probe(self, config_yaml: str, shared: Any) -> Any:
        """Time the parts of the trial `config_yaml` describes (experiments/training/probe.py:
        search.timeout's plan, before trial 0); raises as `train` does."""
        if not self._ready:
            self._receive(time.monotonic() + READY_TIMEOUT_S, [None], "start")
            self._ready = True
        self.busy = True
        self._send(("probe", config_yaml, shared, ()), [None])
        message = self._receive(None, [None])
        self.busy = False
        if message[0] == "error":
            error = {"nan": TrialFailed, "input": UserInputError}.get(message[1], WorkerError)
            raise error(message[2])
        return message[1]

    def train(
        self,
        on_epoch: EpochHook,
        keep: Callable[[Trained], str | None] = lambda trained: None,
        after_epoch: EpochHook = lambda epoch, logs: None,
    ) -> Trained:
        """Follow the trial `send_trial` handed over to its end; raises TrialFailed (died, timed
        out, NaN loss), WorkerError (an exception in training), UserInputError, or what
        `on_epoch` raised.

        Each epoch, `on_epoch` gives the verdict (it raises to stop: pruning) and the worker
        goes on at once; `after_epoch` (recording the epoch) runs meanwhile, so store writes do
        not hold up training. `keep(trained)` names the folder to save the model to when it is
        worth keeping (None: dropped); the result's `model_folder` is set once it is saved.
        """
        last: list[int | None]  # the last epoch heard
        deadline, last = self._deadline, [None]
        try:
            while True:
                message = self._receive(deadline, last)
                if message[0] == "epoch":
                    _, epoch, logs = message
                    last[0] = epoch
                    try:
                        on_epoch(epoch, logs)
                    except Exception:
                        with suppress(TrialFailed):  # died meanwhile: replaced after the trial
                            self._send("stop", last)
                            self._receive(deadline, last)  # "stopped": the worker is free again
                            self.busy = False
                        after_epoch(epoch, logs)  # the stopping epoch is part of the curve
                        raise
                    self._send("go", last)
                    after_epoch(epoch, logs)
                elif message[0] == "done":
                    trained: Trained = message[1]
                    self.trials, self.rss_mb = self.trials + 1, trained.rss_mb
                    folder = keep(trained)
                    self._send(("save", folder) if folder else ("drop",), last)
                    if folder:
                        _, trained.model_error, trained.keras_files = self._receive(deadline, last)
                        trained.model_folder = None if trained.model_error else folder
                    self.busy = False
                    return trained
                elif message[0] == "error":
                    self.trials, self.busy = self.trials + 1, False
                    _, kind, reason = message
                    error = {"nan": TrialFailed, "input": UserInputError}.get(kind, WorkerError)
                    raise error(reason)
        except (TrialFailed, WorkerError, UserInputError):
            if not self.alive_and_idle():
                self.kill()
            raise
        except BaseException:
            self.kill()  # mid-message: the worker's state is unknown
            raise

    def _send(self, message: Any, last: list[int | None]) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # a broken pipe: the worker is gone
            raise TrialFailed(died(self.process, last[0])) from None

    def _receive(self, deadline: float | None, last: list[int | None], what: str = "trial"):
        while True:
            if self.stopping.is_set():  # Ctrl-C / SIGTERM reached the sweep (another thread)
                self.kill()
                raise KeyboardInterrupt("the sweep was interrupted")
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                if self.conn.poll(wait):
                    return self.conn.recv()
            except (EOFError, OSError):
                raise TrialFailed(died(self.process, last[0])) from None
            if not self.process.is_alive():
                raise TrialFailed(died(self.process, last[0]))
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                if what == "start":
                    raise TrialFailed(f"a worker process did not start in {READY_TIMEOUT_S}s")
                after = f"after epoch {last[0]}" if last[0] is not None else "in its first epoch"
                raise TrialFailed(
                    f"{TIMED_OUT}={self.settings.trial_timeout}"
                    f"s and was stopped {after}; its worker process was killed and replaced"
                )

    def alive_and_idle(self) -> bool:
        """Whether the worker can take another trial (it answered the last one)."""
        return self.process.is_alive() and not self.busy and not self.conn.poll(0)

    def worn_out(self) -> bool:
        """Past `search.worker.max_trials` trials or `max_rss_mb` MiB: time for a fresh one."""
        s = self.settings
        return (s.max_trials is not None and self.trials >= s.max_trials) or (
            s.max_rss_mb is not None and self.rss_mb > s.max_rss_mb
        )

    def near_worn_out(self) -> bool:
        """Likely worn out after one more trial (RSS within 10% of the limit): start a successor."""
        s = self.settings
        return (s.max_trials is not None and self.trials >= s.max_trials - 1) or (
            s.max_rss_mb is not None and self.rss_mb > 0.9 * s.max_rss_mb
        )

    def kill(self) -> None:
        """End the worker now. Also how a worker the sweep no longer needs (worn out, or the
        sweep is ending) is ended: between trials it holds nothing unsaved (a kept model's files
        were acknowledged; it writes no store), so it is not asked to quit, which would make the
        sweep's end, or a worn-out worker's replacement, wait 0.3 s or more for TensorFlow's
        teardown."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class WorkerPool:
    """`search.workers` worker slots; a trial borrows one for its duration."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.gpus = visible_gpus()
        self._free: queue.Queue[int] = queue.Queue()
        self._workers: dict[int, Worker | None] = {}
        self.stopping = threading.Event()  # set by `interrupt`: every trial ends as interrupted
        self._standby: dict[int, Worker] = {}  # successors started a trial ahead
        for slot in range(settings.workers):
            self._workers[slot] = None  # started by `start`, or by the first trial of the slot
            self._free.put(slot)

    def start(self) -> None:
        """Start every slot's worker now, so TensorFlow imports in them while the sweep sets up
        (its stores, the data), not on the first trials' critical path."""
        for slot, current in self._workers.items():
            if current is None:
                self._workers[slot] = self._start(slot)

    def _start(self, slot: int) -> Worker:
        early = _adopt_early(self.gpus) if slot == 0 else None
        return (early or Worker(slot, self.gpus)).set_up(self.settings, self.stopping)

    @contextmanager
    def worker(self) -> Iterator[Worker]:
        """A live worker for one trial; replaced afterwards if it died, failed or wore out."""
        slot = self._free.get()
        current = self._workers.get(slot)
        if current is None or not current.process.is_alive():
            current = self._workers[slot] = self._start(slot)
        try:
            yield current
        except (KeyboardInterrupt, SystemExit):
            current.kill()  # the sweep is stopping: no replacement
            self._workers[slot] = None
            self._free.put(slot)
            raise
        except BaseException:
            if current.busy:  # failed between handing over a trial and following it
                current.kill()
            self._renew(slot, current)
            raise
        else:
            self._renew(slot, current)

    def _renew(self, slot: int, current: Worker) -> None:
        """Replace a dead or worn-out worker now; start its successor a trial ahead.

        The successor (standby) imports TensorFlow while its predecessor trains its last trial,
        so a replacement costs no start-up on the trial's critical path.
        """
        if self.stopping.is_set():
            current.kill()
            self._workers[slot] = None
        elif not current.process.is_alive() or current.worn_out():
            current.kill()
            standby = self._standby.pop(slot, None)
            ok = standby is not None and standby.process.is_alive()
            self._workers[slot] = standby if ok else self._start(slot)
        elif current.near_worn_out() and slot not in self._standby:
            self._standby[slot] = self._start(slot)
        self._free.put(slot)

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: make every thread's trial end as interrupted, now."""
        self.stopping.set()

    def close(self) -> None:
        """Stop every worker (the sweep is ending, normally or not)."""
        for slot, current in [*self._workers.items(), *self._standby.items()]:
            if current is not None:
                current.kill()
            self._workers[slot] = None
        self._standby.clear()


_early: Worker | None = None  # slot 0's worker, started before the config was composed


def start_early() -> None:
    """Start slot 0's worker now, before Hydra composes the config and the sweep checks it.

    A worker's start is TensorFlow's import (3-4 s); the sweep's own start-up before its first
    trial is shorter. Started at the sweep's first line, the worker is ready about when the
    first trial is, instead of a second or more after it. `WorkerPool` adopts it for slot 0 when
    it inherited what a worker started then would (KERAS_HOME, the GPU); otherwise, or when the
    sweep needs no worker (bad input, `search.workers=0`), it is killed (`discard_early`, also
    at exit). Only `python -m search.run` calls it: `sweep()` called from Python starts its
    pool as before.
    """
    global _early
    if _early is None:
        _early = Worker(0, visible_gpus())
        atexit.register(discard_early)  # before multiprocessing's own exit hook joins it


def discard_early() -> None:
    """Kill the early worker if no pool adopted it."""
    global _early
    early, _early = _early, None
    if early is not None:
        early.kill()


def _adopt_early(gpus: list[str]) -> Worker | None:
    global _early
    early, _early = _early, None
    if early is None:
        return None
    slot0 = gpus[0] if gpus else None
    if early.process.is_alive() and (early.keras_home, early.gpu) == (
        os.environ.get("KERAS_HOME"),
        slot0,
    ):
        return early
    early.kill()
    return None


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


@contextmanager
def interrupts_stop(pool: WorkerPool | None) -> Iterator[None]:
    """Ctrl-C / SIGTERM end every running trial as interrupted at once, in every thread.

    Only the main thread receives signals. With search.workers > 1 the other threads wait on
    their workers inside Optuna's thread pool, which the interrupt would otherwise wait for
    (every trial trained to its end); the handler tells the pool first, so their trials end the
    Ctrl-C way too. Outside the main thread (a test's thread) nothing is installed.
    """
    if pool is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        pool.interrupt()
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
