"""The ImageNet backbones sweeplab knows, their valid settings and their weights files.

This module imports no Keras (except to download a missing file), so a sweep can check every
backbone, size, alpha and weights file a search space can reach before it loads data or trains.

Weights: `imagenet` resolves to the exact file Keras would download, looked up in
`$KERAS_HOME/models/` (Keras's own cache, `~/.keras/models/` by default; experiments/keras_home.py
resolves it at build time) and handed to the `keras.applications` constructor as a path. A file that is not cached is downloaded with `keras.utils.get_file` into that folder; when
that fails (offline) the error names the file and the folder to put it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.errors import UserInputError
from experiments.keras_home import download_dir, keras_home

# Config keys that decide whether a backbone can be built at all: the sweep checks every
# combination of their categorical choices in the search space before training.
TRANSFER_KEYS = ("model.backbone", "model.alpha", "model.weights", "model.input_size")
HEAD_POOLINGS = ("avg", "max")  # global average / max pooling
KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """One `keras.applications` backbone: constructor, input rules and ImageNet weights file."""

    name: str
    constructor: str  # attribute of keras.applications
    module: str  # keras.applications submodule whose preprocess_input the model reproduces
    min_size: int  # smallest square input Keras builds
    # "tf": preprocess_input maps [0, 255] to [-1, 1]; "none": the network rescales itself.
    preprocess: str
    alphas: tuple[float, ...] = ()  # width multipliers with ImageNet weights; () = no alpha
    native_sizes: tuple[int, ...] = ()  # sizes with their own weights file (others use 224's)
    file_pattern: str = ""  # no-top weights file name; {alpha_text}, {alpha}, {size} filled in
    url_folder: str = ""
    file_hash: str | None = None  # md5 Keras checks after a download

    def weights_file(self, alpha: float | None, size: int) -> str:
        """The exact no-top file name Keras loads for `weights="imagenet"` at this alpha/size."""
        rows = size if size in self.native_sizes else 224
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(float(alpha or 0), "")
        return self.file_pattern.format(alpha_text=alpha_text, alpha=float(alpha or 0), size=rows)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "mobilenet",
            "MobileNet",
            "mobilenet",
            32,
            "tf",
            alphas=(0.25, 0.5, 0.75, 1.0),
            native_sizes=(128, 160, 192, 224),
            file_pattern="mobilenet_{alpha_text}_{size}_tf_no_top.h5",
            url_folder=KERAS_APPS + "mobilenet/",
        ),
        Backbone(
            "mobilenet_v2",
            "MobileNetV2",
            "mobilenet_v2",
            32,
            "tf",
            alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
            native_sizes=(96, 128, 160, 192, 224),
            file_pattern="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5",
            url_folder=KERAS_APPS + "mobilenet_v2/",
        ),
        Backbone(
            "efficientnetb0",
            "EfficientNetB0",
            "efficientnet",
            32,
            "none",
            file_pattern="efficientnetb0_notop.h5",
            url_folder="https://storage.googleapis.com/keras-applications/",
            file_hash="50bc09e76180e00e4465e1a485ddc09d",
        ),
        Backbone(
            "resnet50v2",
            "ResNet50V2",
            "resnet_v2",
            32,
            "tf",
            file_pattern="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            url_folder=KERAS_APPS + "resnet/",
            file_hash="fac2f116257151a9d068a22e544a4917",
        ),
        Backbone(
            "inceptionv3",
            "InceptionV3",
            "inception_v3",
            75,
            "tf",
            file_pattern="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            url_folder=KERAS_APPS + "inception_v3/",
            file_hash="bcbd6486424b2319ff4ef7d526e38f63",
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    backbone = BACKBONES.get(str(name))
    if backbone is None:
        raise UserInputError(
            f"model.backbone={name!r} is not a backbone sweeplab knows; accepted: "
            f"{', '.join(BACKBONES)}."
        )
    return backbone


def input_size(model_cfg, data_image_size: int) -> int:
    """The square size the backbone sees: `model.input_size`, or the data's own size if null."""
    size = model_cfg.get("input_size")
    return int(data_image_size if size is None else size)


def check_backbone(model_cfg, size: int) -> Backbone:
    """Reject a backbone, size, alpha or weights value that no trial could build."""
    backbone = get_backbone(model_cfg.backbone)
    if isinstance(size, bool) or int(size) != size or size < backbone.min_size:
        raise UserInputError(
            f"model.input_size={size} is too small for model.backbone={backbone.name}: Keras "
            f"builds it from {backbone.min_size}x{backbone.min_size} pixels up. Set "
            f"model.input_size={max(backbone.min_size, 96)} (the data is resized inside the model)."
        )
    weights = model_cfg.get("weights")
    alpha = model_cfg.get("alpha")
    if backbone.alphas and not isinstance(alpha, int | float):
        raise UserInputError(
            f"model.alpha={alpha!r}: {backbone.name} needs a width multiplier alpha, e.g. "
            f"{backbone.alphas[0]}."
        )
    if weights == "imagenet" and backbone.alphas and float(alpha) not in backbone.alphas:
        raise UserInputError(
            f"model.alpha={alpha} has no ImageNet weights for {backbone.name}; accepted with "
            f"weights=imagenet: {', '.join(str(a) for a in backbone.alphas)} "
            "(or set model.weights=null to train from scratch)."
        )
    if weights not in (None, "imagenet") and not Path(str(weights)).expanduser().is_file():
        raise UserInputError(
            f"model.weights={weights!r} is not a file. Accepted: imagenet (Keras's cache in "
            f"{keras_home() / 'models'}), null (random initialization) or the path to a "
            f"no-top weights file for {backbone.name}."
        )
    return backbone


def resolve_weights(model_cfg, size: int, *, download: bool = True) -> str | None:
    """The weights argument for the Keras constructor: None, or a path to an existing file."""
    backbone = check_backbone(model_cfg, size)
    weights = model_cfg.get("weights")
    if weights is None:
        return None
    if weights != "imagenet":
        return str(Path(str(weights)).expanduser().resolve())
    file_name = backbone.weights_file(model_cfg.get("alpha"), size)
    folder = keras_home() / "models"
    if (folder / file_name).is_file():
        return str(folder / file_name)
    if download:
        from experiments.quiet import quiet_tensorflow

        quiet_tensorflow()  # the first Keras import of a sweep that checks before loading it
        import keras

        try:
            return keras.utils.get_file(
                file_name,
                backbone.url_folder + file_name,
                cache_subdir="models",
                cache_dir=download_dir(),
                file_hash=backbone.file_hash,
            )
        except Exception as err:  # urllib and Keras raise plain Exception on a failed fetch
            reason = f"{type(err).__name__}: {err}"
    else:
        reason = "not downloaded"
    raise UserInputError(
        f"model.backbone={backbone.name} with model.weights=imagenet needs the file {file_name} "
        f"in {folder}/ and it could not be downloaded ({reason.splitlines()[0][:200]}). Put "
        f"that file there (copy it from a machine with internet: Keras caches it in "
        f"~/.keras/models/), or point keras_home=DIR at a folder with models/{file_name}, or set "
        "model.weights=/path/to/file.h5 or model.weights=null."
    )


def check_transfer_config(cfg) -> None:
    """Up-front check of a composed config (the whole config: data.image_size is needed)."""
    size = input_size(cfg.model, int(cfg.data.image_size))
    resolve_weights(cfg.model, size)
    if str(cfg.model.pooling) not in HEAD_POOLINGS:
        raise UserInputError(
            f"model.pooling={cfg.model.pooling!r}; accepted: {', '.join(HEAD_POOLINGS)}."
        )
