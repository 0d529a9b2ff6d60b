"""Where trials run and how a sweep survives faults: the worker-process pool, the lock and
write-ahead log of the SQLite stores, cleanup after an error, and resume after a kill."""
