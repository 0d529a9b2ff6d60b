"""`python -m search.predict MODEL IMAGE...`: top-k classes for image files and folders.

python -m search.predict models:/sweeplab-default@champion photo.jpg folder/
python -m search.predict runs:/RUN_ID/model digit.png --top-k 3 --tracking-uri sqlite:///runs/mlflow.db
python -m search.predict runs/exports/STUDY/model.keras images/          # or saved_model/, .tflite

MODEL is a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION), a runs:/ URI, a .keras or
.tflite file, or a SavedModel folder. Images are decoded and, for a model of fixed input size (a
trial's model), resized to it with PIL; exports and the registered champion resize inside, so they
get the images as they are. Every model rescales raw pixels itself. One line per image: the path,
then the top k classes with their probabilities. This module is the command line (arguments, the
MLflow store, fetching a URI); finding, decoding and ranking is experiments/serving/predict.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.errors import UserInputError  # noqa: E402

URI_SCHEMES = ("models:/", "runs:/")
DEFAULT_STORE = "runs/mlflow.db"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m search.predict",
        description="Print the top-k classes with probabilities for each image.",
    )
    parser.add_argument("model", help="models:/NAME@ALIAS, runs:/RUN_ID/model, or a model path")
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--top-k", type=int, default=3, help="classes to print per image (3)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for models:/ and runs:/ URIs (default: $MLFLOW_TRACKING_URI, else "
        f"sqlite:///{DEFAULT_STORE} under the current folder)",
    )
    return parser.parse_args(argv)


def tracking_uri(explicit: str | None) -> str:
    """The store to resolve model URIs against; a missing SQLite file is an error, not created."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}"
    path = None
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        if not path.is_file():
            raise UserInputError(
                f"there is no MLflow store at {path} (tracking URI {uri!r}); pass the store of "
                "your sweeps with --tracking-uri sqlite:///OUTPUT_DIR/mlflow.db, or run a sweep "
                "first."
            )
        uri = f"sqlite:///{path}"
    from search.config.stores import check_server, check_sqlite_store

    folder = path.parent if path else Path.cwd()
    check_sqlite_store("--tracking-uri", uri, folder, must_exist=True, write=False)
    check_server("--tracking-uri", uri)
    return uri


def predict(argv: list[str] | None = None) -> list[tuple[Path, list[tuple[str, float]]]]:
    """Load the model and images, predict, print; returns [(image, [(class, probability)])]."""
    args = parse_args(argv)
    if args.top_k < 1:
        raise UserInputError(f"--top-k={args.top_k} must be 1 or more.")
    from experiments.serving.predict import collect_images

    files = collect_images(args.images)  # bad paths fail before the model is loaded
    is_uri = args.model.startswith(URI_SCHEMES)
    store = tracking_uri(args.tracking_uri) if is_uri else None  # checked before TF loads

    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    from experiments.serving.predict import format_line, top_k
    from experiments.serving.predictors import load_predictor

    with tempfile.TemporaryDirectory() as tmp:
        if store is not None:
            from tracking.champion import fetch_model

            local = fetch_model(args.model, store, Path(tmp))
        else:
            local = Path(args.model)
        results = top_k(load_predictor(local), files, args.top_k)
    for path, ranked in results:
        print(format_line(path, ranked), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    from search.cli.exit_codes import exit_codes

    with exit_codes():
        predict(argv)


if __name__ == "__main__":
    main()
