"""Config composition and command-line errors for config keys and groups."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from search.cli.overrides import normalize_overrides
from search.space.spec import parse_space


def test_default_config_composes_every_group(make_config) -> None:
    cfg = make_config()
    assert cfg.data.source == "digits"
    assert cfg.model.name == "cnn"
    assert cfg.optimizer.name == "adam"
    assert cfg.search.engine == "optuna"
    assert str(cfg.tracking.tracking_uri).startswith("sqlite:///")
    assert "learning_rate" in cfg.space.optimizer  # the model's default space: conf/space/cnn
    assert cfg.sweep_name == "default"


def test_sweep_overlay_and_overrides(make_config) -> None:
    cfg = make_config("+sweep=cnn", "search.n_trials=5", "optimizer=sgd", "model.kernel_size=5")
    assert cfg.sweep_name == "cnn"
    assert cfg.search.n_trials == 5
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9
    assert cfg.model.kernel_size == 5
    # The storage follows the output dir, wherever it is.
    assert OmegaConf.select(cfg, "search.storage").endswith("/runs/optuna.db")


def _assert_clean_failure(result, *must_mention: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for text in must_mention:
        assert text in result.stderr, result.stderr


def test_unknown_config_key_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("search.run", "optimizer.lernin_rate=0.1", f"output_dir={tmp_path}")
    _assert_clean_failure(result, "lernin_rate")


def test_unknown_config_group_option_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("search.run", "optimizer=adamax_typo", f"output_dir={tmp_path}")
    _assert_clean_failure(result, "adamax_typo", "adam")


def test_unknown_sweep_overlay_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("search.run", "+sweep=nosuchsweep", f"output_dir={tmp_path}")
    _assert_clean_failure(result, "nosuchsweep")


def test_bad_values_fail_before_any_run(tmp_path: Path) -> None:
    """Each bad value: exit 2, one paragraph naming it, and no MLflow store touched."""
    cases = {
        "search.n_trials=0": "search.n_trials=0",
        "search.n_trials=-3": "search.n_trials=-3",
        "train.objective=val_acc": "val_acc",
        "search.timeout=-1": "search.timeout=-1",
        "+space.model.filterz={type:int,low:1,high:2}": "model.filterz",
        "+space.model.kernel_size={type:uniform,low:1,high:5}": "uniform",
        "+space.model.batch_norm={type:categorical,choices:[]}": "choices",
    }
    for override, mention in cases.items():
        result = run_cli("search.run", override, *TINY, f"output_dir={tmp_path}")
        _assert_clean_failure(result, "sweeplab: error:", mention)
        assert result.stderr.count("\n") <= 2, result.stderr  # one paragraph
        assert not (tmp_path / "mlflow.db").exists()


def test_user_space_file_with_bad_bounds_fails_clearly(tmp_path: Path) -> None:
    """A user's own space file, found through Hydra's search path."""
    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "mine.yaml").write_text(
        "optimizer:\n  learning_rate: {type: float, low: 0.0, high: 0.1, log: true}\n"
    )
    result = run_cli(
        "search.run",
        f"hydra.searchpath=[file://{tmp_path}]",
        "space=mine",
        f"output_dir={tmp_path}/runs",
    )
    _assert_clean_failure(result, "optimizer.learning_rate", "log scale", "low > 0")
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_user_space_file_with_dotted_keys_says_how_to_nest_them(tmp_path: Path) -> None:
    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "old.yaml").write_text(
        "optimizer.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}\n"
    )
    result = run_cli(
        "search.run",
        f"hydra.searchpath=[file://{tmp_path}]",
        "space=old",
        f"output_dir={tmp_path}/runs",
    )
    _assert_clean_failure(
        result, "'optimizer.learning_rate' is written with dots", "optimizer: {learning_rate: {type"
    )
    assert result.returncode == 2 and not (tmp_path / "runs").exists()


def _compose_plain(*overrides: str):
    """The composed config without conftest's CNN-only TINY keys (the transfer model lacks them)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=normalize_overrides(list(overrides)))


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("cnn", "model.conv_blocks"),
        ("branched", "model.branches"),
        ("transfer", "model.fine_tune.head_epochs"),
    ],
)
def test_a_model_alone_brings_its_default_space(model: str, entry: str) -> None:
    """model=transfer used to fail with the CNN's space (model.conv_blocks is no transfer key)."""
    cfg = _compose_plain(f"model={model}")
    names = {p.name for p in parse_space(cfg.space, cfg)}
    assert {"optimizer.learning_rate", entry} <= names


def test_space_on_the_command_line_overrides_the_models_default() -> None:
    cfg = _compose_plain("model=transfer", "space=transfer_backbones")
    params = {p.name: p for p in parse_space(cfg.space, cfg)}
    assert "efficientnetb0" in params["model.backbone"].choices
    assert "model.fine_tune.unfreeze_fraction" in params
    # A sweep overlay picks the model, the model its space, the command line wins over both.
    cfg = _compose_plain("sweep=transfer", "space=transfer_backbones")
    assert "efficientnetb0" in cfg.space.model.backbone.choices
    assert cfg.model.name == "transfer"


def test_sweep_overlay_with_and_without_plus_is_the_same_config() -> None:
    plain, plus = _compose_plain("sweep=transfer"), _compose_plain("+sweep=transfer")
    assert OmegaConf.to_yaml(plain) == OmegaConf.to_yaml(plus)
    assert plain.sweep_name == "transfer" and plain.model.name == "transfer"
    assert plain.train.epochs == 10  # the overlay's values win over config.yaml's (after _self_)
    assert _compose_plain().sweep_name == "default"  # sweep: null selects nothing


@pytest.mark.parametrize("form", ["sweep=transfer", "+sweep=transfer"])
def test_sweep_overlay_forms_on_the_real_command_line(form: str, tmp_path: Path) -> None:
    result = run_cli("search.run", form, f"output_dir={tmp_path}", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    composed = OmegaConf.create(result.stdout)
    assert composed.sweep_name == "transfer" and composed.model.name == "transfer"
    assert composed.train.epochs == 10 and "fine_tune" in composed.space.model
