"""The pieces behind the bad-input table, checked in-process: the link rule of data folders,
password masking in MLflow records, the read-only rule of stores, the value rules."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments.data.folders import scan_folder
from experiments.errors import UserInputError
from search.config.rules import check_values
from search.config.stores import check_stores
from search.space.spec import parse_space
from search.sweep import prepare
from tests.conftest import CONF_DIR, shared_data
from tracking.mlflow_tracker import SweepTracker
from tracking.secrets import mask

PASSWORD = "s3cretPw"


def images(target: Path, source: Path, count: int = 3) -> None:
    target.mkdir(parents=True)
    for image in sorted(source.iterdir())[:count]:
        shutil.copy(image, target / image.name)


def test_links_inside_the_folder_are_followed_the_others_skipped_and_recorded(tmp_path) -> None:
    cifar = shared_data("cifar10-test")
    root = tmp_path / "data"
    images(root / "airplane", cifar / "airplane")
    images(root / "bird", cifar / "bird")
    images(tmp_path / "outside", cifar / "cat")
    (root / "same_as_bird").symlink_to(root / "bird")  # inside, no loop: a class like any other
    (root / "loop").symlink_to(root)
    (root / "airplane" / "up").symlink_to(root / "airplane")  # a loop below a class folder
    (root / "bird" / "ext.jpg").symlink_to(tmp_path / "outside" / "0000.jpg")
    (root / "cat").symlink_to(tmp_path / "outside")
    (root / "gone").symlink_to(tmp_path / "nothing")
    with pytest.warns(UserWarning, match="Skipped 6 symbolic link"):
        scan = scan_folder(str(root))
    assert scan.class_names == ["airplane", "bird", "same_as_bird"]
    assert [len([f for f, label in scan.files["all"] if label == i]) for i in range(3)] == [3] * 3
    skipped = "\n".join(scan.skipped_links)
    for link, why in (
        ("loop", "a loop"),
        ("airplane/up", "a loop"),
        ("bird/ext.jpg", "outside the data folder"),
        ("same_as_bird/ext.jpg", "outside the data folder"),  # seen again through the link
        ("cat", "outside the data folder"),
        ("gone", "points at nothing"),
    ):
        assert f"{root / link} -> " in skipped and why in skipped


@pytest.mark.parametrize(
    "text, masked",
    [
        (
            f"postgresql+psycopg://bob:{PASSWORD}@db:5432/x",
            "postgresql+psycopg://bob:***@db:5432/x",
        ),
        (f"http://:{PASSWORD}@host/", "http://:***@host/"),
        (f"postgresql://bob:{PASSWORD}@x@db/x", "postgresql://bob:***@db/x"),
        (f"mysql://h/db?user=u&password={PASSWORD}&x=1", "mysql://h/db?user=u&password=***&x=1"),
        (f"host=db password={PASSWORD} dbname=x", "host=db password=*** dbname=x"),
        ("sqlite:////tmp/runs/optuna.db", "sqlite:////tmp/runs/optuna.db"),
        ("https://host:8080/path", "https://host:8080/path"),
        # the cluster storage error's usage example, once shown as USER[:***@HOST
        (
            "postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DATABASE",
            "postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DATABASE",
        ),
    ],
)
def test_mask_hides_passwords_only(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_tags_params_and_artifacts_are_stored_masked(tmp_path) -> None:
    url = f"postgresql+psycopg://bob:{PASSWORD}@db/sweeps"
    tracking = OmegaConf.create(
        {
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "artifact_location": str(tmp_path / "art"),
            "experiment_name": "masking",
            "log_models": False,
        }
    )
    tracker = SweepTracker(tracking)
    artifacts = {"config.yaml": f"storage: {url}\n"}
    with (
        tracker.sweep_run("s", {"storage": url}, artifacts) as parent,
        tracker.trial_run("t", {"search.storage": url}, {"store": url}) as trial,
    ):
        trial.log_text(f"storage: {url}\n", "trial_config.yaml")
        trial.set_tags({"sweeplab.note": url})
    client = MlflowClient(tracking.tracking_uri)
    texts = []
    for run_id, files in ((parent, ["config.yaml"]), (trial.run_id, ["trial_config.yaml"])):
        run = client.get_run(run_id)
        texts += [*run.data.tags.values(), *run.data.params.values()]
        for name in files:
            texts.append(Path(client.download_artifacts(run_id, name, str(tmp_path))).read_text())
    stored = "\n".join(texts)
    assert PASSWORD not in stored
    assert stored.count("bob:***@db/sweeps") >= 6


def test_a_read_only_store_is_refused_before_anything_is_written(make_config, monkeypatch) -> None:
    cfg = prepare(make_config())
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    db = out / "optuna.db"
    sqlite3.connect(db).close()  # an empty SQLite file
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != db and real_access(p, mode))
    with pytest.raises(UserInputError, match=rf"search.storage=.*is read-only.*{db}"):
        check_stores(cfg)


def composed(*overrides: str):
    """The real config without the conftest's CNN-only shrinking (transfer has no filters)."""
    from search.cli.overrides import (
        normalize_overrides,  # +sweep=NAME, as the command line takes it
    )

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=normalize_overrides(overrides))


