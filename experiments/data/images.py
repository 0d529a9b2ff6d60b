"""Reading a folder of class subfolders: scan, validate, decode and resize with PIL.

PIL rather than `tf.io.decode_image` because it reads every mode users bring (L, RGB, RGBA, P,
CMYK, 16-bit), takes the first frame of a GIF, decodes big JPEGs at a reduced scale (`draft`),
and fails with a Python exception that we can turn into a list of bad files instead of a
TensorFlow stack trace in the middle of training. Decoding runs in a thread pool (PIL releases the
GIL while it decodes), so it is parallel.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from experiments.errors import UserInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
RESIZE_POLICIES = ("stretch", "crop", "pad")
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_CHUNK = 512  # images decoded per thread-pool round: bounds memory held by out-of-order results


@dataclass
class FolderScan:
    """What a data folder holds: class names in label order and the image files found.

    `files[split]` lists (path, label) per fixed split (`train`, `val`, `test` subfolders), or
    under the single key `all` when the folder is not split.
    """

    root: Path
    class_names: list[str]
    files: dict[str, list[tuple[str, int]]]
    ignored: list[str] = field(default_factory=list)  # non-image files, left out


@dataclass
class Decoded:
    """Decoded images of one list of files; `ok[i]` is False for a file that could not be read."""

    ok: np.ndarray
    digests: list[str]
    bad: list[tuple[str, str]]  # (path, reason)


def check_folder(path: str | None) -> Path:
    """The data folder as an absolute path, or a UserInputError saying what is wrong with it."""
    if path is None or str(path).strip() == "":
        raise UserInputError(
            "data=directory needs a folder: set data.path=FOLDER, a folder with one subfolder of "
            "images per class (optionally inside train/, val/ and test/ subfolders)."
        )
    folder = Path(str(path)).expanduser().resolve()
    if not folder.exists():
        raise UserInputError(
            f"data.path={path!r} does not exist (resolved to {folder}); give a folder with one "
            "subfolder of images per class."
        )
    if not folder.is_dir():
        raise UserInputError(
            f"data.path={path!r} is a file, not a folder; give the folder that holds one subfolder "
            "of images per class (e.g. photos/cat/*.jpg, photos/dog/*.jpg)."
        )
    return folder


def scan_folder(path: str | None) -> FolderScan:
    """Find the classes and image files under `path`; non-image files are ignored and counted."""
    root = check_folder(path)
    subdirs = _subdirs(root)
    split_dirs = {
        SPLIT_FOLDERS[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_FOLDERS
    }
    if split_dirs and len(split_dirs) == len(subdirs):
        if "train" not in split_dirs:
            raise UserInputError(
                f"data.path={str(root)!r} has split folders {sorted(d.name for d in subdirs)} but "
                "no train/ folder; a fixed split needs train/ (val/ and test/ are optional)."
            )
        per_split = {split: _class_files(d) for split, d in split_dirs.items()}
        class_names = sorted({name for found in per_split.values() for name in found[0]})
        ignored = [f for found in per_split.values() for f in found[1]]
        _check_classes(root, class_names, {n: [] for n in class_names}, per_split)
        files = {
            split: [(p, class_names.index(name)) for name, paths in found[0].items() for p in paths]
            for split, found in per_split.items()
        }
        return FolderScan(root, class_names, files, ignored)
    by_class, ignored = _class_files(root)
    class_names = sorted(by_class)
    _check_classes(root, class_names, by_class, None)
    files = {"all": [(p, i) for i, name in enumerate(class_names) for p in by_class[name]]}
    return FolderScan(root, class_names, files, ignored)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Image files per class subfolder (searched recursively), and the non-image files seen."""
    by_class: dict[str, list[str]] = {}
    ignored: list[str] = []
    for class_dir in _subdirs(folder):
        images: list[str] = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                    images.append(full)
                else:
                    ignored.append(full)
        by_class[class_dir.name] = images
    return by_class, ignored


