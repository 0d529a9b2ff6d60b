"""Load a backbone's weights file once before the sweep, so a bad file fails in seconds.

A truncated download, a file that is not HDF5, or the weights of another backbone (or of another
alpha) used to surface only inside each trial, every trial failing in turn. The file is opened
with h5py (cheap: any weights file, `imagenet`'s cached one included) and a file the user named
(`model.weights=PATH`) is loaded into the backbone built at its smallest size, which checks every
layer's name and shape as a trial would. Results are cached per file and settings, so a search
space with several choices checks each distinct pair once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError
from experiments.models.backbones import check_backbone, resolve_weights


def check_weights(model_cfg: DictConfig, size: int) -> None:
    """Raise `UserInputError` when the weights file the config resolves to cannot be loaded."""
    weights = resolve_weights(model_cfg, size)
    if weights is None:
        return
    path = Path(weights)
    stat = path.stat()
    _check_hdf5(str(path), stat.st_mtime_ns, stat.st_size, str(model_cfg.get("weights")))
    if model_cfg.get("weights") != "imagenet":
        backbone = check_backbone(model_cfg, size)
        alpha = model_cfg.get("alpha") if backbone.alphas else None
        _check_loads(str(path), stat.st_mtime_ns, backbone.name, alpha, backbone.min_size)


@cache
def _check_hdf5(path: str, mtime: int, size: int, setting: str) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = f.attrs.get("layer_names")
            if names is None and "layers" not in f and "model_weights" not in f:
                raise OSError("it holds no Keras layer weights")
    except OSError as err:
        raise UserInputError(
            f"model.weights={setting!r}: {path} is not a readable Keras weights file ({err}; "
            f"{size} bytes). A download may have been cut short: delete the file so it is "
            "fetched again, or give the path of a no-top .h5 weights file for this backbone."
        ) from err


@cache
def _check_loads(path: str, mtime: int, backbone: str, alpha: float | None, size: int) -> None:
    from experiments.models.transfer import build_backbone

    cfg = OmegaConf.create({"backbone": backbone, "alpha": alpha, "weights": path})
    try:
        build_backbone(cfg, size)
    except UserInputError as err:
        shown = f"{backbone}" + (f" with alpha={alpha}" if alpha is not None else "")
        detail = str(err.__cause__ or err).splitlines()[0][:300]
        raise UserInputError(
            f"model.weights={path!r} does not fit model.backbone={shown} ({detail}). "
            "Give the no-top weights file of that backbone (and alpha), or model.weights=imagenet."
        ) from err
    finally:
        import keras

        keras.backend.clear_session()
