"""The one lock that serializes this process's writes to its stores (Optuna and MLflow).

With `search.workers=N` the sweep process drives N trials from N threads while the workers
train. SQLite takes one writer at a time and answers another with "database is locked" once its
busy timeout passes; holding this lock around every store call of the sweep process (the only
process that writes them: workers only train) makes that error impossible for local workers.
A store call takes milliseconds and a trial seconds, so the lock is almost never contended.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

STORE_LOCK = threading.RLock()


@contextmanager
def released() -> Iterator[None]:
    """Within the block, let other threads write (this thread holds the lock once around it)."""
    STORE_LOCK.release()
    try:
        yield
    finally:
        STORE_LOCK.acquire()