def _check_classes(
    root: Path,
    class_names: list[str],
    by_class: dict[str, list[str]],
    per_split: dict[str, tuple[dict[str, list[str]], list[str]]] | None,
) -> None:
    where = f"data.path={str(root)!r}"
    if not class_names:
        loose = [
            p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        hint = (
            f" It holds {len(loose)} image file(s) directly: move them into one subfolder per class."
            if loose
            else ""
        )
        raise UserInputError(
            f"{where} has no class subfolders.{hint} Expected one subfolder of images per class, "
            "e.g. FOLDER/cat/*.jpg and FOLDER/dog/*.jpg."
        )
    if len(class_names) < 2:
        raise UserInputError(
            f"{where} has only one class folder ({class_names[0]!r}); a classifier needs at least "
            "two classes, one subfolder each."
        )
    if per_split is None:
        empty = [name for name in class_names if not by_class[name]]
    else:
        totals = {
            n: sum(len(found[0].get(n, [])) for found in per_split.values()) for n in class_names
        }
        empty = [name for name in class_names if totals[name] == 0]
        if not empty:
            missing = [n for n in class_names if not per_split["train"][0].get(n)]
            if missing:
                raise UserInputError(
                    f"{where}: class folder(s) {missing} have no images under train/; every class "
                    "must have training images."
                )
    if empty:
        raise UserInputError(
            f"{where}: class folder(s) {empty} contain no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "add images or remove those folders."
        )


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`data.image_size` as (height, width): one number for square images, or [height, width]."""
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(v) for v in image_size)  # type: ignore[union-attr]
        except (TypeError, ValueError) as err:
            raise UserInputError(
                f"data.image_size={image_size!r} must be a number of pixels (square) or "
                "[height, width]."
            ) from err
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise UserInputError(
            f"data.image_size={image_size!r} is out of range; use 8 to 4096 pixels per side."
        )
    return h, w


def decode_file(path: str, hw: tuple[int, int], channels: int, policy: str) -> np.ndarray:
    """One image file as uint8 (height, width, channels), resized by `policy`. Raises on bad files."""
    h, w = hw
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(None, (w, h))  # decode big JPEGs at 1/2..1/8 scale, never below (w, h)
        img.load()  # the full decode: truncated or corrupt data raises here
        img = _to_channels(img, channels)
    if policy == "crop":
        img = ImageOps.fit(img, (w, h), Image.Resampling.BILINEAR)
    elif policy == "pad":
        img = ImageOps.pad(img, (w, h), Image.Resampling.BILINEAR, color=0)
    elif img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).reshape(h, w, channels)


def _to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode to L (1 channel) or RGB (3); transparency is composited onto white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size else 0.0
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_all(
    paths: Sequence[str],
    hw: tuple[int, int],
    channels: int,
    policy: str,
    out: np.ndarray | None,
    workers: int | None = None,
) -> Decoded:
    """Decode `paths` in parallel; good images are packed, in order, at the front of `out`.

    Every image is decoded once here, bad files included, so a corrupt file is found before
    training starts rather than in the middle of an epoch.
    """
    workers = workers or min(16, (os.cpu_count() or 1) + 2)
    ok = np.zeros(len(paths), dtype=bool)
    digests: list[str] = [""] * len(paths)
    bad: list[tuple[str, str]] = []
    kept = 0

    def one(path: str) -> tuple[np.ndarray | None, str]:
        try:
            return decode_file(path, hw, channels, policy), ""
        except Exception as err:  # any failure of any decoder marks the file bad, with why
            return None, f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start, results in _chunks(pool, one, paths):
            for offset, (pixels, reason) in enumerate(results):
                i = start + offset
                if pixels is None:
                    bad.append((paths[i], reason))
                    continue
                ok[i] = True
                digests[i] = hashlib.sha1(pixels.tobytes()).hexdigest()
                if out is not None:
                    out[kept] = pixels
                kept += 1
    return Decoded(ok, digests, bad)


def _chunks(pool: ThreadPoolExecutor, fn, paths: Sequence[str]) -> Iterator[tuple[int, list]]:
    for start in range(0, len(paths), _CHUNK):
        yield start, list(pool.map(fn, paths[start : start + _CHUNK]))