@pytest.mark.parametrize(
    "overrides, named",
    [
        (("+sweep=transfer", "model.fine_tune.unfreeze_fraction=1.5"), "unfreeze_fraction=1.5"),
        (("+space.model.dense_units={type:categorical,choices:[16,1.5]}",), "dense_units=1.5"),
        (("+space.model.filter_growth={type:float,low:0,high:2}",), "filter_growth=0"),
        (  # replaced, not merged into the existing float entry
            ("~space.model.dropout", "+space.model.dropout={type:categorical,choices:[0.1,null]}"),
            "dropout=None",
        ),
    ],
)
def test_value_rules(overrides: tuple[str, ...], named: str) -> None:
    cfg = composed(*overrides)
    with pytest.raises(UserInputError, match=named):
        check_values(cfg, parse_space(cfg.space, cfg))


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("+sweep=transfer",),
        ("+sweep=branched",),
        ("+sweep=transfer", "space=transfer_backbones"),
    ],
)
def test_the_shipped_configs_pass_the_value_rules(overrides: tuple[str, ...]) -> None:
    cfg = composed(*overrides)
    check_values(cfg, parse_space(cfg.space, cfg))


def test_a_read_only_feature_cache_folder_is_refused_naming_the_key(
    make_config, tmp_path, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = prepare(composed("+sweep=transfer", f"output_dir={tmp_path / 'runs'}"))
    OmegaConf.update(cfg, "model.feature_cache.dir", str(cache))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != cache and real_access(p, mode))
    with pytest.raises(UserInputError, match=rf"model.feature_cache.dir=.*is read-only.*{cache}"):
        check_stores(cfg)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (("+space.model.conv_blocks.log=no",), "log='no'"),
        (("+space.model.conv_blocks.when={model.filters:[1.5]}",), "never samples 1.5"),
        (
            ("~space.model.dropout", "+space.model.dropout={type:float,low:0,high:0.5,step:x}"),
            "step='x'",
        ),
        (("final.select=val_accuracy",), "final.select='val_accuracy' must be a mapping"),
        (("search.baseline=yes",), "search.baseline='yes' must be true or false"),
        (("search.workers=-1",), "search.workers=-1 must be a whole number of 0 or more"),
        (("search.heartbeat_interval=0",), "search.heartbeat_interval=0 must be a whole number"),
        (("search=keras_tuner", "search.bayesian.alpha=0"), "search.bayesian.alpha=0 must be"),
        (("+sweep=transfer", "model.feature_cache.enabled=on"), "enabled='on' must be true"),
        (("+sweep=transfer", "model.fine_tune.head_epochs=-1"), "head_epochs=-1 must be"),
        (("final.distil_temperature=0",), "final.distil_temperature=0 must be a number above 0"),
        (("final.distil_alpha=1.5",), "final.distil_alpha=1.5 must be a number from 0 to 1"),
        (("final.export_target=tflite_int4",), "final.export_target='tflite_int4' must be one"),
        (("final.export_target=tflite",), "final.export_target=tflite is not among the exported"),
    ],
)
def test_config_rules_and_structural_checks(overrides: tuple[str, ...], named: str) -> None:
    from search.checks import check_config

    with pytest.raises(UserInputError, match=re.escape(named)):
        check_config(composed(*overrides), models=False)


def test_every_rule_names_a_key_of_a_shipped_config() -> None:
    """A row whose key no config has would never check anything (a typo in the table)."""
    from search.config.rules import RULES

    configs = [
        composed(*o)
        for o in [
            (),
            ("+sweep=transfer",),
            ("+sweep=branched",),
            ("search=keras_tuner", "optimizer=sgd"),
        ]
    ]
    missing = [
        r.key for r in RULES if all(OmegaConf.select(c, r.key, default="?") == "?" for c in configs)
    ]
    assert missing == []


def test_the_config_check_loads_no_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from search.checks import check_config; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_a_port_that_is_not_postgresql_fails_in_seconds(tmp_path) -> None:
    """Issue 28 (10): an HTTP server where PostgreSQL was meant made the first store call hang
    for 140 s; the probe refuses it in seconds, naming the key."""
    import socket
    import subprocess
    import sys
    import time

    from experiments.errors import UserInputError
    from search.config.stores import check_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(UserInputError, match="did not answer as a PostgreSQL server"):
            check_server("search.storage", f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db")
        assert time.monotonic() - started < 15
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_report_on_an_unreachable_postgresql_is_one_paragraph(tmp_path) -> None:
    """Issue 28 (16): two tracebacks and exit 1 before; one paragraph, exit 2, password masked."""
    from tests.conftest import run_cli

    done = run_cli(
        "search.report", "--tracking-uri", "postgresql+psycopg://u:secret@127.0.0.1:1/mlflow",
        "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
    assert done.stderr.startswith("sweeplab: error: --tracking-uri=")
