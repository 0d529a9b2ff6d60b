"""`data=directory`: a folder of class subfolders, split, decoded once and held per `data.cache`.

The split is planned on file names (stratified, seeded) before any decoding, then each split is
decoded in parallel; unreadable files are listed (`data.on_corrupt=fail`) or dropped with a
warning (`skip`). With `data.cache=file` the decoded images are written once to
`data.cache_dir/<key>/` and memory-mapped, so later sweeps, parallel workers and sets larger than
memory skip decoding; the key covers every file's path, size and mtime and the decode settings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from experiments.cache_home import cache_home
from experiments.data.folders import FolderScan, scan_folder
from experiments.data.images import RESIZE_POLICIES, decode_all, decode_file, image_hw
from experiments.data.splits import (
    ImageData,
    Split,
    check_fractions,
    check_max_per_class,
    holdout,
    per_class_sample,
)
from experiments.errors import UserInputError

CACHES = ("memory", "file", "none")
ON_CORRUPT = ("fail", "skip")
SHOWN_BAD = 10  # bad files named in an error or warning
_CACHE_VERSION = 1
log = logging.getLogger("sweeplab.data")

Plan = dict[str, list[tuple[str, int]]]  # split name -> (path, label) in decode order


@dataclass(frozen=True)
class Options:
    hw: tuple[int, int]
    channels: int
    resize: str
    on_corrupt: str
    cache: str
    cache_dir: Path
    max_per_class: int | None
    val_fraction: float
    test_fraction: float


def options(cfg: DictConfig) -> Options:
    """The directory settings, checked: one clear error per bad value."""
    channels = cfg.get("channels", 3)
    if channels not in (1, 3):
        raise UserInputError(
            f"data.channels={channels!r}; accepted: 1 (grayscale) or 3 (RGB). Images of any mode "
            "are converted to it."
        )
    choices = {"resize": RESIZE_POLICIES, "on_corrupt": ON_CORRUPT, "cache": CACHES}
    picked = {key: str(cfg.get(key, allowed[0])) for key, allowed in choices.items()}
    for key, allowed in choices.items():
        if picked[key] not in allowed:
            raise UserInputError(f"data.{key}={picked[key]!r}; accepted: {', '.join(allowed)}.")
    max_per_class = check_max_per_class(cfg.get("max_per_class"))
    cache_dir = cfg.get("cache_dir") or cache_home()
    val_fraction, test_fraction = float(cfg.val_fraction), float(cfg.test_fraction)
    check_fractions(val_fraction, test_fraction)
    return Options(
        image_hw(cfg.image_size),
        int(channels),
        picked["resize"],
        picked["on_corrupt"],
        picked["cache"],
        Path(str(cache_dir)).expanduser().resolve(),
        max_per_class,
        val_fraction,
        test_fraction,
    )


def load_directory(cfg: DictConfig, seed: int) -> ImageData:
    """Scan, split, decode and check the folder `data.path`."""
    opts = options(cfg)
    scan = scan_folder(cfg.get("path"))
    plan = plan_split(scan, opts, seed)
    if opts.cache == "file":
        pixels, digests, bad = _file_cached(plan, opts)
    else:
        pixels, digests, bad = _decode(plan, opts, keep=opts.cache == "memory")
    total = sum(len(files) for files in plan.values())
    bad = sorted(bad)
    _handle_bad(bad, total, opts.on_corrupt)
    bad_paths = {path for path, _ in bad}
    splits: dict[str, Split] = {}
    fingerprint = hashlib.sha256()
    for name, files in plan.items():
        kept = [(path, label) for path, label in files if path not in bad_paths]
        y = np.array([label for _, label in kept], dtype=np.int32)
        splits[name] = Split(pixels.get(name), y, tuple(path for path, _ in kept))
        fingerprint.update(name.encode() + y.tobytes() + "".join(digests[name]).encode())
    _check_after_skip(scan, splits)
    h, w = opts.hw
    info: dict[str, Any] = {
        "path": str(scan.root),
        "resize": opts.resize,
        "cache": opts.cache,
        "fixed_split": "all" not in scan.files,
        "ignored_files": len(scan.ignored),
        "skipped_links": scan.skipped_links[:100],  # symbolic links not followed (folders.py)
        "skipped_count": len(bad),
        "skipped_files": [f"{path}: {reason}" for path, reason in bad[:100]],
    }
    decoder = functools.partial(decode_file, hw=opts.hw, channels=opts.channels, policy=opts.resize)
    return ImageData(
        splits["train"],
        splits["val"],
        splits["test"],
        scan.class_names,
        source="directory",
        info=info,
        shape=(h, w, opts.channels),
        decoder=decoder,
        digest=fingerprint.hexdigest()[:16],
    )


def planned_size(cfg: DictConfig, seed: int) -> tuple[int, tuple[int, int, int]]:
    """How many images `load_directory` would decode, and each one's shape (uint8 pixels):
    from the file names alone, so a sweep can tell before decoding whether the set fits in
    memory (search/execution/data_fit.py)."""
    opts = options(cfg)
    plan = plan_split(scan_folder(cfg.get("path"), warn=False), opts, seed)
    return sum(len(files) for files in plan.values()), (*opts.hw, opts.channels)


def plan_split(scan: FolderScan, opts: Options, seed: int) -> Plan:
    """Files per split: fixed by train/ val/ test/ folders, the rest cut stratified and seeded."""
    rng = np.random.default_rng(seed)
    groups = {
        name: _subsample(files, opts.max_per_class, rng) for name, files in scan.files.items()
    }
    pool = groups.pop("all", None) or groups.pop("train")
    index = np.arange(len(pool))
    labels = np.array([label for _, label in pool])
    plan: Plan = {}
    cut_test = "test" not in groups
    if cut_test:
        index, test_index, labels, _ = holdout(
            index, labels, opts.test_fraction, seed, "data.test_fraction"
        )
        plan["test"] = [pool[i] for i in sorted(test_index)]
    if "val" not in groups:
        fraction = opts.val_fraction / (1.0 - opts.test_fraction) if cut_test else opts.val_fraction
        index, val_index, labels, _ = holdout(index, labels, fraction, seed, "data.val_fraction")
        plan["val"] = [pool[i] for i in sorted(val_index)]
    plan["train"] = [pool[i] for i in sorted(index)]
    plan.update(groups)
    return {name: plan[name] for name in ("train", "val", "test")}


def _subsample(
    files: list[tuple[str, int]], limit: int | None, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """At most `limit` files per class, a seeded random choice kept in file order."""
    if limit is None:
        return files
    return [files[i] for i in per_class_sample(np.array([label for _, label in files]), limit, rng)]


def _decode(
    plan: Plan, opts: Options, keep: bool
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], list[tuple[str, str]]]:
    """Decode every split (into memory when `keep`, else only to check the files)."""
    pixels: dict[str, np.ndarray] = {}
    digests: dict[str, list[str]] = {}
    bad: list[tuple[str, str]] = []
    for name, files in plan.items():
        out = np.empty((len(files), *opts.hw, opts.channels), np.uint8) if keep else None
        decoded = decode_all([p for p, _ in files], opts.hw, opts.channels, opts.resize, out)
        if out is not None:
            pixels[name] = out[: int(decoded.ok.sum())]
        digests[name] = [d for d, ok in zip(decoded.digests, decoded.ok, strict=True) if ok]
        bad += decoded.bad
    return pixels, digests, bad


def _file_cached(
    plan: Plan, opts: Options
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], list[tuple[str, str]]]:
    """Decoded splits memory-mapped from the cache folder, decoding into it on a miss."""
    key = _cache_key(plan, opts)
    folder = opts.cache_dir / key
    if not (folder / "meta.json").exists():
        _write_cache(plan, opts, folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        pixels = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r")[: meta["kept"][name]]
            for name in plan
        }
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(
            f"the decoded-image cache {folder} is unreadable ({err}); delete that folder and run "
            "again, or set data.cache=memory."
        ) from err
    bad = [tuple(item) for item in meta["bad"]]
    return pixels, meta["digests"], bad


def _write_cache(plan: Plan, opts: Options, folder: Path) -> None:
    """Decode into .npy files in a private temp folder, then rename it into place (atomic)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f"{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise UserInputError(
            f"data.cache_dir={str(opts.cache_dir)!r} is not writable ({err}); point it at a "
            "writable folder or set data.cache=memory."
        ) from err
    meta: dict[str, Any] = {"kept": {}, "digests": {}, "bad": []}
    for name, files in plan.items():
        shape = (max(len(files), 1), *opts.hw, opts.channels)
        out = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", np.uint8, shape)
        decoded = decode_all([p for p, _ in files], opts.hw, opts.channels, opts.resize, out)
        out.flush()
        del out
        meta["kept"][name] = int(decoded.ok.sum())
        meta["digests"][name] = [d for d, ok in zip(decoded.digests, decoded.ok, strict=True) if ok]
        meta["bad"] += [list(item) for item in decoded.bad]
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same cache first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_key(plan: Plan, opts: Options) -> str:
    digest = hashlib.sha256()
    settings = [_CACHE_VERSION, list(opts.hw), opts.channels, opts.resize]
    digest.update(json.dumps(settings).encode())
    for name, files in plan.items():
        digest.update(name.encode())
        for path, label in files:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
    return digest.hexdigest()[:24]


def _handle_bad(bad: list[tuple[str, str]], total: int, on_corrupt: str) -> None:
    if not bad:
        return
    shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:SHOWN_BAD])
    more = f" and {len(bad) - SHOWN_BAD} more" if len(bad) > SHOWN_BAD else ""
    if on_corrupt == "fail":
        raise UserInputError(
            f"{len(bad)} of {total} image files could not be read: {shown}{more}. Fix or remove "
            "them, or set data.on_corrupt=skip to train without them (they are then counted, "
            "listed in a warning and recorded in each trial's MLflow run)."
        )
    message = f"data.on_corrupt=skip: skipped {len(bad)} of {total} unreadable image files: {shown}{more}."
    warnings.warn(message, stacklevel=3)
    log.warning(message)


def _check_after_skip(scan: FolderScan, splits: dict[str, Split]) -> None:
    """Skipping bad files must leave every class with training images."""
    counts = np.bincount(splits["train"].y, minlength=len(scan.class_names))
    empty = [scan.class_names[i] for i, c in enumerate(counts) if c == 0]
    if empty:
        raise UserInputError(
            f"after skipping unreadable files, class(es) {empty} have no training images left in "
            f"{scan.root}; add readable images to those class folders."
        )
