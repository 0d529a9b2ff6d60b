"""`data.cache=memory` only when the decoded image set fits: otherwise the file cache, said.

A folder of photos decoded into memory is held more than once: the sweep process keeps the
decoded set (uint8, images x height x width x channels bytes) and hands it to its workers as a
file they map, and each process that trains turns it into a TensorFlow constant of the same size
(`experiments.data.pipeline.gathered`). With `search.workers=N` that is 1 + N copies at once (with
N=0 the sweep process trains: 2). A set that does not fit got the sweep, or a neighbour, killed
by the kernel. With `data.cache=file` the set is decoded once to `data.cache_dir` and every
process maps that file: one copy in the page cache, shared, which the kernel can drop and read
again. So before decoding, the copies are weighed, with each process's own needs (TensorFlow and
a model, `WORKER_MB`), against the memory available (`search.execution.memory`); a set that does
not fit switches to the file cache with one line saying why.

There is no switch to force memory: where the memory is there, a mapped file cache stays in the
page cache and trains as fast; where it is not, memory would end in a kill. The file cache
needs its folder writable and the disk room for one copy; where it has neither, the sweep stops
before decoding with what to change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, open_dict

from experiments.errors import UserInputError
from search.execution.memory import available_mb
from search.execution.pool import WORKER_MB, WorkerPool

if TYPE_CHECKING:  # TensorFlow's data loading imports only where a set is loaded
    from experiments.data.splits import ImageData


def load_fitted(data: DictConfig, seed: int, pool: WorkerPool | None) -> ImageData:
    """`load_data` of `data`, decoded to the file cache when it will not fit (`fitted_data`); its
    trainers are `pool`'s workers, or this process without one (the sweep's and the runner's)."""
    from experiments.data.load import load_data

    trainers = pool.settings.workers if pool is not None else 1
    return load_data(fitted_data(data, seed, trainers), seed)


def fitted_data(data: DictConfig, seed: int, trainers: int) -> DictConfig:
    """`data` itself, or a copy with `cache=file` when the decoded set will not fit in memory.

    `trainers`: the processes that train at once (the workers; 1 where the sweep trains itself).
    """
    if data.get("source") != "directory" or str(data.get("cache")) != "memory":
        return data
    free = available_mb()
    if free is None:  # no /proc/meminfo: nothing to weigh against
        return data
    from experiments.data.directory import options, planned_size

    images, shape = planned_size(data, seed)
    set_mb = images * shape[0] * shape[1] * shape[2] / 2**20
    copies = 1 + trainers
    need = copies * set_mb + (1 + trainers) * WORKER_MB
    if need <= free:
        return data
    figures = (
        f"{images} images x {shape[0]}x{shape[1]}x{shape[2]} uint8 = {set_mb:.1f} MB, held "
        f"{copies} times (the sweep process and {trainers} training process(es)), plus "
        f"{WORKER_MB} MB for each process: {need:.0f} MB, and {free:.0f} MB is available"
    )
    cache_dir = options(data).cache_dir
    _check_file_cache(cache_dir, set_mb, figures)
    print(
        f"data.cache=memory will not fit: {figures}. Using data.cache=file instead (decoded once "
        f"to {cache_dir}, memory-mapped and shared by every process).",
        flush=True,
    )
    switched = data.copy()
    with open_dict(switched):
        switched.cache = "file"
    return switched


def _check_file_cache(cache_dir: Path, set_mb: float, figures: str) -> None:
    """The file cache's folder can be written and its disk holds one copy, or a user error."""
    existing = cache_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"data.cache_dir={str(cache_dir)!r} is under the file {existing}"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"data.cache_dir={str(cache_dir)!r} cannot be written"
    elif shutil.disk_usage(existing).free / 2**20 < set_mb:
        free_mb = shutil.disk_usage(existing).free / 2**20
        problem = f"data.cache_dir={str(cache_dir)!r} has {free_mb:.0f} MB free"
    if problem is not None:
        raise UserInputError(
            f"the decoded images do not fit in memory ({figures}), and the file cache cannot "
            f"take them: {problem}. Point data.cache_dir at a writable folder with {set_mb:.0f} "
            "MB free, or make the set smaller (data.image_size, data.max_per_class) or train "
            "with fewer processes at once (search.workers)."
        )
