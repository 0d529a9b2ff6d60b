"""Read image files into raw-pixel arrays the size a model takes (PIL), for prediction.

Kept deliberately small: find image files in paths and folders, decode, check the channel count
against the model's, resize. A shared folder-of-images loader for training data can replace it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.errors import UserInputError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Channels of PIL modes as a model sees them: other colour encodings count as RGB (converted);
# palette images are expanded first.
CHANNELS = {"L": 1, "I": 1, "F": 1, "I;16": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "CMYK": 3, "RGBA": 4}


def collect_images(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, plus every image under named folders (recursive, sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
            )
            if not found:
                raise UserInputError(
                    f"folder {str(path)!r} holds no image files; accepted extensions: "
                    f"{', '.join(EXTENSIONS)} (searched recursively)."
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserInputError(
                f"{str(path)!r} is neither an image file nor a folder; pass image files "
                "(JPEG, PNG, ...) or folders of them."
            )
    return files


def load_image(path: Path, size: tuple[int | None, int | None], channels: int) -> np.ndarray:
    """One image as float32 (height, width, channels) in [0, 255], resized to `size`.

    `size` is (height, width); None leaves that side as it is. Raises UserInputError for a file
    that is not a decodable image or whose channel count differs from `channels`.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(
            f"{str(path)!r} is not a readable image ({type(err).__name__}: {err}); pass JPEG, "
            "PNG, BMP, GIF, WebP or TIFF files."
        ) from err
    if image.mode == "P":  # palette: expand to the colours it stands for
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    found = CHANNELS.get(image.mode, len(image.getbands()))
    if found != channels:
        raise UserInputError(
            f"{str(path)!r} has {found} channel(s) (mode {image.mode}) but the model takes "
            f"{channels} ({_describe(channels)}); convert the image to {_describe(channels)} "
            "first."
        )
    if image.mode in ("YCbCr", "CMYK"):
        image = image.convert("RGB")
    elif image.mode in ("I", "F", "I;16"):
        image = image.convert("L")
    height, width = size
    if (height and height != image.height) or (width and width != image.width):
        image = image.resize((width or image.width, height or image.height), Image.BILINEAR)
    array = np.asarray(image, dtype="float32")
    return array[..., None] if array.ndim == 2 else array


def load_images(
    files: list[Path], size: tuple[int | None, int | None], channels: int
) -> np.ndarray:
    """A batch (N, height, width, channels) of the files, all decoded before any is predicted."""
    images = [load_image(f, size, channels) for f in files]
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
        raise UserInputError(
            f"the images have different sizes {sorted(shapes)} and the model has no fixed input "
            "size to resize them to; pass images of one size."
        )
    return np.stack(images)


def _describe(channels: int) -> str:
    return {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
