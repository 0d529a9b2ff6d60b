"""A decoded image set that will not fit in memory is decoded to the file cache, said in one line
(search/execution/data_fit.py); one that fits, or a sweep already on the file cache, is left be.

The machine's available memory is made small through the module's `available_mb`; the folder is
real photos (sign-language digits, ten per class at 8 px) and the sweep trains for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.errors import UserInputError
from search.execution import data_fit
from search.sweep import sweep
from tests.conftest import compose_config, shared_data

SMALL = ["search.n_trials=1", "final.enabled=false", "tracking.log_models=false"]


def folder_config(tmp_path: Path, *overrides: str):
    photos = shared_data("sign-language-digits")
    return compose_config(
        [
            "data=directory",
            f"data.path={photos}",
            "data.max_per_class=10",
            f"data.cache_dir={tmp_path / 'cache'}",
            *SMALL,
            *overrides,
        ],
        tmp_path / "runs",
    )


def memmap_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the training pipelines built on a memory-mapped split (the file cache's)."""
    from experiments.data import pipeline

    built: list[int] = []
    real = pipeline._memmap_dataset

    def counted(split, *args, **kwargs):
        built.append(len(split))
        return real(split, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_memmap_dataset", counted)
    return built


def test_a_set_that_will_not_fit_trains_from_the_file_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(data_fit, "available_mb", lambda: 500.0)
    built = memmap_pipelines(monkeypatch)
    summary = sweep(folder_config(tmp_path))
    out = capsys.readouterr().out
    # 100 photos (10 of each of 10 classes) x 8x8x3 bytes, twice (the sweep trains: workers=0).
    assert (
        "data.cache=memory will not fit: 100 images x 8x8x3 uint8 = 0.0 MB, held 2 times (the "
        "sweep process and 1 training process(es)), plus 400 MB for each process: 800 MB, and "
        "500 MB is available. Using data.cache=file instead" in out
    )
    caches = list((tmp_path / "cache").iterdir())
    assert len(caches) == 1 and {"meta.json", "train.npy", "val.npy", "test.npy"} <= {
        p.name for p in caches[0].iterdir()
    }
    assert summary.finished_trials == 1 and summary.best_value is not None
    assert built, "no training pipeline read the memory-mapped file cache"


def test_a_set_that_fits_stays_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(data_fit, "available_mb", lambda: 801.0)
    cfg = folder_config(tmp_path).data
    assert data_fit.fitted_data(cfg, 42, 1) is cfg
    assert "will not fit" not in capsys.readouterr().out
    # Three workers train at once: the sweep's copy and three more, and four processes' needs.
    fitted = data_fit.fitted_data(cfg, 42, 3)
    assert fitted.cache == "file" and cfg.cache == "memory"
    assert "held 4 times (the sweep process and 3 training process(es))" in capsys.readouterr().out


def test_the_file_cache_already_chosen_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(data_fit, "available_mb", lambda: 1.0)
    for cache in ("file", "none"):
        cfg = folder_config(tmp_path, f"data.cache={cache}").data
        assert data_fit.fitted_data(cfg, 42, 1) is cfg
    assert capsys.readouterr().out == ""


def test_no_room_in_memory_nor_for_the_file_cache_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_fit, "available_mb", lambda: 1.0)
    (tmp_path / "a_file").write_text("not a folder")
    cfg = folder_config(tmp_path, f"data.cache_dir={tmp_path / 'a_file' / 'cache'}").data
    with pytest.raises(UserInputError, match=r"data.cache_dir=.*a_file/cache' is under the file"):
        data_fit.fitted_data(cfg, 42, 1)


def test_a_cgroup_limit_bounds_the_available_memory(tmp_path: Path, monkeypatch) -> None:
    """In a container MemAvailable is the host's: the cgroup's limit less its usage (file pages it
    can drop counted free) is what this process can have (cgroup v2 files, faked here)."""
    from search.execution import memory

    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    (tmp_path / "memory.max").write_text(f"{1024 * 2**20}\n")
    (tmp_path / "memory.current").write_text(f"{900 * 2**20}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {100 * 2**20}\n")
    host = memory._meminfo_mb()
    assert host is not None and host > 224
    assert memory.available_mb() == 224.0
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the machine's own figure
    assert memory.available_mb() == pytest.approx(host, rel=0.2)
