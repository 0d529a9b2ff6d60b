"""A folder of cached arrays, one file per key: verified on read, atomic on write, size-capped.

Safe for concurrent workers and interrupted writers without locks:
- a writer writes a private temporary file in the same folder, then `os.replace`s it onto the
  entry's name, so a reader sees the old entry, no entry, or the whole new one; two workers that
  build the same entry both write the same bytes and the last rename wins;
- every entry carries a header with its key, shape, dtype, payload length and SHA-256; a reader
  checks all of them before it returns an array, so a truncated, overwritten or foreign file is
  reported as corrupt (and deleted, to be rebuilt) and never reaches training. That check is also
  why writes skip `fsync` (seconds for a large entry): a file torn by a crash is rebuilt;
- the folder is kept under `max_bytes` by deleting the least recently used entries (a hit touches
  its file's mtime); a reader that already opened an evicted file keeps reading it (POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"SWLFEAT1"
SUFFIX = ".feat"
STALE_TMP_SECONDS = 3600  # a temporary file this old belongs to a writer that died


@dataclass
class FeatureStore:
    """Cached arrays under `folder`, at most `max_bytes` in all (least recently used evicted)."""

    folder: Path
    max_bytes: int
    corrupt: list[str] = field(default_factory=list)  # keys found damaged (then deleted)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def load(self, key: str) -> np.ndarray | None:
        """The array stored under `key`, verified; None when absent or damaged (then deleted)."""
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        array = _decode(raw, key)
        if array is None:
            self.corrupt.append(key)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted by another worker meanwhile
            os.utime(path)  # last used: the eviction order
        return array

    def save(self, key: str, array: np.ndarray) -> None:
        """Store `array` under `key` atomically, then evict old entries beyond the limit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = np.ascontiguousarray(array).tobytes()
        header = json.dumps(
            {
                "key": key,
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "nbytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        ).encode()
        handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(MAGIC + len(header).to_bytes(8, "little") + header)
                out.write(payload)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.evict(keep=key)

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used entries until the folder fits `max_bytes`; their keys."""
        entries = []
        now = time.time()
        for path in self.folder.glob(f"*{SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another worker evicted it meanwhile
                continue
            if path.name.startswith(".tmp-"):
                if now - stat.st_mtime > STALE_TMP_SECONDS:
                    path.unlink(missing_ok=True)
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        evicted = []
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path.name == f"{keep}{SUFFIX}":
                continue
            path.unlink(missing_ok=True)
            total -= size
            evicted.append(path.name[: -len(SUFFIX)])
        return evicted


def _decode(raw: bytes, key: str) -> np.ndarray | None:
    """The payload as an array when magic, header, length and digest all check out."""
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 8:
        return None
    start = len(MAGIC) + 8
    length = int.from_bytes(raw[len(MAGIC) : start], "little")
    try:
        header = json.loads(raw[start : start + length])
        dtype, shape = np.dtype(header["dtype"]), tuple(int(n) for n in header["shape"])
        nbytes, digest = int(header["nbytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        return None
    payload = raw[start + length :]
    if header.get("key") != key or len(payload) != nbytes:
        return None
    if nbytes != dtype.itemsize * int(np.prod(shape)):
        return None
    if hashlib.sha256(payload).hexdigest() != digest:
        return None
    return np.frombuffer(payload, dtype=dtype).reshape(shape)
