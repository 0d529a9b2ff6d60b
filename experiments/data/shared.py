"""Hand a loaded split to worker processes without decoding or copying it again.

The sweep process loads the data once. `share` writes each split's pixels once to a `.npy` file
(none is written for a split that is already a memory-mapped cache file) and returns a small,
picklable `SharedData`; each worker's `SharedData.open()` maps those files read-only, so N
workers hold one copy of the pixels in the page cache instead of N decoded copies. A split that
was an in-memory array in the sweep comes back as a plain array view of the mapping, so it takes
the same input pipeline (and gives the same training) as in the sweep process.

The final stage's trainings reuse those files (`SharedData.derived`): its retraining on train +
validation has the worker append the validation pixels to the training split's when it opens
them, and a distilled student's soft targets travel in the skeleton, so the sweep process never
writes or holds a grown copy of the pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.data.splits import SPLITS, ImageData, Split, train_plus_val


@dataclass(frozen=True)
class SharedData:
    """An `ImageData` without its pixels, plus where each split's pixels are mapped from."""

    skeleton: ImageData  # every split's x is None here
    files: dict[str, str]  # split -> .npy file of its pixels (absent: no pixels, decoded per epoch)
    mapped: frozenset[str]  # splits that were memory-mapped in the sweep too (keep np.memmap)
    grown: bool = False  # train + validation: the val pixels appended to train's when opened
    variant: str = ""  # what else sets it apart from the loaded data (soft targets), in `key`

    @property
    def key(self) -> str:
        return self.skeleton.fingerprint() + ("+val" if self.grown else "") + self.variant

    def derived(self, data: ImageData, grown: bool) -> SharedData:
        """These pixel files for `data`, the loaded data they were written from with other
        labels or soft targets (`Split.soft`), trained on train + validation when `grown`."""
        bare = {name: dataclasses.replace(data.split(name), x=None) for name in SPLITS}
        skeleton = dataclasses.replace(self.skeleton, **bare)  # type: ignore[arg-type]
        soft = [bare[name].soft for name in SPLITS if bare[name].soft is not None]
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(s).tobytes() for s in soft))
        variant = f"+soft{digest.hexdigest()[:12]}" if soft else ""
        return dataclasses.replace(
            self,
            skeleton=train_plus_val(skeleton) if grown else skeleton,
            grown=grown,
            variant=variant,
        )

    def open(self) -> ImageData:
        """The data as the sweep process held it, with the pixels mapped read-only."""
        splits = {}
        for name in SPLITS:
            part = self.skeleton.split(name)
            x = None
            if name in self.files:
                x = np.load(self.files[name], mmap_mode="r")
                if name not in self.mapped:
                    x = np.asarray(x)  # a plain view of the mapping: the in-memory pipeline
            splits[name] = dataclasses.replace(part, x=x)
        if self.grown and "train" in self.files:  # the skeleton's train split is grown already
            grown, val = splits["train"], splits["val"]
            pixels = np.concatenate([grown.x, np.load(self.files["val"], mmap_mode="r")])
            # Its parts as a trial opened them (same pixels, labels and files: the feature
            # cache's keys of train and val), so the retraining reads their activations.
            n = len(grown.y) - len(val.y)
            soft = None if grown.soft is None else grown.soft[:n]
            train = Split(grown.x, grown.y[:n], grown.files[:n], soft)
            splits["train"] = dataclasses.replace(grown, x=pixels, parts=(train, val))
        # **splits: the train, val and test fields, a Split each (the checker matches every field)
        return dataclasses.replace(self.skeleton, **splits)  # type: ignore[arg-type]


def share(data: ImageData, folder: Path) -> SharedData:
    """Write `data`'s in-memory pixels once under `folder/<fingerprint>/`; see the module doc."""
    digest = data.fingerprint()
    where = folder / digest
    where.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    mapped: set[str] = set()
    bare: dict[str, Split] = {}
    for name in SPLITS:
        part = data.split(name)
        bare[name] = dataclasses.replace(part, x=None)
        if part.x is None:
            continue
        if isinstance(part.x, np.memmap) and part.x.filename:
            files[name] = str(part.x.filename)
            mapped.add(name)
            continue
        path = where / f"{name}.npy"
        if not path.exists():
            tmp = where / f".{name}.{os.getpid()}.npy"
            np.save(tmp, np.ascontiguousarray(part.x))
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        files[name] = str(path)
    # **bare: the train, val and test fields, a Split each (the checker matches every field)
    skeleton = dataclasses.replace(data, digest=digest, shape=data.image_shape, **bare)  # type: ignore[arg-type]
    return SharedData(skeleton, files, frozenset(mapped))
