"""Decoding image files with PIL: the one place that says what an image file is and how it reads.

Training folders (experiments/data/folders.py, directory.py) and prediction
(experiments/serving/predict.py) use the same extension list, the same opening (big JPEGs decoded
at a reduced scale with `draft`) and the same conversion of every PIL mode to 1 or 3 channels.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from experiments.errors import UserInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RESIZE_POLICIES = ("stretch", "crop", "pad")
# Channels of a PIL mode as a model would see it before any conversion (palette images are
# expanded first); prediction refuses an image whose count differs from the model's.
MODE_CHANNELS = {"L": 1, "I": 1, "F": 1, "I;16": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "CMYK": 3}
MODE_CHANNELS |= {"RGBA": 4, "PA": 4}
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_CHUNK = 512  # images decoded per thread-pool round: bounds memory held by out-of-order results


def is_image_name(name: str) -> bool:
    """A file name with an image extension, not hidden (.DS_Store, ._photo.jpg)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


@dataclass
class Decoded:
    """Decoded images of one list of files; `ok[i]` is False for a file that could not be read."""

    ok: np.ndarray
    digests: list[str]
    bad: list[tuple[str, str]]  # (path, reason)


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`data.image_size` as (height, width): one number for square images, or [height, width]."""
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(v) for v in image_size)  # type: ignore[union-attr]  # not a number: a pair
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


def open_image(path: str | Path, size: tuple[int, int] | None = None) -> Image.Image:
    """The fully decoded image; a JPEG larger than `size` (height, width) is decoded smaller.

    Raises PIL's own errors (UnidentifiedImageError, OSError, ...) for files it cannot read.
    """
    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            img.draft(None, (size[1], size[0]))  # decode at 1/2..1/8 scale, never below size
        img.load()  # the full decode: truncated or corrupt data raises here
    return img  # leaving `with` closes only the file: the decoded pixels stay


def mode_channels(img: Image.Image) -> int:
    """How many channels the image has in its own mode (a palette counts as what it stands for)."""
    if img.mode == "P":
        return 4 if "transparency" in img.info else 3
    return MODE_CHANNELS.get(img.mode, len(img.getbands()))


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode to L (1 channel) or RGB (3); transparency is composited onto white."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size else 0.0
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def fit(img: Image.Image, hw: tuple[int, int], policy: str) -> Image.Image:
    """Resize to (height, width): stretch, crop (centre, keep aspect) or pad (black borders)."""
    h, w = hw
    if policy == "crop":
        return ImageOps.fit(img, (w, h), Image.Resampling.BILINEAR)
    if policy == "pad":
        return ImageOps.pad(img, (w, h), Image.Resampling.BILINEAR, color=0)
    return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.BILINEAR)


def decode_file(path: str, hw: tuple[int, int], channels: int, policy: str) -> np.ndarray:
    """One image file as uint8 (height, width, channels), resized by `policy`. Raises on bad files."""
    img = fit(to_channels(open_image(path, hw), channels), hw, policy)
    return np.asarray(img, dtype=np.uint8).reshape(*hw, channels)


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
