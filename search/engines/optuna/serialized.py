"""Every call into the study's storage from this process holds `search.execution.store_lock.STORE_LOCK`.

With `search.workers=N` the sweep process drives N trials from N threads (each waiting on its
own worker process); the lock, shared with the MLflow writes of `search.trials.runner`, makes "database
is locked" impossible for local workers (see `search.execution.store_lock`).
"""

from __future__ import annotations

from typing import Any

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

from search.execution.store_lock import STORE_LOCK


class SerializedStorage(BaseStorage, BaseHeartbeat):
    """Delegates every storage (and heartbeat) method to `inner`, holding `STORE_LOCK`."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # anything not declared below, e.g. RDB internals
        return getattr(self._inner, name)


def _delegate(name: str):
    def method(self: SerializedStorage, *args: Any, **kwargs: Any) -> Any:
        with STORE_LOCK:
            return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _base in (BaseStorage, BaseHeartbeat):
    for _name, _value in vars(_base).items():
        if callable(_value) and (not _name.startswith("__")):
            setattr(SerializedStorage, _name, _delegate(_name))
SerializedStorage.__abstractmethods__ = frozenset()


def serialized(storage: BaseStorage) -> BaseStorage:
    """`storage` behind the process-wide lock; a heartbeat-less storage keeps no heartbeat API."""
    if isinstance(storage, BaseHeartbeat):
        # Its abstract methods are filled in by the loop above, which the checker cannot follow.
        return SerializedStorage(storage)  # type: ignore[abstract]
    return storage
