"""`search.workers=N`: N threads drive one study, each training its trials in its own worker.

Optuna's own `n_jobs` decides whether to start another trial before that trial exists: a thread
whose trial just ended can see "4 of 5 claimed" while another thread is between its go-ahead and
creating its trial, and both then start one (a sixth trial). Here a thread holds `claim` from the
moment it decides to start a trial until Optuna has created it (the objective's first line), so
"finished plus running" is exact for this process when the next decision reads it, and the study
total is never overshot by this process's threads. Each thread runs Optuna's ordinary
`study.optimize` loop (heartbeats, states, callbacks), one trial after another.

A thread whose loop ends with an error (a config error, Ctrl-C, SIGTERM) stops its siblings
through `stopping`, which their callbacks read after their current trial: `Study.stop` is only
valid inside a thread's own optimize loop (Optuna raises RuntimeError elsewhere), so no thread
calls it from outside one. The first error is re-raised in the calling thread, Ctrl-C first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

Objective = Callable[[optuna.Trial], Any]


def optimize_in_threads(
    study: optuna.Study,
    objective: Objective,
    threads: int,
    is_done: Callable[[], bool],
    catch: tuple[type[Exception], ...],
) -> None:
    """Run `objective` in `threads` threads until `is_done()` (read under the claim lock)."""
    claim = threading.Lock()
    holding = threading.local()  # whether this thread holds `claim`
    errors: list[BaseException] = []
    stopping = threading.Event()  # a thread ended with an error: the others start nothing new

    def release() -> None:
        if getattr(holding, "lock", False):
            holding.lock = False
            claim.release()

    def claimed_objective(trial: optuna.Trial) -> Any:
        release()  # the trial exists now: other threads may decide
        return objective(trial)

    def next_or_stop(study: optuna.Study, trial: FrozenTrial) -> None:
        claim.acquire()  # held until the next trial exists, or this thread ends
        holding.lock = True
        if stopping.is_set() or is_done():
            study.stop()  # inside this thread's optimize loop: valid

    def drive() -> None:
        claim.acquire()
        holding.lock = True
        try:
            if stopping.is_set() or is_done():
                return
            study.optimize(
                claimed_objective,
                n_trials=None,
                catch=catch,
                callbacks=[next_or_stop],
            )
        except BaseException as err:  # re-raised in the calling thread
            errors.append(err)
            stopping.set()
        finally:
            release()

    workers = [
        threading.Thread(target=drive, name=f"sweeplab-trials-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:  # Ctrl-C: the pool already tells every thread's trial to end
        for worker in workers:
            worker.join()
        raise
    interrupts = [e for e in errors if isinstance(e, KeyboardInterrupt)]
    if interrupts or errors:
        raise (interrupts or errors)[0]
