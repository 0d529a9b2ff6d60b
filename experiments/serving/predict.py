"""Top-k classes for image files: find the images, decode them, predict with a loaded model.

The serving side of `python -m search.predict` (which only parses arguments and fetches a
models:/ or runs:/ URI from MLflow). Images are decoded by experiments.data.images, the decoder
training uses, so a photo reaches a model the same way in both; what prediction adds is strict:
an image whose channel count differs from the model's is refused rather than converted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.data.images import (
    IMAGE_EXTENSIONS,
    fit,
    is_image_name,
    mode_channels,
    open_image,
    to_channels,
)
from experiments.errors import UserInputError
from experiments.serving.predictors import Predictor

Ranked = list[tuple[str, float]]  # (class name, probability), most probable first


def collect_images(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, plus every image under named folders (recursive, sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
            if not found:
                raise UserInputError(
                    f"folder {str(path)!r} holds no image files; accepted extensions: "
                    f"{', '.join(IMAGE_EXTENSIONS)} (searched recursively)."
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
    height, width = size
    fixed = (height, width) if height and width else None
    from PIL import Image

    try:
        image = open_image(path, fixed)
    # UnidentifiedImageError is an OSError; DecompressionBombError (an image of more pixels than
    # PIL decodes safely, 20000x20000 say) is neither, and the training loader refuses it too.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(
            f"{str(path)!r} is not a readable image ({type(err).__name__}: {err}); pass files "
            f"with one of the extensions {', '.join(IMAGE_EXTENSIONS)}."
        ) from err
    found = mode_channels(image)
    if found != channels:
        raise UserInputError(
            f"{str(path)!r} has {found} channel(s) (mode {image.mode}) but the model takes "
            f"{channels} ({_describe(channels)}); convert the image to {_describe(channels)} "
            "first."
        )
    image = to_channels(image, channels)
    if height or width:
        image = fit(image, (height or image.height, width or image.width), "stretch")
    array = np.asarray(image, dtype="float32")
    return array[..., None] if array.ndim == 2 else array


def predict_files(predictor: Predictor, files: list[Path]) -> np.ndarray:
    """Class probabilities per file, in order; all files are decoded before any is predicted.

    A model with a fixed input size gets the images resized to it (PIL, bilinear); one that takes
    any size (exports and the registered champion resize inside) gets them as they are, batched
    by size.
    """
    height, width, channels = predictor.input_shape
    images = [load_image(f, (height, width), int(channels)) for f in files]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    rows: dict[int, np.ndarray] = {}
    for indices in by_shape.values():
        batch = predictor.predict(np.stack([images[i] for i in indices]))
        rows.update(zip(indices, batch, strict=True))
    return np.stack([rows[i] for i in range(len(images))])


def top_k(predictor: Predictor, files: list[Path], k: int) -> list[tuple[Path, Ranked]]:
    """The `k` (1 or more) most probable classes of each file, named by class_names.json."""
    probabilities = predict_files(predictor, files)
    labels = predictor.labels(probabilities.shape[1])
    if len(labels) != probabilities.shape[1]:
        raise UserInputError(
            f"the model's class_names.json names {len(labels)} classes but the model has "
            f"{probabilities.shape[1]} outputs; the file belongs to another model."
        )
    k = min(k, len(labels))
    results = []
    for path, row in zip(files, probabilities, strict=True):
        order = row.argsort()[::-1][:k]
        results.append((path, [(labels[i], float(row[i])) for i in order]))
    return results


def format_line(path: Path, ranked: Ranked) -> str:
    """One output line: the path, then each class with its probability."""
    return f"{path}  " + "  ".join(f"{name} {p:.4f}" for name, p in ranked)


def _describe(channels: int) -> str:
    return {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
